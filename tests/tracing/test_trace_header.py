"""The header guards what is read: foreign data, newer formats, empty and short files.

Each is refused with one sentence that names the file, and ``edgescope inspect`` exits 2
without a traceback. A newer *minor* version is read: its extra fields and record kinds are
skipped.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import msgpack
import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    MAGIC,
    Event,
    GpuSample,
    NotATraceError,
    StreamDecoder,
    StreamEncoder,
    TraceError,
    TraceReader,
    TraceWriter,
    UnsupportedVersionError,
)
from edgescope_tracing._codec import Encoder

from edgescope.cli import main


def header(major: int, minor: int) -> bytes:
    return struct.pack("<8sHH", MAGIC, major, minor)


def framed(payload: bytes) -> bytes:
    return struct.pack("<2sII", b"\xe5\x5c", len(payload), zlib.crc32(payload)) + payload


def run_inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


CASES = {
    "foreign": (b"PK\x03\x04" + bytes(40), NotATraceError, "is not an edgescope trace"),
    "text": (b"step,loss\n0,2.3\n", NotATraceError, "is not an edgescope trace"),
    "empty": (b"", NotATraceError, "is empty, not an edgescope trace"),
    "short": (MAGIC[:5], NotATraceError, "is too short to be an edgescope trace (5 bytes)"),
    "header only part": (MAGIC + b"\x01", NotATraceError, "is too short"),
    "newer major": (
        header(FORMAT_MAJOR + 1, 0) + bytes(30),
        UnsupportedVersionError,
        f"was written in trace format {FORMAT_MAJOR + 1}.0; this edgescope reads format "
        f"{FORMAT_MAJOR}.x and older: upgrade edgescope to read it",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_one_sentence(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, error, words = CASES[case]
    path = tmp_path / "trace.est"
    path.write_bytes(data)
    with pytest.raises(error) as info:
        TraceReader(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert words in message
    assert "\n" not in message

    code, out, err = run_inspect(capsys, str(path))
    assert code == 2
    assert out == ""
    assert err == f"edgescope: {message}\n"
    code, out, err = run_inspect(capsys, str(path), "--json")
    assert (code, out) == (2, "")


def test_stream_decoder_refuses_foreign_bytes() -> None:
    dec = StreamDecoder(name="the collector at pi:7787")
    assert dec.feed(MAGIC[:3]) == []  # could still be a trace: wait for more
    with pytest.raises(NotATraceError, match="the collector at pi:7787 is not an edgescope"):
        dec.feed(b"HTTP/1.1 400 Bad Request\r\n")
    dec = StreamDecoder()
    dec.feed(MAGIC[:4])
    with pytest.raises(NotATraceError, match="too short"):
        dec.close()
    with pytest.raises(UnsupportedVersionError):
        StreamDecoder().feed(header(9, 1))


def test_directory_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotATraceError, match="is a directory, not an edgescope trace"):
        TraceReader(tmp_path)
    code, _, err = run_inspect(capsys, str(tmp_path))
    assert code == 2
    assert err == f"edgescope: {tmp_path} is a directory, not an edgescope trace\n"
    code, _, err = run_inspect(capsys, str(tmp_path / "nope.est"))
    assert code == 2
    assert err == f"edgescope: {tmp_path / 'nope.est'}: no such file\n"


def test_inspect_subprocess_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00state")
    proc = subprocess.run(
        [sys.executable, "-m", "edgescope", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"edgescope: {path} is not an edgescope trace")


def test_newer_minor_version_is_read_and_its_extras_skipped(tmp_path: Path) -> None:
    """A 1.9 writer appended fields to known kinds and added kinds 40 and 41."""
    enc = Encoder()
    # The gpu record holds its 1.1 field (an empty one is left out, and a 1.9 writer would
    # write it, empty, before its own fields).
    gpu = GpuSample(0, "H200", temp_c=41.0, power_mw=600_000, processes=((7, 1 << 30),), t_us=6)
    wires = enc.encode(Event("mark", "first", t_us=5)) + enc.encode(gpu)
    wires = [[*w, "a field from 1.9", {"x": [1, 2]}] for w in wires]
    wires.insert(1, [40, 99, 5, "a kind from 1.9", [1, 2, 3]])
    wires.append([41])
    data = header(FORMAT_MAJOR, 9) + framed(msgpack.packb(wires, use_bin_type=True))
    path = tmp_path / "newer.est"
    path.write_bytes(data)
    with TraceReader(path) as r:
        assert r.version == (FORMAT_MAJOR, 9)
        got = list(r)
        assert r.damage == []
        assert r.unknown_kinds == 2
    assert got == [
        Event("mark", "first", t_us=5, seq=0),
        GpuSample(
            0, "H200", temp_c=41.0, power_mw=600_000, processes=((7, 1 << 30),), t_us=6, seq=1
        ),
    ]


def test_older_fields_missing_is_damage_not_a_crash(tmp_path: Path) -> None:
    """A record with fewer fields than its kind has is reported; its frame-mates are kept."""
    enc = Encoder()
    wires = enc.encode(Event("mark", "kept", t_us=5))
    wires.append([10, 9, 9, "short"])
    path = tmp_path / "t.est"
    path.write_bytes(header(FORMAT_MAJOR, 0) + framed(msgpack.packb(wires, use_bin_type=True)))
    with TraceReader(path) as r:
        got = list(r)
        damage = r.damage
    assert [e.message for e in got if isinstance(e, Event)] == ["kept"]
    assert len(damage) == 1
    assert damage[0].offset == 12
    assert "1 undecodable record(s)" in damage[0].reason


def test_a_trace_with_no_records_is_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "ok.est"
    TraceWriter(path).close()
    with TraceReader(path) as r:
        assert list(r) == []
        assert r.damage == []
        assert r.indexed
        assert r.index() == []
    assert issubclass(NotATraceError, TraceError)
    assert issubclass(UnsupportedVersionError, TraceError)


def test_the_spec_example_is_what_the_encoder_makes() -> None:
    """docs/trace-format.md shows one event's bytes; they must stay true."""
    doc = (Path(__file__).parents[2] / "docs" / "trace-format.md").read_text()
    block = doc.split("### An example", 1)[1].split("```", 2)[1]
    data = bytearray()
    for line in block.splitlines():
        for token in line.split():
            if len(token) != 2 or any(c not in "0123456789abcdef" for c in token):
                break
            data.append(int(token, 16))
    enc = StreamEncoder()
    enc.add(Event("mark", "hi", t_us=1795800876015431))
    assert bytes(data) == enc.take()


def test_a_pipe_is_refused_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    r, w = os.pipe()
    try:
        os.write(w, MAGIC)
        code, out, err = run_inspect(capsys, f"/dev/fd/{r}")
    finally:
        os.close(r)
        os.close(w)
    assert (code, out) == (2, "")
    assert err == (
        f"edgescope: /dev/fd/{r} is not a regular file (a pipe or a device); save the trace "
        "to a file to read it here\n"
    )


def test_a_fifo_with_no_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Issue #11 item 12: opening a FIFO blocked until someone wrote to it (a hang)."""
    fifo = tmp_path / "seg.est"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def open_it() -> None:
        try:
            TraceReader(fifo)
        except NotATraceError as e:
            result.append(e)

    t = threading.Thread(target=open_it, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening a FIFO blocked"
    assert len(result) == 1 and "not a regular file" in str(result[0])
