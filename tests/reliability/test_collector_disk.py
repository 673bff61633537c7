"""Issue #11 item 2: a full disk used to kill the collector (ENOSPC escaped ``store.poll``).

On a real, small tmpfs: when the disk fills, the store drops its oldest closed segments; when
that is not enough, it keeps the stream in memory (bounded) and serves it live, says so in an
event, marks what never reached the disk as a gap, and goes back to the disk when space
returns. A file size limit (EFBIG, RLIMIT_FSIZE) makes segments end before it. The collector
process stays up through it all and stops cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_collector.store import Segment, SegmentStore
from edgescope_tracing import (
    Event,
    Keyframe,
    Metrics,
    RunEnd,
    RunStart,
    StreamDecoder,
    TraceReader,
)
from edgescope_tracing.protocol import Client, Gap
from test_daemon import Collector, produce


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
            fill(disk / "filler")  # it stays full: what the store gives back (a cut frame) goes
            store.append(batch(0, step))
            step += 200
            now[0] += 0.1
            store.poll()
        notices = store.take_notices()
        assert [e.severity for e in notices] == [2], [e.message for e in notices]
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


def test_the_collector_stays_up_through_a_full_disk_and_serves_it_live(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        c = Collector(tmp_path, "--max-disk", "8M", "--segment-size", "64K")
        c.data = disk / "data"
        c.args[c.args.index("--data-dir") + 1] = str(c.data)
        c.start()
        warned = [line for line in c.stderr().splitlines() if "--max-disk is 8.0 MiB" in line]
        assert len(warned) == 1 and "has room for" in warned[0]
        got: list[object] = []
        client = Client.connect("127.0.0.1", c.port, since=0, idle_timeout=30)
        reader = threading.Thread(target=lambda: got.extend(client), daemon=True)
        reader.start()
        try:
            produce(c.ingest, 40, run_id="before")
            deadline = time.monotonic() + 60
            n = 0
            while "cannot write to" not in c.stderr():
                fill(disk / "filler")
                produce(c.ingest, 40, run_id=f"filling-{n}")
                n += 1
                time.sleep(0.3)
                assert time.monotonic() < deadline, c.stderr()
            produce(c.ingest, 40, run_id="while-full")
            time.sleep(0.5)
            # A client that joins now catches up from the disk, then from memory, then live.
            late: list[object] = []
            joined = Client.connect("127.0.0.1", c.port, since=0, idle_timeout=30)
            late_reader = threading.Thread(target=lambda: late.extend(joined), daemon=True)
            late_reader.start()
            time.sleep(0.5)
            (disk / "filler").unlink()  # space returns
            while "again" not in c.stderr():
                assert time.monotonic() < deadline, c.stderr()
                time.sleep(0.1)
            produce(c.ingest, 40, run_id="after")
            time.sleep(0.5)
            assert c.proc is not None and c.proc.poll() is None, "the collector died"
        finally:
            assert c.stop() == 0
            reader.join(20)
            client.close()
            late_reader.join(20)
            joined.close()
        log = c.stderr()
        assert "Traceback" not in log, log
        assert not c.ingest.exists(), "the ingest socket is removed on exit"
    # The live client got everything, in order, without a gap: it was served from memory.
    assert not [g for g in got if isinstance(g, Gap)]
    seqs = [r.seq for r in got if not isinstance(r, Gap)]  # type: ignore[attr-defined]
    assert seqs == list(range(len(seqs)))
    ends = {r.run for r in got if isinstance(r, RunEnd)}
    starts = {r.run_id: r.run for r in got if isinstance(r, RunStart)}
    assert {"before", "while-full", "after"} <= set(starts)
    assert {starts["before"], starts["while-full"], starts["after"]} <= ends
    events = [r.message for r in got if isinstance(r, Event) and r.kind == "collector"]
    assert [m for m in events if "cannot write to" in m and "kept in memory" in m]
    assert [m for m in events if "again" in m]
    values = sum(len(r.values) for r in got if isinstance(r, Metrics) and r.run >= 0)
    assert values == (3 + n) * 40 * 50
    # The late client: every record from where it started, or a gap that says which are not.
    covered: set[int] = set()
    for item in late:
        if isinstance(item, Gap):
            covered |= set(range(item.first, item.last + 1))
        else:
            assert item.seq not in covered  # type: ignore[attr-defined]
            covered.add(item.seq)  # type: ignore[attr-defined]
    assert covered == set(range(min(covered), seqs[-1] + 1))
    late_runs = {r.run_id: r.run for r in late if isinstance(r, RunStart)}
    assert "while-full" in late_runs and "after" in late_runs
    assert (
        sum(
            len(r.values)
            for r in late
            if isinstance(r, Metrics) and r.run == late_runs["while-full"]
        )
        == 40 * 50
    )


EFBIG_SCRIPT = """
import json, resource, sys
from pathlib import Path
from edgescope_collector.store import SegmentStore
from edgescope_tracing import Metrics, RunStart, TraceReader

