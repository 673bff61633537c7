"""Energy over a run's time window: counters with wraps and restarts, power integrated, the
run's J, Wh, mean power, J/step and J per mark, as ``inspect`` gives them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    PowerReading,
    PowerSample,
    RunEnd,
    RunStart,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing.energy import EnergyMeter, counter_delta, source_power_w
from edgescope_tracing.summary import summarize, summarize_file
from realdata import H200_RUN

S = 1_000_000
T0 = 1_795_800_000 * S
RANGE = 262_143_328_850


def rapl(t: int, uj: int, core_uj: int = 0) -> PowerSample:
    return PowerSample(
        (
            PowerReading("rapl", "package-0", uj, None, RANGE, 15_000_000),
            PowerReading("rapl", "package-0/core", core_uj, None, RANGE, total=False),
        ),
        t_us=t,
    )


def test_counter_delta() -> None:
    assert counter_delta(5, 5, RANGE) == (0, None)
    assert counter_delta(RANGE - 1, 1, RANGE) == (2, "wrap")
    assert counter_delta(100, 40, None) == (40, "reset")
    assert counter_delta(RANGE + 10, 5, RANGE) == (5, "reset")  # beyond the range: no wrap


def test_a_run_between_samples_gets_its_share() -> None:
    """10 W for 10 s sampled at 1 Hz; a run from 2.5 s to 7.5 s used 50 J of it; the counter
    wraps in between; the subzone does not count."""
    recs: list[object] = []
    e = RANGE - 32_000_000
    for i in range(11):
        recs.append(rapl(T0 + i * S, e % RANGE, core_uj=i * 9_000_000))
        e += 10_000_000
        if i == 2:
            recs.append(RunStart(0, "ab" * 16, "train", "h", 1, t_us=T0 + 2 * S + S // 2))
        if i == 7:
            recs.append(RunEnd(0, exit_code=0, t_us=T0 + 7 * S + S // 2))
    s = summarize(recs, format_version="1.3", size=0)  # type: ignore[arg-type]
    (r,) = s.runs
    assert r.energy is not None
    assert r.energy.total_j == pytest.approx(50.0)
    assert r.energy.joules == {"rapl": pytest.approx(50.0)}
    assert r.energy.mean_w == pytest.approx(10.0)
    assert r.energy.steps is None and r.energy.per_step_j is None  # no step logged
    assert s.energy_wraps == 1 and s.energy_resets == 0
    j = s.to_json()["runs"][0]
    assert j["energy_j"] == pytest.approx(50.0) and j["energy_j_per_step"] is None
    assert j["energy"]["energy_wh"] == pytest.approx(50 / 3600)


def test_energy_per_step_and_per_mark(tmp_path: Path) -> None:
    """A board at 5 W then 20 W: two epochs marked; J/step over 100 steps."""
    path = tmp_path / "run.est"
    with TraceWriter(path) as w:
        w.append(RunStart(0, "cd" * 16, "train", "jetson", 7, t_us=T0))
        for i in range(21):
            watts = 5 if i < 10 else 20
            rail = PowerReading("ina3221", "ina3221/VDD_IN", power_uw=watts * 1_000_000)
            w.append(PowerSample((rail,), t_us=T0 + i * S))
            if i in (10, 20):
                w.append(Event("mark", f"epoch {i // 10}", run=0, t_us=T0 + i * S))
        steps = tuple(range(100))
        w.append(Metrics(0, "loss", steps, tuple(T0 + k * 200_000 for k in steps), (1.0,) * 100))
        w.append(RunEnd(0, exit_code=0, t_us=T0 + 20 * S))
    with TraceReader(path) as reader:
        s = summarize_file(reader)
    e = s.runs[0].energy
    assert e is not None
    # trapezoids: 9 s at 5 W, the 5->20 W second at 12.5 W, 10 s at 20 W
    assert e.total_j == pytest.approx(45 + 12.5 + 200)
    assert e.steps == 100 and e.per_step_j == pytest.approx(2.575)
    assert [(m, round(j, 6)) for m, _, j in e.marks] == [
        ("epoch 1", 57.5),  # the mark is at the 10th second, the end of the 5->20 W trapezoid
        ("epoch 2", 200.0),
        ("end", 0.0),
    ]
    assert s.energy_sources == ["ina3221"]


def test_a_trace_without_power_has_no_energy_not_zero(tmp_path: Path) -> None:
    path = tmp_path / "nopower.est"
    with TraceWriter(path) as w:
        w.append(RunStart(0, "ef" * 16, "train", "pi", 7, t_us=T0))
        w.append(Metrics(0, "loss", (0, 1), (T0, T0 + S), (1.0, 0.5)))
        w.append(RunEnd(0, exit_code=0, t_us=T0 + 2 * S))
    with TraceReader(path) as reader:
        s = summarize_file(reader)
    j = s.to_json()["runs"][0]
    assert "energy_j" not in j and "energy_j_per_step" not in j and "energy" not in j
    assert s.to_json()["energy_sources"] == []


def test_a_lost_run_ends_at_its_last_record() -> None:
    recs: list[object] = [RunStart(0, "aa" * 16, "train", "h", 1, t_us=T0)]
    for i in range(0, 31):
        recs.append(rapl(T0 + i * S, 1_000_000_000 + i * 10_000_000))
        if i <= 10:  # the run logs for 10 s, then dies without a RunEnd
            recs.append(Metrics(0, "loss", (i,), (T0 + i * S,), (1.0,)))
    s = summarize(recs, format_version="1.3", size=0)  # type: ignore[arg-type]
    e = s.runs[0].energy
    assert s.runs[0].end is None and e is not None
    assert e.total_j == pytest.approx(100.0)  # 10 W for its 10 s, not the 30 s of the trace
    assert e.per_step_j == pytest.approx(100.0 / 11)


def test_records_of_one_instant_from_two_samplers_are_one_point() -> None:
    m = EnergyMeter()
    for i in range(3):
        t = T0 + i * S
        m.add(rapl(t, i * 20_000_000))
        m.add(PowerSample((PowerReading("nvml", "gpu0", i * 300_000_000, 300_000_000),), t_us=t))
    p = m.latest
    assert p is not None and p.joules == {"rapl": 40.0, "nvml": 600.0} and p.total == 640.0
    assert p.covered_us == 2 * S
    assert m.probe(T0 + S // 2).point == m.probe(T0 + S // 2).point
    half = m.probe(T0 + S // 2).point
    assert half is not None and half.total == pytest.approx(160.0)
    assert source_power_w(rapl(T0, 0)) == {}  # counters give no power figure by themselves


def test_gpu_samples_give_energy_to_traces_without_power_records() -> None:
    """The real H200 run (NVML power at 10 Hz): its energy is the integral of the power the
    GPU samples carry, over the run's time."""
    rows = [json.loads(line) for line in H200_RUN.read_text().splitlines()]
    nvml = [r for r in rows if r["kind"] == "nvml"]
    steps = [r for r in rows if r["kind"] == "step"]
    start, end = nvml[0]["t_ns"] // 1000, nvml[-1]["t_ns"] // 1000
    recs: list[object] = [RunStart(0, "h2" * 16, "h200", "gpu", 1, t_us=start)]
    for r in nvml:
        recs.append(GpuSample(0, "NVIDIA H200", power_mw=r["power_mw"], t_us=r["t_ns"] // 1000))
    recs.append(
        Metrics(
            0,
            "step_time",
            tuple(r["step"] for r in steps),
            tuple(r["t_ns"] // 1000 for r in steps),
            tuple(r["step_ns"] / 1e9 for r in steps),
        )
    )
    recs.append(RunEnd(0, exit_code=0, t_us=end))
    s = summarize(recs, format_version="1.0", size=0)  # type: ignore[arg-type]
    e = s.runs[0].energy
    assert e is not None
    # the trapezoid rule over the recorded samples, computed here from the raw rows
    expected = sum(
        (a["power_mw"] + b["power_mw"]) / 2e3 * (b["t_ns"] - a["t_ns"]) / 1e9
        for a, b in itertools.pairwise(nvml)
    )
    assert e.total_j == pytest.approx(expected)
    assert 40_000 < e.total_j < 55_000  # ~580 W for ~80 s
    assert e.steps == 11_658 and 3.0 < (e.per_step_j or 0) < 5.0
    assert e.mean_w is not None and 79 < e.mean_w < 700  # between idle and the 700 W limit


def test_inspect_says_the_energy_or_why_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgescope.cli import main

    path = tmp_path / "run.est"
    with TraceWriter(path) as w:
        w.append(RunStart(0, "cd" * 16, "train", "jetson", 7, t_us=T0))
        w.append(RunStart(1, "ce" * 16, "later", "jetson", 8, t_us=T0 + 100 * S))
        for i in range(11):
            rail = PowerReading("ina3221", "ina3221/VDD_IN", power_uw=6_000_000)
            w.append(PowerSample((rail,), t_us=T0 + i * S))
        w.append(Metrics(0, "loss", (0, 9), (T0, T0 + 9 * S), (1.0, 0.5)))
        w.append(RunEnd(0, exit_code=0, t_us=T0 + 10 * S))
        w.append(RunEnd(1, exit_code=0, t_us=T0 + 101 * S))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "energy  60 J (0.01667 Wh); mean 6 W over 10.0 s; 6 J/step over 10 steps" in out
    assert "energy  no power record covers the run's time" in out
    assert "  power   energy sources ina3221\n" in out
    assert main(["inspect", "--json", str(path)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert runs[0]["energy_j"] == pytest.approx(60.0) and "energy_j" not in runs[1]


def test_a_logged_epoch_splits_the_energy_like_a_mark() -> None:
    """10 W; the run logs ``epoch`` 0 for 4 s, then 1 for 6 s."""
    recs: list[object] = [RunStart(0, "ee" * 16, "train", "h", 1, t_us=T0)]
    for i in range(11):
        recs.append(rapl(T0 + i * S, i * 10_000_000))
        recs.append(Metrics(0, "epoch", (i,), (T0 + i * S,), (0.0 if i < 4 else 1.0,)))
    recs.append(RunEnd(0, exit_code=0, t_us=T0 + 10 * S))
    e = summarize(recs, format_version="1.3", size=0).runs[0].energy  # type: ignore[arg-type]
    assert e is not None
    assert [(m, t - T0, round(j, 6)) for m, t, j in e.marks] == [
        ("epoch 0", 4 * S, 40.0),
        ("epoch 1 (to the end)", 10 * S, 60.0),
    ]
