"""TraceWriter's flush and fsync policies: when frames reach the file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from edgescope_tracing import Event, StreamDecoder, TraceReader, TraceWriter
from edgescope_tracing._frames import HEADER_SIZE


def on_disk(path: Path) -> list[str]:
    """The event messages a reader finds in the file as it is now (open or not)."""
    dec = StreamDecoder()
    recs = dec.feed(path.read_bytes()) + dec.close()
    return [r.message for r in recs if isinstance(r, Event)]


def test_size_based_flush(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path, flush_bytes=200, flush_interval=1e9) as w:
        assert path.stat().st_size == HEADER_SIZE  # the header is written at once
        w.append(Event("log", "a" * 50))
        assert on_disk(path) == []
        w.append(Event("log", "b" * 200))  # the open frame passes 200 bytes: written
        assert on_disk(path) == ["a" * 50, "b" * 200]
        w.append(Event("log", "c"))
        assert on_disk(path) == ["a" * 50, "b" * 200]
        w.flush()
        assert on_disk(path) == ["a" * 50, "b" * 200, "c"]


def test_time_based_flush(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path, flush_interval=0.3) as w:
        w.append(Event("log", "first"))
        w.poll()
        assert on_disk(path) == []
        threading.Event().wait(0.35)
        w.poll()  # the frame has waited flush_interval: written
        assert on_disk(path) == ["first"]
        w.append(Event("log", "second"))
        threading.Event().wait(0.35)
        w.append(Event("log", "third"))  # append checks the interval too
        assert on_disk(path) == ["first", "second", "third"]


@pytest.mark.parametrize("policy", ["never", "close", "flush"])
def test_fsync_policies_write_the_same_file(tmp_path: Path, policy: str) -> None:
    path = tmp_path / f"{policy}.est"
    with TraceWriter(path, fsync=policy, flush_bytes=1) as w:  # type: ignore[arg-type]
        for i in range(5):
            w.append(Event("log", str(i), t_us=i))
    with TraceReader(path) as r:
        assert [e.message for e in r if isinstance(e, Event)] == ["0", "1", "2", "3", "4"]
        assert r.indexed


def test_misuse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be 'never', 'close' or 'flush'"):
        TraceWriter(tmp_path / "x.est", fsync="always")  # type: ignore[arg-type]
    path = tmp_path / "t.est"
    w = TraceWriter(path)
    w.append(Event("log", "kept"))
    w.close()
    w.close()  # closing twice is harmless
    assert w.closed
    with pytest.raises(ValueError, match="append to a closed TraceWriter"):
        w.append(Event("log", "late"))
    with pytest.raises(FileExistsError):
        TraceWriter(path, exclusive=True)
    assert on_disk(path) == ["kept"]  # the exclusive open did not truncate it
