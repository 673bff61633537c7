"""TraceWriter's flush and fsync policies: when frames reach the file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from edgescope_tracing import Event, StreamDecoder, TraceReader, TraceWriter
from edgescope_tracing._frames import HEADER_SIZE
from plantedfiles import finishes, planted


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


def _checkpointed(path: Path) -> dict[str, object]:
    """A trace at ``path`` left open-ended as the archiver leaves it, and its checkpoint."""
    w = TraceWriter(path)
    w.append(Event("log", "before"))
    w.flush()
    cp = w.checkpoint()
    w.close(index=False)
    return cp


def test_resume_goes_on_where_the_checkpoint_left(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    cp = _checkpointed(path)
    with TraceWriter.resume(path, cp) as w:
        w.append(Event("log", "after"))
    assert on_disk(path) == ["before", "after"]


def test_resume_refuses_a_link_a_fifo_and_a_directory(tmp_path: Path) -> None:
    # resume cuts the file to the checkpoint: through a link that cut a 100,000-byte victim to
    # the checkpoint's 121 bytes, and a FIFO's open waited for a reader that never came
    from edgescope_tracing.files import NotRegularFileError

    cp = _checkpointed(tmp_path / "t.est")
    victim, link, fifo = planted(tmp_path, b"v" * 100_000)
    for path, says in [
        (link, "a symbolic link"),
        (fifo, "a FIFO"),
        (tmp_path, "a directory"),
    ]:
        got: list[BaseException | TraceWriter] = []

        def attempt(path: Path = path, got: list[BaseException | TraceWriter] = got) -> None:
            try:
                got.append(TraceWriter.resume(path, cp))
            except BaseException as e:
                got.append(e)

        finishes(attempt, fifo, f"resume({path.name})")
        assert isinstance(got[0], NotRegularFileError), (path, got)
        assert says in str(got[0]) and "not a regular file" in str(got[0])
    assert victim.read_bytes() == b"v" * 100_000
