"""What the process table and smoothing cost the dashboard, beside what they sit on.

    .venv/bin/python benchmarks/bench_dashboard_extras.py
    .venv/bin/python benchmarks/bench_dashboard_extras.py --fast

Three pairs, each measured in the same run as its anchor:

1. **fold**: 10,000 process samples (two processes of a run with every 1.3 field, as the
   collector sends them: each also goes into its process's own history for the table) beside
   10,000 system samples (a kind whose fold did not change).
2. **process table**: the rows at the cursor of a run with 50 processes and an hour of 1 Hz
   samples, flat and as a tree, beside one redraw of the overview's four charts of the same
   state (what a redraw costs anyway).
3. **smoothing**: one redraw of a chart of 1 million steps with EMA 0.9 after 100 new steps
   (the average is kept per series, so only the new ones are smoothed), beside the same
   redraw without smoothing.
"""

from __future__ import annotations

import time
from typing import Any

import pyperf
from edgescope_tracing import Metrics, ProcessSample, RunStart, SystemSample
from edgescope_tui import views
from edgescope_tui.chartspec import smoothed
from edgescope_tui.processes import process_rows
from edgescope_tui.state import StateBuilder
from edgescope_tui.widgets.chart import draw_rows

COMMAND = ".venv/bin/python benchmarks/bench_dashboard_extras.py"
T0 = 1_795_800_000_000_000
S = 1_000_000


def process_records(n: int) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        pid = 1234 + i % 2
        out.append(
            ProcessSample(
                0,
                pid,
                95.0,
                1 << 30,
                2 << 30,
                12,
                ppid=1 if pid == 1234 else 1234,
                state="S",
                command="python3 train.py",
                t_us=T0 + (i // 2) * S,
            )
        )
    return out


def system_records(n: int) -> list[Any]:
    return [SystemSample(cpu_percent=50.0, mem_used=1 << 30, t_us=T0 + i * S) for i in range(n)]


def fold(loops: int, records: list[Any]) -> float:
    t = time.perf_counter()
    for _ in range(loops):
        b = StateBuilder()
        b.apply(RunStart(0, "aa", "bench", "pi", 1234, t_us=T0))
        for r in records:
            b.apply(r)
        b.freeze()
    return time.perf_counter() - t


def table_state() -> Any:
    b = StateBuilder()
    b.apply(RunStart(0, "aa", "bench", "pi", 1000, t_us=T0))
    for sec in range(3600):
        t = T0 + sec * S
        for k in range(50):
            pid = 1000 + k
            b.apply(
                ProcessSample(
                    0,
                    pid,
                    float(k),
                    (k + 1) << 20,
                    (k + 2) << 20,
                    3,
                    ppid=1000 if k else 1,
                    state="S",
                    command=f"worker {k}",
                    t_us=t,
                )
            )
        if sec % 10 == 0:
            steps = tuple(range(sec * 10, sec * 10 + 100))
            times = tuple(t + i * 1000 for i in range(100))
            b.apply(Metrics(0, "loss", steps, times, tuple(1.0 / (1 + s) for s in steps)))
    return b.freeze()


def rows(loops: int, state: Any, tree: bool) -> float:
    t = time.perf_counter()
    for _ in range(loops):
        process_rows(state, 0, None, tree=tree)
    return time.perf_counter() - t


def overview(loops: int, state: Any) -> float:
    t0, t1 = state.stream.first_us, state.stream.last_us
    t = time.perf_counter()
    for _ in range(loops):
        for spec in views.overview_specs(state, 0, None, t0, t1).values():
            draw_rows(spec, 76, 21)
    return time.perf_counter() - t


def big_chart(n: int) -> tuple[StateBuilder, int]:
    b = StateBuilder()
    b.apply(RunStart(0, "aa", "bench", "pi", 1, t_us=T0))
    for start in range(0, n, 1000):
        steps = tuple(range(start, start + 1000))
        b.apply(
            Metrics(
                0,
                "loss",
                steps,
                tuple(T0 + s * 1000 for s in steps),
                tuple(1.0 / (1 + s) + (s % 7) * 1e-4 for s in steps),
            )
        )
    return b, n


_BIG: dict[float, tuple[StateBuilder, int]] = {}


def redraw(loops: int, weight: float) -> float:
    if weight not in _BIG:  # built once per process: a million steps take a while to fold
        _BIG[weight] = big_chart(1_000_000)
    b, n = _BIG[weight]
    spec = views.metric_spec(b.freeze(), 0, "loss", None)
    draw_rows(smoothed(spec, weight), 76, 21)  # the first smoothing of the whole series
    total = 0.0
    for k in range(loops):
        steps = tuple(range(n + k * 100, n + (k + 1) * 100))
        b.apply(Metrics(0, "loss", steps, tuple(T0 + s * 1000 for s in steps), (0.5,) * 100))
        s = b.freeze()
        t = time.perf_counter()
        draw_rows(smoothed(views.metric_spec(s, 0, "loss", None), weight), 76, 21)
        total += time.perf_counter() - t
    _BIG[weight] = (b, n + loops * 100)
    return total


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3)
    runner.metadata["command"] = COMMAND
    procs, system = process_records(10_000), system_records(10_000)
    state = table_state()
    r = {
        "fold process": runner.bench_time_func("fold 10,000 process samples", fold, procs),
        "fold system": runner.bench_time_func("fold 10,000 system samples", fold, system),
        "rows flat": runner.bench_time_func(
            "process table, 50 processes, flat", rows, state, False
        ),
        "rows tree": runner.bench_time_func("process table, 50 processes, tree", rows, state, True),
        "overview": runner.bench_time_func("overview redraw, same state", overview, state),
        "ema": runner.bench_time_func("1M-step chart redraw, EMA 0.9", redraw, 0.9),
        "raw": runner.bench_time_func("1M-step chart redraw, raw", redraw, 0.0),
    }
    if any(v is None for v in r.values()):
        return  # a worker process
    ms = {k: v.mean() * 1e3 for k, v in r.items()}  # type: ignore[union-attr]
    print()
    print(
        f"  fold, 10,000 records:  process samples {ms['fold process']:.1f} ms"
        f"  beside system samples {ms['fold system']:.1f} ms"
    )
    print(
        f"  process table rows:    flat {ms['rows flat']:.2f} ms, tree {ms['rows tree']:.2f} ms"
        f"  beside an overview redraw {ms['overview']:.2f} ms"
    )
    print(f"  1M-step chart redraw:  EMA 0.9 {ms['ema']:.2f} ms  beside raw {ms['raw']:.2f} ms")
    print(f"  rerun: {COMMAND}")


if __name__ == "__main__":
    main()
