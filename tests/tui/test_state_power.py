"""Power records in the TUI: the fold's power per source and energy, the Overview's J/step
beside the step time and the System tab's power lines, against what ``inspect`` says."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgescope_tracing import (
    CpuFreq,
    Metrics,
    PowerReading,
    PowerSample,
    RunEnd,
    RunStart,
    ThermalSample,
    TraceReader,
)
from edgescope_tracing.summary import summarize
from edgescope_tui.state import fold_all
from edgescope_tui.views import step_spec, system_specs

S = 1_000_000
T0 = 1_795_800_000 * S
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "h200-mlp-training.est"


def laptop_run() -> list[object]:
    """A laptop at 12 W (RAPL psys) with its package at 9 W of a 15 W limit, for 20 s; a run
    of 200 steps from 5 s to 15 s."""
    recs: list[object] = []
    for i in range(21):
        t = T0 + i * S
        recs.append(
            PowerSample(
                (
                    PowerReading(
                        "rapl", "package-0", i * 9_000_000, 9_000_000, 1 << 38, 15_000_000, False
                    ),
                    PowerReading("rapl", "psys", i * 12_000_000, 12_000_000, 1 << 38),
                ),
                t_us=t,
            )
        )
        if i == 5:
            recs.append(RunStart(0, "ab" * 16, "train", "laptop", 9, t_us=t))
        if 5 <= i < 15:
            steps = tuple(range((i - 5) * 20, (i - 4) * 20))
            times = tuple(t + k * 50_000 for k in range(20))
            recs.append(Metrics(0, "step_time", steps, times, (0.05,) * 20))
        if i == 15:
            recs.append(RunEnd(0, exit_code=0, t_us=t))
    return recs


def test_power_and_energy_fold_as_inspect_counts_them() -> None:
    recs = laptop_run()
    state = fold_all(recs)  # type: ignore[arg-type]
    p = state.power
    assert set(p.sources) == {"rapl"} and p.sources["rapl"].last == pytest.approx(12.0)
    assert p.limits == {"rapl package-0": 15.0}
    assert p.energy_j.last == pytest.approx(240.0)  # 12 W for 20 s: psys alone counts
    per_step = state.joules_per_step(0)
    assert per_step == pytest.approx(12 * 10 / 200)
    summary = summarize(recs, format_version="1.3", size=0)  # type: ignore[arg-type]
    assert summary.runs[0].energy is not None
    assert per_step == pytest.approx(summary.runs[0].energy.per_step_j)


def test_the_overview_shows_j_per_step_beside_the_step_time() -> None:
    state = fold_all(laptop_run())  # type: ignore[arg-type]
    assert step_spec(state, 0, None).subtitle.startswith("0.6 J/step · 20.0 steps/s")
    # at the cursor halfway through the run, its energy and steps so far
    assert state.joules_per_step(0, T0 + 10 * S) == pytest.approx(0.6, rel=0.05)
    power = system_specs(state, 0, None, T0, T0 + 20 * S)["power"]
    assert [line.label for line in power.lines] == ["rapl"]
    assert [(y, label) for y, label, _ in power.hlines] == [(15.0, "package-0 limit 15 W")]
    assert power.subtitle == "energy 240 J"


def test_a_run_without_power_shows_no_j_per_step() -> None:
    recs = [r for r in laptop_run() if not isinstance(r, PowerSample)]
    state = fold_all(recs)  # type: ignore[arg-type]
    assert state.joules_per_step(0) is None
    assert "J/step" not in step_spec(state, 0, None).subtitle


def test_the_h200_example_gives_the_same_j_per_step_as_inspect() -> None:
    with TraceReader(EXAMPLE) as r:
        recs = list(r)
    state = fold_all(recs)
    summary = summarize(recs, format_version="1.0", size=0)
    (run,) = state.runs
    energy = summary.runs[0].energy
    assert energy is not None and energy.per_step_j is not None
    assert state.joules_per_step(run) == pytest.approx(energy.per_step_j, rel=1e-9)
    assert 3.0 < energy.per_step_j < 5.0


def test_a_power_limit_holding_the_clocks_is_a_board_throttled_period() -> None:
    """Seconds 3-6: the package at 14.9 W of its 15 W limit, the CPUs at 1.2 of 4.7 GHz."""
    recs: list[object] = []
    for i in range(10):
        t = T0 + i * S
        capped = 3 <= i <= 6
        recs.append(
            ThermalSample(
                freqs=tuple(
                    CpuFreq(c, 1_200_000 if capped else 4_500_000, max_khz=4_700_000)
                    for c in range(4)
                ),
                t_us=t,
            )
        )
        watts = 14_900_000 if capped else 6_000_000
        pkg = PowerReading("rapl", "package-0", i * watts, watts, 1 << 38, 15_000_000)
        recs.append(PowerSample((pkg,), t_us=t))
    state = fold_all(recs)  # type: ignore[arg-type]
    spans = [s for s in state.spans() if s.source == "board"]
    assert [(s.start_us - T0, s.end_us - T0, s.reasons) for s in spans] == [
        (3 * S, 7 * S, ("power_cap",))
    ]
    clocks = system_specs(state, 0, None, T0, T0 + 10 * S)["clocks"]
    assert [(b.x0 - T0, b.label) for b in clocks.bands] == [(3 * S, "board")]
