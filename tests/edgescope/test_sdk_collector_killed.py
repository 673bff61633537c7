"""A real collector killed with SIGKILL mid-run (issue 11.6): the SDK loses nothing.

The collector acknowledges what it has stored; the SDK keeps the rest and, when the connection
dies, replays it into the fallback file. Every value is then in the store or in the file, and
only values the collector had not confirmed may be in both.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from edgescope_tracing import Event, Metrics, Record, RunEnd, RunStart
from sdkutil import CollectorProcess, of, read, values

import edgescope


def _of_run(stored: list[Record], run_id: str) -> list[tuple[int, float]]:
    """The run's values in the store (none when it was killed before it stored the start), under
    each number it had there: a run re-attached after a restart gets a new one."""
    runs = {s.run for s in of(stored, RunStart) if s.run_id == run_id}
    out: list[tuple[int, float]] = []
    for m in of(stored, Metrics):
        if m.run in runs:
            out.extend(zip(m.steps, m.values, strict=True))
    return out


@pytest.mark.parametrize("rate", ["paced", "flat-out"])
def test_a_collector_killed_mid_run_loses_no_value(
    sdk: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], rate: str
) -> None:
    collector = CollectorProcess(sdk)
    monkeypatch.setenv("EDGESCOPE_SOCKET", str(collector.ingest))
    n, kill_at = 60_000, 20_000
    try:
        run = edgescope.init(name="victim", flush_interval=0.05)
        assert run.collector == str(collector.ingest)
        for i in range(n):
            edgescope.log({"loss": float(i)}, step=i)
            if i == kill_at:
                collector.kill()
            if rate == "paced" and i % 500 == 0:
                time.sleep(0.005)
        edgescope.finish(0)
    finally:
        collector.stop()
    assert run.path is not None, "the rest went to a file"
    err = capfd.readouterr().err
    assert "closed the connection" in err and str(run.path) in err
    recs = read(run.path)
    end = of(recs, RunEnd)[0]
    assert end.exit_code == 0 and end.dropped == 0
    (notice,) = [e for e in of(recs, Event) if e.kind == "log"]
    in_file = values(recs, "loss")
    in_store = _of_run(collector.stored(), run.run_id)
    everything = [(i, float(i)) for i in range(n)]
    assert sorted(set(in_store) | set(in_file)) == everything
    assert len(in_file) == len(set(in_file)) and len(in_store) == len(set(in_store))
    assert len(set(in_store) & set(in_file)) <= notice.detail["replayed"]  # type: ignore[index]
    assert in_file[-1] == (n - 1, float(n - 1))
    if rate == "paced":
        # The collector had stored (and confirmed) part of the run: that part is not repeated.
        assert in_store and len(in_file) < n


def test_the_run_is_re_attached_when_the_collector_comes_back(
    sdk: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    first = CollectorProcess(sdk)
    monkeypatch.setenv("EDGESCOPE_SOCKET", str(first.ingest))
    step = 0

    def log_for(seconds: float) -> None:
        nonlocal step
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(100):
                edgescope.log({"loss": float(step)}, step=step)
                step += 1
            time.sleep(0.002)

    second = None
    try:
        run = edgescope.init(name="comeback", flush_interval=0.05)
        log_for(0.5)
        first.kill()
        log_for(0.5)
        assert run.path is not None and run.collector is None, "in the fallback file"
        fallback = run.path
        second = CollectorProcess(sdk)  # the same data directory and ingest socket
        deadline = time.monotonic() + 15
        while run.collector is None:
            assert time.monotonic() < deadline, "never re-attached"
            log_for(0.1)
        log_for(0.3)
        edgescope.finish(0)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    err = capfd.readouterr().err
    assert f"the collector at {first.ingest} is back; run 'comeback' goes on there" in err
    assert run.path is None
    stored = second.stored()
    in_store = _of_run(stored, run.run_id)
    file_recs = read(fallback)
    in_file = values(file_recs, "loss")
    everything = [(i, float(i)) for i in range(step)]
    assert sorted(set(in_store) | set(in_file)) == everything
    assert not of(file_recs, RunEnd), "the run went on elsewhere"
    back = [e for e in of(file_recs, Event) if "is back" in e.message]
    assert back and back[0].detail == {"collector": str(first.ingest)}
    # The collector holds the run twice (before the kill, and re-attached); the second part
    # names the file and ends properly.
    starts = [s for s in of(stored, RunStart) if s.run_id == run.run_id]
    assert len(starts) == 2
    note = [e for e in of(stored, Event) if e.run == starts[1].run and "re-attached" in e.message]
    assert note and note[0].detail == {"file": str(fallback)}
    ends = [e for e in of(stored, RunEnd) if e.run == starts[1].run]
    assert ends and ends[0].exit_code == 0 and ends[0].dropped == 0
    # the part before the kill was ended as lost contact when the collector came back, under
    # its own number (the new session numbers its runs above the old ones)
    assert starts[0].run != starts[1].run
    lost = [e for e in of(stored, RunEnd) if e.run == starts[0].run]
    assert [e.exit_code for e in lost] == [None]
