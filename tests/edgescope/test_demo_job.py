"""The demo's training job, run in-process: each phase shows what it is there to show."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgescope_tracing import Event, Metrics, RunEnd, TraceReader

from edgescope.demo.job import PHASES, train


def test_phases_show_in_the_logged_values() -> None:
    rows: list[tuple[str, int, dict[str, float]]] = []
    marks: list[str] = []
    phase = [""]

    def mark(text: str) -> None:
        marks.append(text)
        phase[0] = text.split(":")[0].removeprefix("phase ")

    t0 = time.monotonic()
    result = train(3.0, lambda v, s: rows.append((phase[0], s, dict(v))), mark, seed=1, leak_mb=24)
    assert 2.9 < time.monotonic() - t0 < 6.0
    assert [m.split(":")[0] for m in marks] == [f"phase {p.name}" for p in PHASES]
    by = {p.name: [v for ph, _, v in rows if ph == p.name and "loss" in v] for p in PHASES}
    assert all(len(v) >= 3 for v in by.values()), {k: len(v) for k, v in by.items()}
    steps = [s for _, s, v in rows if "loss" in v]
    assert steps == list(range(len(steps))) and result.steps == len(steps)

    def med(name: str, key: str) -> float:
        return statistics.median(v[key] for v in by[name])

    # the lr spike makes the loss jump; recovery brings it down again
    assert by["lr-spike"][0]["lr"] == 15 * by["warm-up"][0]["lr"]
    assert max(v["loss"] for v in by["lr-spike"]) > 2 * med("memory-growth", "loss")
    assert med("lr-spike", "grad_norm") > med("memory-growth", "grad_norm")
    assert by["recovery"][-1]["loss"] < max(v["loss"] for v in by["lr-spike"])
    # the CPU-heavy phase makes steps slower
    assert med("cpu-heavy", "step_time") > 1.5 * med("warm-up", "step_time")
    # memory kept grows through its phase to the cap and is freed afterwards
    held = [v["held_mb"] for v in by["memory-growth"]]
    assert held == sorted(held) and 16 < held[-1] <= 24
    assert result.peak_held_mb == held[-1]
    assert all(v["held_mb"] == 0 for v in by["recovery"] + by["warm-up"])
    # held-out accuracy is logged every 25 steps and learning happened
    acc = [v["accuracy"] for _, _, v in rows if "accuracy" in v]
    assert len(acc) >= len(steps) // 25 and result.final_accuracy > 0.5


def test_the_job_alone_writes_every_step_through_the_sdk(tmp_path: Path) -> None:
    # no collector: the SDK writes the trace itself; every step logged must be in it, across
    # the phase marks (a mark between metric values once lost the values after it)
    env = dict(os.environ)
    env["EDGESCOPE_SOCKET"] = str(tmp_path / "no-collector.sock")
    env["EDGESCOPE_DIR"] = str(tmp_path / "runs")
    env["OPENBLAS_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "edgescope.demo.job", "--duration", "2", "--leak-mb", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (trace,) = (tmp_path / "runs").iterdir()
    with TraceReader(trace) as r:
        recs = list(r)
    marks = [e for e in recs if isinstance(e, Event) and e.kind == "mark"]
    assert len(marks) == len(PHASES)
    for key in ("loss", "lr", "step_time", "grad_norm", "held_mb"):
        steps = [s for m in recs if isinstance(m, Metrics) and m.key == key for s in m.steps]
        assert steps == list(range(len(steps))), key
        assert len(steps) > 100
    (end,) = [e for e in recs if isinstance(e, RunEnd)]
    assert end.exit_code == 0 and end.dropped == 0
