"""Who may read, and what bad input does: it closes that one connection, nothing else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from edgescope_collector.auth import Authenticator, TokenError, load_token
from edgescope_collector.config import ConfigError, add_arguments, config_from_args
from edgescope_collector.server import ServerLimits
from edgescope_tracing.protocol import (
    CONTROL_SYNC,
    AsyncClient,
    AuthError,
    ProtocolError,
    RefusedError,
    auth_response,
    control_frame,
)
from test_server_support import RUN, append_all, served

TOKEN = b"0123456789abcdef-secret"
FAST = ServerLimits(handshake_timeout=0.3)


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(1 << 20), timeout) + await asyncio.wait_for(
        reader.read(), timeout
    )


async def still_serves(port: int, token: bytes | None = None) -> None:
    client = await AsyncClient.connect("127.0.0.1", port, since=0, token=token)
    async for item in client:
        assert getattr(item, "seq", None) == 0
        break
    await client.close()


def frame(payload: bytes, sync: bytes = CONTROL_SYNC) -> bytes:
    return struct.pack("<2sII", sync, len(payload), zlib.crc32(payload)) + payload


@pytest.mark.asyncio
async def test_right_token_reads_wrong_token_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(tmp_path, token=TOKEN) as (store, server):
        append_all(store, [RUN])
        await still_serves(server.port, TOKEN)
        with (
            caplog.at_level(logging.WARNING, "edgescope.collector.server"),
            pytest.raises(AuthError, match="refused the token"),
        ):
            await AsyncClient.connect("127.0.0.1", server.port, token=b"x" * 20)
        assert any("authentication failed" in r.getMessage() for r in caplog.records)
        with pytest.raises(AuthError, match="requires a token"):
            await AsyncClient.connect("127.0.0.1", server.port)
        await still_serves(server.port, TOKEN)


@pytest.mark.asyncio
async def test_the_token_never_crosses_the_wire(tmp_path: Path) -> None:
    seen: list[bytes] = []
    nonce = os.urandom(32)

    async def fake_collector(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(
            control_frame(
                {"t": "hello", "v": 1, "host": "x", "auth": "hmac-sha256", "nonce": nonce}
            )
        )
        seen.append(await r.read(4096))
        w.close()

    srv = await asyncio.start_server(fake_collector, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    with pytest.raises(ProtocolError):  # the fake ends the handshake early
        await AsyncClient.connect("127.0.0.1", port, token=TOKEN, timeout=2)
    srv.close()
    await srv.wait_closed()
    assert TOKEN not in seen[0]
    start = msgpack.unpackb(seen[0][10:])
    assert start["auth"] == auth_response(TOKEN, nonce)
    assert Authenticator(TOKEN).verify(nonce, start["auth"])
    assert not Authenticator(TOKEN).verify(os.urandom(32), start["auth"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(os.urandom(300), id="random"),
        pytest.param(struct.pack("<2sII", CONTROL_SYNC, 0x7FFF_FFFF, 0), id="huge-length"),
        pytest.param(struct.pack("<2sII", b"\xe5\x5c", 10, 0) + b"x" * 10, id="trace-frame"),
        pytest.param(frame(b"\xc1\xc1\xc1"), id="bad-msgpack"),
        pytest.param(frame(b"\x93\x01\x02\x03"), id="not-a-map"),
        pytest.param(
            control_frame({"t": "start", "v": 1, "since": 0})[:-1] + b"\x01", id="bad-crc"
        ),
        pytest.param(control_frame({"t": "subscribe", "path": "/etc/passwd"}), id="other-request"),
        pytest.param(control_frame({"t": "start", "v": 1, "since": "/etc/passwd"}), id="bad-since"),
        pytest.param(control_frame({"t": "start", "v": 1, "since": -5}), id="negative-since"),
    ],
)
async def test_bad_input_closes_only_that_connection(tmp_path: Path, payload: bytes) -> None:
    async with served(tmp_path, limits=FAST) as (store, server):
        append_all(store, [RUN])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        data = await read_to_eof(reader)
        # The hello, maybe an error message, and the close: never a trace.
        assert b"\x89EDGSCP" not in data
        writer.close()
        await writer.wait_closed()
        await still_serves(server.port)


@pytest.mark.asyncio
async def test_slow_loris_and_half_open_connections_time_out(tmp_path: Path) -> None:
    async with served(tmp_path, limits=FAST) as (store, server):
        append_all(store, [RUN])
        conns = []
        start = control_frame({"t": "start", "v": 1, "since": 0, "auth": None})
        for part in (b"", start[:3], start[:-1]):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(part)
            conns.append((reader, writer))
        # A client that vanishes without a word.
        _, gone = await asyncio.open_connection("127.0.0.1", server.port)
        gone.transport.abort()
        await still_serves(server.port)
        for reader, writer in conns:
            data = await read_to_eof(reader, timeout=3)
            assert b"\x89EDGSCP" not in data
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.05)
        assert server.clients == 0


@pytest.mark.asyncio
async def test_bytes_after_the_handshake_close_the_connection(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        client.writer.write(control_frame({"t": "start", "v": 1, "since": 0}))
        items = []
        with pytest.raises(ProtocolError, match="closed the connection"):
            async for item in client:
                items.append(item)
        await client.close()
        await still_serves(server.port)


@pytest.mark.asyncio
async def test_other_protocol_versions_are_refused_with_a_sentence(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await reader.readexactly(10)
        writer.write(control_frame({"t": "start", "v": 99, "since": None, "auth": None}))
        data = await read_to_eof(reader)
        assert b"protocol version 99 is not supported" in data
        writer.close()
        await writer.wait_closed()
    assert issubclass(RefusedError, Exception)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without --token-file"):
        config_from_args(_args("--listen", "0.0.0.0:7313"))
    cfg = config_from_args(_args("--listen", "0.0.0.0:7313", "--token-file", "t"))
    assert cfg.mdns, "on the network it advertises by default"
    assert not config_from_args(_args()).mdns
    assert config_from_args(_args()).host == "127.0.0.1"


def test_token_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_bytes(TOKEN + b"\n")
    good.chmod(0o600)
    assert load_token(good) == (TOKEN, None)
    good.chmod(0o644)
    assert "readable by other users" in (load_token(good)[1] or "")
    short = tmp_path / "short"
    short.write_text("abc")
    for path, text in (
        (tmp_path / "missing", "does not exist"),
        (short, "use at least 16"),
        (tmp_path, "not a regular file"),
    ):
        with pytest.raises(TokenError, match=text):
            load_token(path)
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(TokenError, match="is empty"):
        load_token(empty)


# --- one token file, read the same by the collector, tail, ls and the TUI ------------------

_TOKEN_FILES = [
    (TOKEN + b"\n", True),
    (b"  " + TOKEN + b"  \n\n", True),
    (TOKEN + b"\n# made with openssl rand -hex 32\n", True),
    (b"# the stream token\n" + TOKEN + b"\n", True),
    (TOKEN + b"\nsecond-line-of-something\n", False),
    (TOKEN + b"\n" + TOKEN + b"\n", False),
    (b"short\n", False),
    (b"\xff\xfe" + TOKEN + b"\n", False),
    (b"# only a comment\n", False),
]


def _outcomes(path: Path, port: int, capsys: pytest.CaptureFixture[str]) -> list[object]:
    """What each reader makes of ``path``: the token it uses, or the error it names."""
    from edgescope_tui.discovery import TargetError, read_token_file

    from edgescope.cli import main

    out: list[object] = []
    try:
        out.append(load_token(path)[0])
    except TokenError as e:
        out.append(("refused", str(e)))
    try:
        out.append(read_token_file(path, "--token-file").encode())
    except TargetError as e:
        out.append(("refused", str(e).removeprefix("--token-file: ")))
    argv = ["tail", f"127.0.0.1:{port}", "--since", "0", "--count", "1", "--token-file", str(path)]
    code = main(argv)
    err = capsys.readouterr().err
    out.append(TOKEN if code == 0 else ("refused", err.strip().removeprefix("edgescope: ")))
    argv = ["ls", "--no-mdns", "--json", "--timeout", "5", "--address", f"127.0.0.1:{port}"]
    code = main([*argv, "--token-file", str(path)])
    captured = capsys.readouterr()
    if code == 0:
        import json

        (device,) = json.loads(captured.out)
        assert device["state"] == "online", device
        out.append(TOKEN)
    else:
        err = captured.err.strip().removeprefix("edgescope: ").removeprefix("--token-file: ")
        out.append(("refused", err))
    return out


@pytest.mark.parametrize(("content", "usable"), _TOKEN_FILES)
def test_a_token_file_means_the_same_to_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, usable: bool
) -> None:
    from test_server_support import ThreadedServer

    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(0o600)
    s = ThreadedServer(tmp_path / "data", token=TOKEN)
    try:
        s.append([RUN])
        outcomes = _outcomes(path, s.port, capsys)
    finally:
        s.close()
    assert outcomes[0] == (TOKEN if usable else outcomes[0])
    assert all(o == outcomes[0] for o in outcomes), outcomes
    if not usable:
        kind, message = outcomes[0]  # type: ignore[misc]
        assert kind == "refused" and "\n" not in message and str(path) in message


def test_a_linked_token_file_is_checked_where_it_points(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    target = tmp_path / "secret"
    target.write_bytes(TOKEN + b"\n")
    target.chmod(0o600)
    link = tmp_path / "token"
    link.symlink_to(target)
    assert load_token(link) == (TOKEN, None)
    target.chmod(0o640)
    warning = load_token(link)[1] or ""
    assert f"{link} (a link to {target}) is readable by other users" in warning
    target.chmod(0o620)
    with pytest.raises(TokenError, match=r"a link to .* can be changed by other users"):
        load_token(link)
    target.chmod(0o600)
    os.chown(target, 65534, 65534)
    with pytest.raises(TokenError, match=r"belongs to uid 65534, not to this user \(uid 0\)"):
        load_token(link)


def test_a_fifo_in_place_of_the_token_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    with pytest.raises(TokenError, match=r"is a FIFO \(named pipe\), not a regular file"):
        load_token(fifo)
