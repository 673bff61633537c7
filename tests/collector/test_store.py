"""The segment store: one sequence space across segments and restarts, bounded, repairable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgescope_collector.store import SegmentStore, StoreError, segment_name
from edgescope_tracing import Event, Keyframe, Metrics, RunEnd, RunStart, TraceReader
from test_server_support import RUN, make_store, metric, noisy


def read_all(directory: Path) -> list[object]:
    out: list[object] = []
    for p in sorted(directory.glob("seg-*.est")):
        with TraceReader(p) as r:
            out.extend(r)
            assert not [d for d in r.damage if not d.truncated], p
    return out


def test_segments_are_whole_traces_and_seq_goes_on(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_disk=64 << 20, segment_bytes=128 * 1024)
    store.append(RUN)
    for i in range(100):
        store.append(noisy(i))
        store.flush()
    store.append(RunEnd(0, exit_code=0))
    store.close()
    segs = sorted(tmp_path.glob("seg-*.est"))
    assert len(segs) >= 3
    seqs: list[int] = []
    for k, p in enumerate(segs):
        with TraceReader(p) as r:
            assert r.indexed, f"{p.name} was not closed with an index"
            recs = list(r)
        # Every segment starts with a keyframe; after the first, it restates the active run.
        assert isinstance(recs[0], Keyframe)
        if k > 0:
            assert [x.run_id for x in recs[0].runs] == [RUN.run_id]
        assert int(p.name[4:24]) == recs[0].seq
        seqs.extend(x.seq for x in recs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "one gap-free sequence space"
    assert seqs[0] == 0


def test_restart_continues_the_sequence(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append(RUN)
    last = [store.append(metric(i)) for i in range(10)][-1]
    store.close()
    again = make_store(tmp_path)
    assert again.next_seq == last + 1
    assert again.first_seq == 0
    seq = again.append(metric(10))
    again.close()
    assert seq > last
    recs = read_all(tmp_path)
    seqs = [r.seq for r in recs]  # type: ignore[attr-defined]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_retention_drops_oldest_first(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_disk=512 * 1024, segment_bytes=128 * 1024)
    store.append(RUN)
    for i in range(200):
        store.append(noisy(i))
        store.flush()
    assert store.disk_bytes <= 512 * 1024
    assert store.dropped_segments > 0
    kept = sorted(p.name for p in tmp_path.glob("seg-*.est"))
    assert kept == [s.path.name for s in store.segments]
    assert store.first_seq > 0
    # What is kept is still one contiguous tail of the stream.
    store.close()
    seqs = [r.seq for r in read_all(tmp_path)]  # type: ignore[attr-defined]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[0] == store.first_seq


def test_crash_leaves_an_open_segment_that_is_repaired(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.append(RUN)
    for i in range(20):
        store.append(metric(i))
    store.flush()
    good_end = store.open_segment.data_end
    path = store.open_segment.path
    # The crash: the process dies mid-write, leaving half a frame, without closing.
    with open(path, "ab") as f:
        f.write(b"\xe5\x5c\x00\x10\x00\x00garbage")
    os.close(store._fd)
    os.close(store._lock_fd)  # the process is gone, and its lock with it
    again = make_store(tmp_path)
    first = again.segments[0]
    assert first.closed and first.data_end == good_end
    assert again.next_seq == 22  # keyframe + run + 20 batches
    with TraceReader(path) as r:
        assert r.indexed
        assert len([x for x in r if isinstance(x, Metrics)]) == 20
        assert not r.damage
    again.close()


def test_locate_picks_the_keyframe_at_or_before(tmp_path: Path) -> None:
    store = make_store(tmp_path, max_disk=64 << 20, segment_bytes=128 * 1024, keyframe_bytes=1)
    store.append(RUN)
    for i in range(40):
        store.append(noisy(i))
        store.flush()
    seg, offset, gap = store.locate(30)
    assert gap is None
    assert seg.first_seq <= 30
    with TraceReader(seg.path) as r:
        recs = list(r.records(offset))
    assert isinstance(recs[0], Keyframe) and recs[0].seq <= 30
    assert any(x.seq == 30 for x in recs)
    # Older than anything kept: a gap up to the oldest segment.
    store.segments[0].first_seq = 5
    _, _, gap = store.locate(2)
    assert gap == (2, 4)
    store.close()


def test_unusable_data_dir_is_one_sentence(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    store = SegmentStore(f / "sub", max_disk=1 << 20)
    try:
        store.open()
    except Exception as e:
        assert "cannot use the data directory" in str(e)
        assert "\n" not in str(e)
    else:
        raise AssertionError("opened a store under a file")


def test_foreign_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / segment_name(7)).write_bytes(b"not a trace at all")
    store = make_store(tmp_path)
    store.append(Event("mark", "hello", t_us=1))
    store.close()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert isinstance(RunStart, type)


def test_one_collector_per_data_directory(tmp_path: Path) -> None:
    first = make_store(tmp_path)
    second = SegmentStore(tmp_path, max_disk=1 << 20)
    with pytest.raises(StoreError, match=f"another collector \\(pid {os.getpid()}\\) is using"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_a_new_segment_starts_by_age(tmp_path: Path) -> None:
    now = [100.0]
    store = make_store(tmp_path, segment_age=60.0, clock=lambda: now[0])
    store.append(RUN)
    store.flush()
    store.poll()
    assert len(store.segments) == 1
    now[0] += 61
    store.poll()
    assert len(store.segments) == 2 and store.segments[0].closed
    assert store.segments[1].first_seq == store.segments[0].next_seq
    store.close()