limit = 200 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
store = SegmentStore(Path(sys.argv[1]), max_disk=8 << 20, segment_bytes=1 << 20)
store.open()
store.append(RunStart(0, "ab" * 16, "job", "pi", 1))
for b in range(300):
    steps = tuple(range(b * 200, (b + 1) * 200))
    times = tuple(10**15 + s for s in steps)
    store.append(Metrics(0, "loss", steps, times, tuple(1 / (1 + s) for s in steps)))
    store.poll()
store.close()
files = sorted(Path(sys.argv[1]).glob("seg-*.est"))
seqs = []
for f in files:
    with TraceReader(f) as r:
        seqs += [x.seq for x in r]
        assert not r.damage, (f, r.damage)
print(json.dumps({
    "sizes": [f.stat().st_size for f in files],
    "segment_bytes": store.segment_bytes,
    "unstored": store.unstored,
    "notices": [e.message for e in store.take_notices()],
    "disk_full": store.disk_full,
    "seqs": seqs,
    "next_seq": store.next_seq,
}))
"""


def test_a_file_size_limit_ends_segments_before_it(tmp_path: Path) -> None:
    """EFBIG (RLIMIT_FSIZE; no root needed): the segment ends, a new one takes the stream."""
    done = subprocess.run(
        [sys.executable, "-c", EFBIG_SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = json.loads(done.stdout)
    assert out["disk_full"] is None
    assert len(out["sizes"]) >= 3 and max(out["sizes"]) <= 200 * 1024
    assert out["segment_bytes"] <= 200 * 1024
    assert len(out["unstored"]) == 1, "one flush met the limit; the rest fit new segments"
    (a, b) = out["unstored"][0]
    assert [m for m in out["notices"] if "file size limit" in m and f"{a}-{b}" in m]
    assert sorted(set(out["seqs"]) | set(range(a, b + 1))) == list(range(out["next_seq"]))


def test_starting_on_a_full_disk_keeps_a_bounded_memory_and_says_what_it_lost(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "data").mkdir()
        fill(disk / "filler")
        now = [0.0]
        store = SegmentStore(
            disk / "data",
            max_disk=8 << 20,
            segment_bytes=64 * 1024,
            memory_bytes=256 * 1024,
            retry_interval=1.0,
            clock=lambda: now[0],
        )
        store.open()  # no room even for a header: it starts in memory, and says so
        assert store.disk_full is not None
        assert store.open_segment.memory is not None
        step = 0
        for _ in range(600):  # ~1 MB of metrics: more than the memory holds
            store.append(batch(0, step))
            step += 200
            now[0] += 0.01
            store.poll()
            held = sum(s.size for s in store.segments if s.memory is not None)
            assert held <= 256 * 1024 + 64 * 1024 + 65536  # the bound, and one open segment
        assert store.unstored, "the oldest memory segments went, and are listed"
        (disk / "filler").unlink()
        now[0] += 2
        store.poll()
        assert store.disk_full is None
        notices = store.take_notices()
        assert [e.severity for e in notices] == [2, 1]
        assert f"seq {store.unstored[0][0]}-" in notices[1].message
        store.append(RunEnd(0, exit_code=0))
        store.close()
        on_disk: set[int] = set()
        for path in sorted((disk / "data").glob("seg-*.est")):
            with TraceReader(path) as r:
                on_disk |= {rec.seq for rec in r}
                assert r.damage == [], path
    unstored = {q for a, b in store.unstored for q in range(a, b + 1)}
    assert not on_disk & unstored
    assert on_disk | unstored == set(range(store.next_seq))
    assert len(on_disk) > 100, "what the memory still held reached the disk"
