"""The file source: real trace files, damaged and truncated ones, seeking, following."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from edgescope_tracing import (
    Event,
    Keyframe,
    Metrics,
    NotATraceError,
    Record,
    RunStart,
    TraceReader,
    TraceWriter,
)
from edgescope_tui.feed import Feed
from edgescope_tui.sources import FileSource, SeekableSource, Status
from edgescope_tui.state import fold_all
from h200_trace import write_h200_trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h200_trace(tmp_path_factory.mktemp("trace") / "h200.trace", steps=2000)


async def _all(source: FileSource) -> list[Record | Status]:
    return [x async for x in source.stream()]


def _end(rec: Record) -> int:
    return rec.times_us[-1] if isinstance(rec, Metrics) and rec.times_us else rec.t_us


@pytest.mark.asyncio
async def test_stream_yields_what_the_reader_reads_then_ended(trace: Path) -> None:
    source = FileSource(trace)
    assert isinstance(source, SeekableSource)
    items = await _all(source)
    await source.close()
    with TraceReader(trace) as r:
        expected = list(r)
    assert items[:-1] == expected
    assert items[-1] == Status("ended", "end of h200.trace")


@pytest.mark.asyncio
async def test_seek_starts_at_a_keyframe_not_at_the_start(trace: Path) -> None:
    source = FileSource(trace)
    span = await source.time_span()
    with TraceReader(trace) as r:
        recs = list(r)
    assert span == (min(x.t_us for x in recs if x.t_us), max(_end(x) for x in recs))
    assert len(source.index()) > 5
    target = (span[0] + span[1]) // 2
    it = source.seek(target)
    first = await anext(it)
    assert isinstance(first, Keyframe)
    assert first.t_us <= target and first.seq > 0
    later = [x async for x in it]
    await source.close()
    assert isinstance(later[0], Record) and later[0].seq == first.seq + 1
    assert any(isinstance(x, Record) and x.t_us >= target for x in later)
    # The keyframe restates the run, so a state folded from there knows it.
    s = fold_all([first, *later])
    assert s.runs[0].name == "h200-mlp"


def _frame_offsets(data: bytes) -> list[int]:
    """Where frames start (sync mark, then a length that lands on the next sync or the end)."""
    out = []
    pos = 12
    while pos + 10 <= len(data) and data[pos : pos + 2] == b"\xe5\x5c":
        out.append(pos)
        pos += 10 + int.from_bytes(data[pos + 2 : pos + 6], "little")
    return out


@pytest.mark.asyncio
async def test_damaged_frame_is_marked_and_everything_else_is_shown(
    trace: Path, tmp_path: Path
) -> None:
    data = bytearray(trace.read_bytes())
    frames = _frame_offsets(bytes(data))
    hit = frames[len(frames) // 2]
    data[hit + 20] ^= 0xFF  # inside the payload: the checksum no longer matches
    bad = tmp_path / "damaged.trace"
    bad.write_bytes(bytes(data))
    source = FileSource(bad)
    items = await _all(source)
    await source.close()
    gaps = [x for x in items if isinstance(x, Status) and x.state == "gap"]
    assert len(gaps) == 1
    assert f"at byte {hit}" in gaps[0].message and "bad checksum" in gaps[0].message
    assert gaps[0].gap is not None
    recs = [x for x in items if not isinstance(x, Status)]
    with TraceReader(trace) as r:
        whole = list(r)
    assert 0 < len(recs) < len(whole)
    assert max(_end(x) for x in recs) == max(_end(x) for x in whole)  # the part after it
    s = fold_all(items)
    (gap,) = s.stream.gaps.view()
    assert gap.first_seq == gaps[0].gap[0] and gap.end_us is not None and gap.end_us > gap.t_us


@pytest.mark.asyncio
async def test_truncated_trace_shows_what_was_written(trace: Path, tmp_path: Path) -> None:
    data = trace.read_bytes()
    frames = _frame_offsets(data)
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[: frames[len(frames) // 2] + 30])
    source = FileSource(cut)
    items = await _all(source)
    await source.close()
    assert any(isinstance(x, Metrics) for x in items)
    gap = next(x for x in items if isinstance(x, Status) and x.state == "gap")
    assert "incomplete frame" in gap.message
    assert items[-1].state == "ended"  # type: ignore[union-attr]


def test_a_file_that_is_not_a_trace_gets_one_sentence(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    with pytest.raises(NotATraceError, match=r"notes\.txt is not an edgescope trace"):
        FileSource(p)


@pytest.mark.asyncio
async def test_follow_reads_a_growing_file_until_it_is_closed(tmp_path: Path) -> None:
    p = tmp_path / "growing.trace"
    w = TraceWriter(p, fsync="never")
    w.append(RunStart(0, "ab", "live", "h", 1, t_us=1_000))
    w.flush()
    source = FileSource(p, follow=True)
    got: list[Record | Status] = []

    async def read() -> None:
        async for x in source.stream():
            if not isinstance(x, Keyframe):
                got.append(x)

    task = asyncio.create_task(read())
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if got:
                break
        assert isinstance(got[0], RunStart)
        w.append(Event("mark", "later", t_us=2_000))
        w.flush()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(got) >= 2:
                break
        assert isinstance(got[1], Event) and got[1].message == "later"
        w.close()
        await asyncio.wait_for(task, 5)
        assert got[-1] == Status("ended", "end of growing.trace")
    finally:
        w.close()
        await source.close()
        await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_close_stops_a_follow_in_progress(tmp_path: Path) -> None:
    p = tmp_path / "open.trace"
    w = TraceWriter(p, fsync="never")
    w.append(RunStart(0, "ab", "live", "h", 1, t_us=1_000))
    w.flush()
    source = FileSource(p, follow=True)
    got: list[Record | Status] = []

    async def read() -> None:
        async for x in source.stream():
            if not isinstance(x, Keyframe):
                got.append(x)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    await source.close()
    await asyncio.wait_for(task, 5)
    w.close()
    assert isinstance(got[0], RunStart)


@pytest.mark.asyncio
async def test_feed_loads_up_to_its_limit_and_seeks_past_it(trace: Path) -> None:
    source = FileSource(trace)
    feed = Feed(source, max_points=2_000)
    updates = 0

    def notify() -> None:
        nonlocal updates
        updates += 1

    await feed.pump(notify, interval=0.0)
    assert feed.complete and feed.truncated and updates > 0
    assert feed.state.stream.status is not None
    assert f"loaded the first {feed.records:,} records" in feed.state.stream.status.message
    assert 2_000 <= feed.points < 2_000 + 50  # stops within one metric batch of the limit
    assert feed.span is not None and feed.state.stream.last_us is not None
    target = (feed.state.stream.last_us + feed.span[1]) // 2
    assert feed.needs_window(target)
    assert feed.state_at(target) is feed.state
    window = await feed.load_window(target)
    assert window.stream.first_us is not None and window.stream.first_us <= target
    assert window.stream.last_us is not None and window.stream.last_us >= target
    assert window.runs[0].name == "h200-mlp"
    assert feed.state_at(target) is window and not feed.needs_window(target)
    await feed.close()
