"""The one pipeline (ingest → sample → detect → encode → sink) that the daemon and ``record`` run.

Both commands are checked to build on :class:`Pipeline` (their own tests exercise them end to
end); here the pipeline itself, on a recorded device tree, with a sink that keeps what it gets
and can refuse a record.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from edgescope_collector.config import Config
from edgescope_collector.daemon import Collector
from edgescope_collector.pipeline import FileSink, Pipeline, StoreSink
from edgescope_tracing import Event, Metrics, ProcessSample, Record, RunStart, StreamEncoder

if TYPE_CHECKING:
    from conftest import Board


class ListSink:
    """Keeps every record; refuses the ones ``refuse`` says (as a sink that cannot encode)."""

    def __init__(self, refuse: Callable[[Record], bool] = lambda r: False) -> None:
        self.records: list[Record] = []
        self.refuse = refuse
        self.writable = True

    def append(self, rec: Record) -> object:
        if self.refuse(rec):
            raise ValueError("cannot encode this one")
        self.records.append(rec)
        return len(self.records)

    def poll(self) -> list[Event]:
        return []

    def flush(self) -> None:
        pass

    def events(self, kind: str | None = None) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event) and kind in (None, r.kind)]


def test_the_daemon_and_record_both_run_it(tmp_path: Path) -> None:
    c = Collector(Config(data_dir=tmp_path / "data", ingest=tmp_path / "ingest.sock"))
    assert isinstance(c.pipeline, Pipeline) and isinstance(c.pipeline.sink, StoreSink)
    assert c.pipeline.stacks_per_run is False  # --profile python: no outside backend
    import edgescope.cli.record as record

    assert "Pipeline" in record._Session.run.__code__.co_names
    assert record._Session.__init__.__code__.co_names.count("FileSink") == 1
    assert FileSink.__module__ == Pipeline.__module__


def _pipeline(
    board: Board, tmp_path: Path, sink: ListSink, said: list[str], **kw: object
) -> Pipeline:
    return Pipeline(
        sink,
        ingest_path=tmp_path / "ingest.sock",
        roots=board.roots,
        interval=0.05,
        say=said.append,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_ingest_samplers_detectors_into_the_sink(
    board: Callable[[str], Board], tmp_path: Path
) -> None:
    sink = ListSink(refuse=lambda r: isinstance(r, Metrics) and r.key == "unencodable")
    said: list[str] = []
    p = _pipeline(
        board("rpi4"), tmp_path, sink, said, self_sample=lambda t: ProcessSample(-1, 1, t_us=t)
    )
    await p.open()
    assert p.samplers, p.skipped
    loops = p.start()
    # an SDK process: a run, a loss that goes non-finite, and a record the sink refuses
    _reader, writer = await asyncio.open_unix_connection(str(tmp_path / "ingest.sock"))
    enc = StreamEncoder()
    enc.add(RunStart(0, "ab12", "r", "h", 4242, t_us=1_000))
    for i in range(20):
        enc.add(
            Metrics(0, "loss", (i,), (1_000 + i,), (1.0 if i < 19 else math.nan,), t_us=1_000 + i)
        )
    enc.add(Metrics(0, "unencodable", (0,), (2_000,), (1.0,), t_us=2_000))
    writer.write(enc.take())
    await writer.drain()
    for _ in range(100):
        if sum(isinstance(r, Metrics) for r in sink.records) >= 20 and any(
            isinstance(r, ProcessSample) and r.run == -1 for r in sink.records
        ):
            break
        await asyncio.sleep(0.05)
    writer.close()
    await p.close()
    assert all(t.done() for t in loops)
    kinds = {type(r).__name__ for r in sink.records}
    assert {"RunStart", "Metrics", "SystemSample", "ThermalSample", "ProcessSample"} <= kinds
    assert any("non-finite" in e.message or "nan" in e.message.lower() for e in sink.events())
    assert p.rejected == 1 and said and "refused" in said[0]
    assert not any(isinstance(r, Metrics) and r.key == "unencodable" for r in sink.records)


class Broken:
    name = "broken"

    def sample(self, t_us: int) -> list[Record]:
        raise RuntimeError("the sensor went away")

    def close(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_failing_sampler_is_said_once_and_a_failing_detector_turned_off(
    board: Callable[[str], Board], tmp_path: Path
) -> None:
    sink = ListSink()
    said: list[str] = []
    p = _pipeline(board("rpi4"), tmp_path, sink, said)
    await p.open()
    p.samplers.append(Broken())
    p.start()
    await asyncio.sleep(0.4)  # several ticks
    errors = sink.events("sampler_error")
    assert len(errors) == 1 and "the sensor went away" in errors[0].message

    def boom(rec: Record) -> list[Event]:
        raise ZeroDivisionError("a detector's bug")

    assert p.detectors is not None
    p.detectors.feed = boom  # type: ignore[method-assign]
    p.record(Metrics(0, "loss", (0,), (1,), (1.0,), t_us=1))
    assert p.detectors is None
    assert any("detectors stopped" in e.message for e in sink.events("collector"))
    n = len(sink.records)
    p.record(Metrics(0, "loss", (1,), (2,), (1.0,), t_us=2))  # storing goes on
    assert len(sink.records) == n + 1
    await p.close()


@pytest.mark.asyncio
async def test_a_stack_backend_that_cannot_start_is_an_event(
    board: Callable[[str], Board], tmp_path: Path
) -> None:
    sink = ListSink()
    p = _pipeline(board("rpi4"), tmp_path, sink, [], profile="no-such-backend")
    await p.open()
    p.watch.add(3, 999_999)
    await p.attach_stacks(3, 999_999)
    (ev,) = sink.events("stacks")
    assert ev.run == 3 and ev.severity == 1 and "no no-such-backend stack samples" in ev.message
    await p.close()
