"""Issue #11 item 2: a full disk used to kill the collector (ENOSPC escaped ``store.poll``).

On a real, small tmpfs: when the disk fills, the store drops its oldest closed segments; when
that is not enough, it keeps the stream in memory (bounded) and serves it live, says so in an
event, marks what never reached the disk as a gap, and goes back to the disk when space
returns. A file size limit (EFBIG, RLIMIT_FSIZE) makes segments end before it. The collector
process stays up through it all and stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_collector.store import Segment, SegmentStore
from edgescope_tracing import (
    Keyframe,
    Metrics,
    RunEnd,
    RunStart,
    StreamDecoder,
    TraceReader,
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (the test needs root to mount one)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE test runs without)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def batch(run: int, step: int, n: int = 200) -> Metrics:
    steps = tuple(range(step, step + n))
    return Metrics(
        run, "loss", steps, tuple(10**15 + s for s in steps), tuple(1 / (1 + s) for s in steps)
    )


def test_a_full_disk_is_survived_served_from_memory_and_marked(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        now = [0.0]
        store = SegmentStore(
            disk / "data",
            max_disk=8 << 20,  # more than the disk: the disk fills first
            segment_bytes=64 * 1024,
            memory_bytes=1 << 20,
            retry_interval=1.0,
            clock=lambda: now[0],
        )
        store.open()
        chunks: list[tuple[Segment, int, bytes]] = []
        store.listeners.append(lambda s, o, d: chunks.append((s, o, d)))
        store.append(RunStart(0, "ab" * 16, "job", "pi", 1))
        step = 0
        while len(store.segments) < 5:  # a few closed segments of its own
            store.append(batch(0, step))
            step += 200
        fill(disk / "filler")  # then someone else takes the rest of the disk
        while store.disk_full is None:
            store.append(batch(0, step))
            step += 200
            now[0] += 0.1
            store.poll()
            if store.dropped_segments:
                fill(disk / "filler")  # and it takes what the store freed, too
            assert step < 1_000_000, "the disk never filled"
        assert store.dropped_segments >= 1, "it dropped its own oldest segments first"
        full_at = step
        for _ in range(50):  # minutes of training while the disk is full
            store.append(batch(0, step))
            step += 200
            now[0] += 0.1
            store.poll()
        notices = store.take_notices()
        assert [e.severity for e in notices] == [2]
        assert "kept in memory" in notices[0].message and "no space left" in notices[0].message
        (disk / "filler").unlink()  # space returns
        now[0] += 2
        store.poll()
        assert store.disk_full is None
        back = store.take_notices()
        assert len(back) == 1 and "again" in back[0].message
        for _ in range(5):
            store.append(batch(0, step))
            step += 200
        store.append(RunEnd(0, exit_code=0))
        store.close()
        stored: list[int] = []
        keyframes: list[int] = []
        for path in sorted((disk / "data").glob("seg-*.est")):
            with TraceReader(path) as r:
                for rec in r:
                    (keyframes if isinstance(rec, Keyframe) else stored).append(rec.seq)
                assert r.damage == [] and r.indexed, path

    # Every chunk reached the listeners (live clients), in order, whole: nothing is lost live.
    seen: list[int] = []
    for seg in {id(s): s for s, _, _ in chunks}.values():
        dec = StreamDecoder(header=False, offset=12)
        for s, _, d in chunks:
            if s is seg:
                seen += [r.seq for r in dec.feed(d)]
        assert dec.damage == []
    assert sorted(seen) == list(range(seen[0], seen[-1] + 1)) and len(set(seen)) == len(seen)
    assert full_at > 0

    # On disk: whole segments; with what was never stored (the one flush that met the full
    # disk: what came after was kept in memory and written when space returned), the records
    # from the oldest retained segment on are all there.
    assert all(seg.memory is None for seg in store.segments)
    unstored = {q for a, b in store.unstored for q in range(a, b + 1)}
    assert 0 < len(unstored) < 100, store.unstored
    first = store.segments[0].first_seq
    assert set(stored) | set(keyframes) | unstored == set(range(first, seen[-1] + 1))
    assert not set(stored) & unstored
