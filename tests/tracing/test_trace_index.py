"""The keyframe index, seeking, and following a file that is still being written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from edgescope_tracing import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    TraceReader,
    TraceWriter,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tracegen import any_record, key

CONTEXT = (Keyframe, RunStart, RunEnd)


def synthetic(n: int) -> list[Record]:
    """A run: metric batches of 5 steps, a GPU sample and now and then an event."""
    out: list[Record] = [RunStart(0, "f" * 32, "mlp", "jetson", 4242, t_us=1_000)]
    step = 0
    t = 1_000
    for i in range(n):
        steps = tuple(range(step, step + 5))
        times = tuple(t + 5700 * k for k in range(5))
        out.append(Metrics(0, "loss", steps, times, tuple(2.0 / (s + 1) for s in steps)))
        out.append(GpuSample(0, "H200", temp_c=40.0 + i % 7, t_us=times[-1]))
        if i % 17 == 3:
            out.append(Event("mark", f"mark {i}", run=0, t_us=times[2]))
        step += 5
        t = times[-1] + 5700
    out.append(RunEnd(0, exit_code=0, t_us=t))
    return out


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    from test_trace_index import synthetic
    from edgescope_tracing import TraceWriter
    w = TraceWriter(sys.argv[1], flush_bytes=300, flush_interval=1e9, keyframe_bytes=2000)
    for rec in synthetic(300):
        w.append(rec)
    w.flush()
    print("flushed", flush=True)
    time.sleep(120)
    """
)


