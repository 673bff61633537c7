"""The wire protocol's pieces: targets, control frames, the auth answer, gap detection."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from pathlib import Path

import pytest
from edgescope_tracing import Event, Keyframe, StreamEncoder
from edgescope_tracing.protocol import (
    CONTROL_SYNC,
    MAX_CONTROL,
    Client,
    ConnectError,
    Gap,
    ProtocolError,
    _Fold,
    auth_response,
    control_frame,
    parse_control,
    parse_head,
    parse_port,
    parse_target,
)
from test_server_support import RUN, ThreadedServer, metric


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("pi.local", ("pi.local", 7313)),
        ("pi.local:9000", ("pi.local", 9000)),
        ("10.0.0.7:1", ("10.0.0.7", 1)),
        ("[fe80::1]:7400", ("fe80::1", 7400)),
        ("[::1]", ("::1", 7313)),
        ("::1", ("::1", 7313)),
    ],
)
def test_parse_target(text: str, want: tuple[str, int]) -> None:
    assert parse_target(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        (":7313", "has no host"),
        ("pi:0", "port '0' is not a number from 1 to 65535"),
        ("pi:http", "port 'http' is not a number from 1 to 65535"),
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':PORT'"),
    ],
)
def test_parse_target_refuses(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_target(text)


@pytest.mark.parametrize("port", ["0", "65536", "http", "", " 80", "-1", 0, 70000, True, None])
def test_parse_port_refuses(port: object) -> None:
    with pytest.raises(ValueError, match=r"^port .* is not a number from 1 to 65535$"):
        parse_port(port)  # type: ignore[arg-type]


def test_parse_port_takes_text_and_numbers() -> None:
    assert parse_port("1") == 1 and parse_port("65535") == 65535 and parse_port(7313) == 7313


def test_control_frames_round_trip_and_are_checked() -> None:
    data = control_frame({"t": "gap", "first": 3, "last": 9, "reason": "x"})
    assert data[:2] == CONTROL_SYNC
    is_control, length, crc = parse_head(data[:10])
    assert is_control and length == len(data) - 10
    assert parse_control(data[10:], crc) == {"t": "gap", "first": 3, "last": 9, "reason": "x"}
    with pytest.raises(ProtocolError, match="bad checksum"):
        parse_control(data[10:], crc ^ 1)
    with pytest.raises(ProtocolError, match="over the limit"):
        parse_head(CONTROL_SYNC + (MAX_CONTROL + 1).to_bytes(4, "little") + b"\0" * 4, MAX_CONTROL)
    with pytest.raises(ProtocolError, match="does not speak"):
        parse_head(b"HTTP/1.1 2")


def test_auth_answer_is_hmac_sha256_over_the_nonce() -> None:
    nonce = bytes(range(32))
    want = hmac.new(b"tok", b"edgescope-auth-v1\x00" + nonce, hashlib.sha256).digest()
    assert auth_response(b"tok", nonce) == want
    assert auth_response(b"tok", nonce) != auth_response(b"tok2", nonce)


def test_fold_filters_since_and_turns_seq_jumps_into_gaps() -> None:
    enc = StreamEncoder(header=False)
    for i in range(6):
        enc.add(Event("log", f"e{i}", t_us=i))
    frames = enc.take()
    fold = _Fold(since=2, label="t")
    items = fold.trace(frames)
    assert [x.seq for x in items if not isinstance(x, Gap)] == [2, 3, 4, 5, 6]
    # Records 7..9 lost on the collector's disk: the next frame starts at 10.
    enc.encoder.next_seq = 10
    enc.add(Event("log", "after", t_us=9))
    items = fold.trace(enc.take())
    assert items[0] == Gap(7, 9, "damaged or undecodable on the collector's disk")
    assert isinstance(items[1], Keyframe | Event) and items[1].seq == 10
    # An explicit gap from the server moves the expectation on, clamped to what was seen.
    assert fold.control({"t": "gap", "first": 5, "last": 20, "reason": "r"}) == [Gap(11, 20, "r")]
    assert fold.control({"t": "end", "message": "bye"}) == [] and fold.ended == "bye"
    with pytest.raises(ProtocolError):
        fold.control({"t": "gap", "first": "x", "last": 1})


def test_blocking_client_reads_history_then_live(tmp_path: Path) -> None:
    srv = ThreadedServer(tmp_path)
    try:
        srv.append([RUN] + [metric(i) for i in range(10)])
        got: list[int] = []
        with Client.connect("127.0.0.1", srv.port, since=5, idle_timeout=10) as client:
            assert client.welcome.next_seq == 12 and client.welcome.host == "testhost"
            adder = threading.Timer(0.2, srv.append, args=([metric(10), metric(11)],))
            adder.start()
            for item in client:
                assert not isinstance(item, Gap)
                got.append(item.seq)
                if item.seq == 13:
                    break
            adder.join()
        assert got == list(range(5, 14))
    finally:
        srv.close()


def test_blocking_client_connect_errors_are_one_sentence() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectError, match="connection refused") as e:
        Client.connect("127.0.0.1", port)
    assert "\n" not in str(e.value)
    with pytest.raises(ConnectError, match="host name not found"):
        Client.connect("no-such-host.invalid", 7313, timeout=5)
