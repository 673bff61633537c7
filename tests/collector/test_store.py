"""The segment store: one sequence space across segments and restarts, bounded, repairable."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from edgescope_collector.store import MAX_SEQ, SegmentStore, StoreError, segment_name
from edgescope_tracing import Event, Keyframe, Metrics, RunEnd, StreamEncoder, TraceReader
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
    # Named like a segment but not one: moved aside, kept as it was.
    assert (tmp_path / (segment_name(7) + ".damaged")).read_bytes() == b"not a trace at all"


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


# --- issue #11 items 4, 12, 13: what a data directory may hold ------------------------------


def closed_segment(path: Path, first_seq: int, n: int) -> None:
    """A cleanly closed segment holding ``n`` events from ``first_seq``."""
    enc = StreamEncoder()
    enc.encoder.next_seq = first_seq
    for i in range(n):
        enc.add(Event("mark", f"old {i}", t_us=1 + i))
    path.write_bytes(enc.take() + enc.index_bytes())


def test_a_symlink_named_like_a_segment_is_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious, not a trace")
    trace = outside / "trace.est"
    closed_segment(trace, 0, 3)  # a valid trace outside: not read either
    before = trace.read_bytes()
    (data / segment_name(0)).symlink_to(victim)
    (data / segment_name(3)).symlink_to(trace)
    with caplog.at_level(logging.WARNING, logger="edgescope.collector.store"):
        store = make_store(data)
        for i in range(20):
            store.append(Event("mark", f"new {i}", t_us=10 + i))
        store.close()
    assert victim.read_bytes() == b"precious, not a trace"
    assert trace.read_bytes() == before
    for n in (0, 3):
        aside = data / (segment_name(n) + ".damaged")
        assert aside.is_symlink(), "the link itself is moved aside and kept"
        assert [m for m in caplog.messages if aside.name in m and "symlink" in m]
    assert store.segments[0].first_seq == 0 and not store.segments[0].path.is_symlink()
    assert [r.message for r in read_all(data) if isinstance(r, Event)][-1] == "new 19"


def test_an_unreadable_segment_is_moved_aside_not_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: a crashed, unreadable segment whose name is the next one to use."""
    closed_segment(tmp_path / segment_name(0), 0, 5)
    crashed = tmp_path / segment_name(6)
    crashed.write_bytes(b"\x89EDGSCP\n\x07\x00\x00\x00 a newer major: unreadable here")
    (tmp_path / (segment_name(6) + ".damaged")).write_bytes(b"an earlier one")
    with caplog.at_level(logging.WARNING, logger="edgescope.collector.store"):
        store = make_store(tmp_path)
        store.append(Event("mark", "new", t_us=10))
        store.close()
    assert store.segments[-1].first_seq == 6  # the name is the next one...
    kept = tmp_path / (segment_name(6) + ".damaged.1")  # ...and what held it is kept
    assert kept.read_bytes().startswith(b"\x89EDGSCP\n\x07\x00")
    assert (tmp_path / (segment_name(6) + ".damaged")).read_bytes() == b"an earlier one"
    assert [m for m in caplog.messages if kept.name in m and "trace format 7.0" in m]
    assert [r.seq for r in read_all(tmp_path) if isinstance(r, Event)] == [1, 2, 3, 4, 5, 7]


def test_a_fifo_named_like_a_segment_does_not_hang_the_store(tmp_path: Path) -> None:
    fifo = tmp_path / segment_name(0)
    os.mkfifo(fifo)
    store = SegmentStore(tmp_path, max_disk=1 << 20)
    opened = threading.Thread(target=store.open, daemon=True)
    opened.start()
    opened.join(10)
    assert not opened.is_alive(), "opening the store blocked on a FIFO"
    store.append(Event("mark", "hello", t_us=1))
    store.close()
    aside = tmp_path / (segment_name(0) + ".damaged")
    assert aside.exists() and not aside.is_file()  # still the FIFO, moved aside
    assert [r.message for r in read_all(tmp_path) if isinstance(r, Event)] == ["hello"]


@pytest.mark.parametrize("first", [MAX_SEQ + 1, 18446744073709551616, 10**20 - 1])
def test_a_segment_numbered_past_the_sequence_space_is_moved_aside(
    tmp_path: Path, first: int
) -> None:
    """Issue #11 item 13: seg-<above 2^64>.est made the collector refuse every record."""
    name = f"seg-{first:020d}.est"
    (tmp_path / name).write_bytes(b"whatever")
    store = make_store(tmp_path)
    for i in range(5):
        store.append(Event("mark", f"m {i}", t_us=1 + i))
    store.close()
    assert store.next_seq == 6  # a keyframe and the 5 events: all accepted, from 0
    assert (tmp_path / (name + ".damaged")).read_bytes() == b"whatever"
    assert [r.message for r in read_all(tmp_path) if isinstance(r, Event)] == [
        f"m {i}" for i in range(5)
    ]


def test_a_segment_whose_index_runs_past_the_sequence_space_is_moved_aside(
    tmp_path: Path,
) -> None:
    closed_segment(tmp_path / segment_name(0), MAX_SEQ - 1, 3)
    store = make_store(tmp_path)
    store.append(Event("mark", "fine", t_us=1))
    store.close()
    assert (tmp_path / (segment_name(0) + ".damaged")).exists()
    assert [r.message for r in read_all(tmp_path) if isinstance(r, Event)] == ["fine"]


def test_a_symlinked_lock_file_is_refused_and_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (data / "collector.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="is a symlink") as e:
        SegmentStore(data, max_disk=1 << 20).open()
    assert "\n" not in str(e.value)
    assert victim.read_text() == "precious"