def test_index_written_at_close_and_rebuilt_after_sigkill(tmp_path: Path) -> None:
    clean = tmp_path / "clean.est"
    with TraceWriter(clean, flush_bytes=300, flush_interval=1e9, keyframe_bytes=2000) as w:
        for rec in synthetic(300):
            w.append(rec)
        written_index = list(w._stream.index)
    with TraceReader(clean) as r:
        assert r.indexed
        assert r.index() == written_index
        assert len(written_index) > 10
        everything = [key(x) for x in r]

    killed = tmp_path / "killed.est"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(here=str(Path(__file__).parent)), str(killed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "flushed\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with TraceReader(killed) as r:
        assert not r.indexed
        assert r.index() == written_index  # rebuilt by a scan
        assert [key(x) for x in r] == everything
        assert r.damage == []
        assert [x.seq for x in r.seek(seq=500)][:1] == [written_index_at(written_index, 500)]

    # A crash in the middle of writing a frame leaves part of it: reported as truncated.
    data = clean.read_bytes()
    with open(killed, "ab") as f:
        f.write(data[written_index[3].offset : written_index[3].offset + 25])
    with TraceReader(killed) as r:
        assert [key(x) for x in r] == everything
        (d,) = r.damage
        assert d.truncated
        assert d.length == 25
        assert r.index() == written_index


def written_index_at(index: list, seq: int) -> int:
    """The seq of the keyframe a seek to ``seq`` starts from."""
    return max(e.seq for e in index if e.seq <= seq)


def brute_force_check(everything: list[Record], got: list[Record], start: int | None) -> None:
    """``got`` is context, then exactly ``everything[start:]`` (or only context)."""
    if start is None:
        assert all(isinstance(r, CONTEXT) for r in got)
        return
    target = everything[start].seq
    before = [r for r in got if r.seq < target]
    assert all(isinstance(r, CONTEXT) for r in before)
    assert any(isinstance(r, Keyframe) for r in before) or start == 0 or got[0].seq == target
    assert [key(r) for r in got if r.seq >= target] == [key(r) for r in everything[start:]]


def first(everything: list[Record], cond) -> int | None:  # type: ignore[no-untyped-def]
    return next((i for i, r in enumerate(everything) if cond(r)), None)


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(any_record, min_size=1, max_size=80),
    keyframe_bytes=st.integers(1, 2000),
    indexed=st.booleans(),
    data=st.data(),
)
def test_seek_finds_the_first_records(
    records: list[Record], keyframe_bytes: int, indexed: bool, data: st.DataObject
) -> None:
    """Seek agrees with reading the whole file and looking, for any data (times and steps in
    any order), from the written index or one rebuilt by a scan."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        w = TraceWriter(path, keyframe_bytes=keyframe_bytes, flush_bytes=200)
        for rec in records:
            w.append(rec)
        if indexed:
            w.close()
        else:
            w.flush()
            os.close(w._fd)  # a writer that died: no index
        with TraceReader(path) as r:
            assert r.indexed == indexed
            everything = list(r)
            times = [t for x in everything for t in getattr(x, "times_us", (x.t_us,))]
            steps = [s for x in everything if isinstance(x, Metrics) for s in x.steps]

            seq = data.draw(st.integers(-1, everything[-1].seq + 1), label="seq")
            got = list(r.seek(seq=seq))
            brute_force_check(everything, got, first(everything, lambda x: x.seq >= seq))

            t = data.draw(st.sampled_from(times) | st.integers(0, 1 << 62), label="t_us")
            got = list(r.seek(t_us=t))

            def at_t(x: Record) -> bool:
                if isinstance(x, Metrics):
                    return bool(x.times_us) and max(x.times_us) >= t
                return x.t_us >= t

            brute_force_check(everything, got, first(everything, at_t))

            if steps:
                step = data.draw(st.sampled_from(steps) | st.integers(-(1 << 62), 1 << 62))
                got = list(r.seek(step=step))

                def at_step(x: Record) -> bool:
                    return isinstance(x, Metrics) and bool(x.steps) and max(x.steps) >= step

                brute_force_check(everything, got, first(everything, at_step))


def test_seek_reads_little_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path, keyframe_bytes=4096) as w:
        for rec in synthetic(3000):
            w.append(rec)
    with TraceReader(path) as r:
        it = r.seek(step=10_000)
        kf = next(it)
        assert isinstance(kf, Keyframe)
        assert kf.last_step < 10_000
        assert [(r.run, r.name) for r in kf.runs] == [(0, "mlp")]
        m = next(x for x in it if isinstance(x, Metrics))
        assert m.steps[0] <= 10_000 <= m.steps[-1]
        assert m.steps == tuple(range(10_000, 10_005))
        # Started from a keyframe near the target, not from the start of the file.
        assert kf.number > 10
        t = m.times_us[2]
        nxt = next(x for x in r.seek(t_us=t) if not isinstance(x, CONTEXT))
        assert nxt == m


def test_follow_yields_records_as_another_thread_writes(tmp_path: Path) -> None:
    path = tmp_path / "live.est"
    records = synthetic(120)
    w = TraceWriter(path, flush_bytes=1 << 16, flush_interval=1e9, keyframe_bytes=1500)
    got: list[Record] = []
    half = len(records) // 2
    seen_half = threading.Event()
    seen_live: list[int] = []

    def write() -> None:
        for i, rec in enumerate(records):
            if i == half:
                w.flush()
                # The reader must see the first half while the file is still open.
                seen_half.wait(30)
            w.append(rec)
            if i % 7 == 0:
                w.flush()
        w.close()

    writer = threading.Thread(target=write)
    with TraceReader(path) as r:
        writer.start()
        try:
            for rec in r.follow(poll=0.005):
                got.append(rec)
                if rec.seq == last_seq_of_first_half(got, half):
                    assert not w.closed
                    seen_live.append(rec.seq)
                    seen_half.set()
        finally:
            seen_half.set()
            writer.join(30)
        assert r.damage == []
    assert len(seen_live) == 1
    assert not writer.is_alive()
    assert [key(x) for x in got if not isinstance(x, Keyframe)] == [key(x) for x in records]


def last_seq_of_first_half(got: list[Record], half: int) -> int:
    data = [x for x in got if not isinstance(x, Keyframe)]
    return data[half - 1].seq if len(data) >= half else -1


def test_follow_stops_on_the_stop_event(tmp_path: Path) -> None:
    path = tmp_path / "live.est"
    stop = threading.Event()
    got: list[Record] = []
    with TraceWriter(path, flush_interval=1e9) as w:
        w.append(Event("mark", "one", t_us=1))
        w.flush()

        def follow() -> None:
            with TraceReader(path) as r:
                for rec in r.follow(poll=0.01, stop=stop):
                    got.append(rec)

        reader = threading.Thread(target=follow)
        reader.start()
        try:
            deadline = threading.Event()
            for _ in range(500):
                if any(isinstance(x, Event) for x in got):
                    break
                deadline.wait(0.01)
            w.append(Event("mark", "two", t_us=2))
            w.flush()
            for _ in range(500):
                if sum(isinstance(x, Event) for x in got) == 2:
                    break
                deadline.wait(0.01)
        finally:
            stop.set()
            reader.join(10)
        assert not reader.is_alive()
        assert not w.closed
    assert [x.message for x in got if isinstance(x, Event)] == ["one", "two"]


def test_an_index_too_big_for_a_frame_keeps_every_nth_keyframe(tmp_path: Path) -> None:
    path = tmp_path / "many.est"
    with TraceWriter(path, keyframe_bytes=1) as w:  # a keyframe before every record
        for i in range(6000):
            w.append(Event("log", str(i), t_us=1_000_000 + i))
        full = list(w._stream.index)
    assert len(full) == 6000
    with TraceReader(path) as r:
        assert r.indexed
        kept = r.index()
        assert 1000 < len(kept) < 6000
        assert kept[0] == full[0]
        step = kept[1].number - kept[0].number
        assert kept == full[::step]
        everything = list(r)
        for seq in (0, 5, 4321, everything[-1].seq):
            got = list(r.seek(seq=seq))
            start = first(everything, lambda x, seq=seq: x.seq >= seq)
            brute_force_check(everything, got, start)
            assert len(got) <= len(everything) - (start or 0) + 2 * step
