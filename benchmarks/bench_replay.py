"""Replay of a 1 GB trace in the TUI: first view under 1 s, any seek under 200 ms.

    .venv/bin/python benchmarks/bench_replay.py            # 1 GB, generated once and kept
    .venv/bin/python benchmarks/bench_replay.py --size-mb 256 --fast

The trace is generated on first use (about a minute for 1 GB) under
``$TMPDIR/edgescope-bench/`` and reused: a training run of many hours as the SDK and collector
write it (metric batches of 175 steps for four keys each second, GPU, process and system
samples every 100 ms, stack samples every 10 s, an event now and then).

- **first view**: from starting the App on the file until the dashboard has drawn the loss
  curve (headless, 160x48). The rest of the file keeps loading in the background.
- **seek**: the cursor jumps to a random time past what was loaded (so nothing is cached);
  the view is ready when the state folded from the keyframe before that time is drawn.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyperf
from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    RunStart,
    StackFrame,
    StackSamples,
    SystemSample,
    TraceWriter,
)
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources import FileSource
from edgescope_tui.widgets.chart import Chart
from textual.strip import Strip

T0 = 1_795_800_000_000_000
TARGET_FIRST_VIEW = 1.0
TARGET_SEEK = 0.200
COMMAND = ".venv/bin/python benchmarks/bench_replay.py"


def trace_path(size_mb: int) -> Path:
    d = Path(os.environ.get("EDGESCOPE_BENCH_DIR", Path(tempfile.gettempdir()) / "edgescope-bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d / f"replay-{size_mb}M.trace"


def generate(path: Path, size_bytes: int) -> None:
    """Write a realistic long run until the file holds ``size_bytes``."""
    tmp = path.with_suffix(".partial")
    rng = random.Random(7)
    frames = [StackFrame(n, "train.py", i) for i, n in enumerate(("main", "train", "step"))]
    leaves = [
        StackFrame(n, "torch/nn.py", 10 * i)
        for i, n in enumerate(("forward", "backward", "optimizer.step", "dataloader.next"))
    ]
    with TraceWriter(tmp, fsync="never") as w:
        w.append(RunStart(0, "b1gb1gb1", "long-run", "bench", 1, {"batch_size": 256}, t_us=T0))
        second = 0
        step = 0
        loss = 2.3
        while True:
            t = T0 + second * 1_000_000
            steps = tuple(range(step, step + 175))
            times = tuple(t + i * 5_714 for i in range(175))
            values = []
            for _ in steps:
                loss = max(1e-6, loss * 0.99995 + rng.gauss(0, 0.002))
                values.append(loss)
            w.append(Metrics(0, "loss", steps, times, tuple(values), t_us=t))
            w.append(
                Metrics(
                    0,
                    "step_time",
                    steps,
                    times,
                    tuple(0.0057 + rng.random() * 1e-4 for _ in steps),
                    t_us=t,
                )
            )
            w.append(Metrics(0, "lr", steps, times, tuple(1e-3 for _ in steps), t_us=t))
            w.append(
                Metrics(0, "grad_norm", steps, times, tuple(rng.random() for _ in steps), t_us=t)
            )
            for k in range(10):
                tk = t + k * 100_000
                w.append(
                    GpuSample(
                        0,
                        "NVIDIA H200",
                        temp_c=55.0 + rng.random(),
                        power_mw=630_000 + rng.randrange(20_000),
                        power_limit_mw=700_000,
                        sm_clock_mhz=1980,
                        mem_clock_mhz=3201,
                        max_sm_clock_mhz=1980,
                        clock_event_reasons=0,
                        util_gpu=99.0,
                        mem_used=30 << 30,
                        mem_total=141 << 30,
                        t_us=tk,
                    )
                )
                w.append(
                    ProcessSample(
                        0,
                        1,
                        cpu_percent=100.0,
                        rss=(2 << 30) + rng.randrange(1 << 20),
                        rss_peak=3 << 30,
                        t_us=tk,
                    )
                )
                w.append(
                    SystemSample(
                        cpu_percent=12.0 + rng.random(),
                        mem_used=20 << 30,
                        mem_total=64 << 30,
                        t_us=tk,
                    )
                )
            if second % 10 == 0:
                samples = tuple(((*frames, leaf), rng.randrange(1, 200)) for leaf in leaves)
                w.append(StackSamples(0, "python", 10_000, samples, t_us=t))
            if second % 997 == 0:
                w.append(Event("mark", f"checkpoint at step {step}", run=0, t_us=t))
            step += 175
            second += 1
            if second % 256 == 0 and os.path.getsize(tmp) >= size_bytes:
                break
    tmp.rename(path)


def ensure_trace(size_mb: int) -> Path:
    path = trace_path(size_mb)
    if not path.exists():
        print(f"generating {path} ({size_mb} MB), once...", file=sys.stderr)
        t = time.perf_counter()
        generate(path, size_mb << 20)
        print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


class _Painted:
    """Notes when the loss chart is painted with data: what the user sees, not app idleness."""

    def __init__(self) -> None:
        self.spec: object = None
        self.original = Chart.render_line

        def render_line(chart: Chart, y: int) -> Strip:
            strip = self.original(chart, y)
            spec = chart.spec
            if (
                chart.id == "chart-loss"
                and spec is not None
                and spec.lines
                and (spec.lines[0].end or 0) > 0
            ):
                self.spec = spec
            return strip

        Chart.render_line = render_line  # type: ignore[method-assign]

    def restore(self) -> None:
        Chart.render_line = self.original  # type: ignore[method-assign]

    async def wait(self, ready: Callable[[], bool] = lambda: True) -> None:
        """Until the loss chart is painted (with a spec for which ``ready`` holds)."""
        while self.spec is None or not ready():
            await asyncio.sleep(0.001)


async def first_view(path: Path) -> float:
    painted = _Painted()
    try:
        start = time.perf_counter()
        app = EdgescopeApp([FileSource(path)])
        async with app.run_test(size=(160, 48)):
            await painted.wait()
            elapsed = time.perf_counter() - start
    finally:
        painted.restore()
    return elapsed


async def seeks(path: Path, n: int, seed: int) -> list[float]:
    """Time ``n`` seeks to random times past what the App has loaded."""
    rng = random.Random(seed)
    app = EdgescopeApp([FileSource(path)], max_points=100_000)
    out: list[float] = []
    painted = _Painted()
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await painted.wait()
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            feed = screen.feed
            while not feed.complete:
                await pilot.pause(0.01)
            span = feed.span
            assert span is not None and feed.state.stream.last_us is not None
            lo = feed.state.stream.last_us
            chart = screen.query_one("#chart-loss", Chart)
            for _ in range(n):
                target = rng.randrange(lo, span[1])
                t = time.perf_counter()
                screen.go_to(target)
                painted.spec = None
                # Drawn: the loss chart painted from the window folded for this target.

                def drawn(target: int = target) -> bool:
                    return (
                        feed.window_target == target
                        and screen.shown is feed.window
                        and painted.spec is chart.spec
                    )

                await painted.wait(drawn)
                out.append(time.perf_counter() - t)
    finally:
        painted.restore()
    return out


def bench_first_view(loops: int, path: Path) -> float:
    total = 0.0
    for _ in range(loops):
        total += asyncio.run(first_view(path))
    return total


def bench_seek(loops: int, path: Path) -> float:
    return sum(asyncio.run(seeks(path, loops, seed=loops)))


def _worker_args(cmd: list[str], args: object) -> None:
    cmd.extend(["--size-mb", str(args.size_mb)])  # type: ignore[attr-defined]


def main() -> None:
    runner = pyperf.Runner(processes=3, values=3, warmups=1, add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--size-mb", type=int, default=1024)
    runner.argparser.set_defaults(loops=1)
    args = runner.parse_args()
    path = ensure_trace(args.size_mb)
    size = path.stat().st_size
    fv = runner.bench_time_func(f"first view ({size >> 20} MB trace)", bench_first_view, path)
    sk = runner.bench_time_func(f"seek ({size >> 20} MB trace)", bench_seek, path)
    if args.worker or fv is None or sk is None:
        return
    worst = max(asyncio.run(seeks(path, 20, seed=1)))
    rows = [
        ("first view", TARGET_FIRST_VIEW, fv.mean(), fv.stdev() if fv.get_nvalue() > 1 else 0.0),
        ("seek (mean)", TARGET_SEEK, sk.mean(), sk.stdev() if sk.get_nvalue() > 1 else 0.0),
        ("seek (worst of 20)", TARGET_SEEK, worst, 0.0),
    ]
    print()
    print(f"replay of {path} ({size / 1e9:.2f} GB)")
    print(f"{'':22} {'target':>10} {'measured':>18}  ok")
    for name, target, mean, std in rows:
        measured = f"{mean * 1e3:.1f} ms" + (f" ± {std * 1e3:.1f}" if std else "")
        print(
            f"{name:22} {target * 1e3:>7.0f} ms {measured:>18}  {'yes' if mean < target else 'NO'}"
        )
    print(f"\nrerun: {COMMAND} --size-mb {args.size_mb}")


if __name__ == "__main__":
    main()
