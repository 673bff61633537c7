"""The live dashboard while 10,000 records/s arrive: it keeps up and stays responsive.

    .venv/bin/python benchmarks/bench_live_ui.py              # 10 s live session
    .venv/bin/python benchmarks/bench_live_ui.py --seconds 5 --rate 10000 --fast

Two parts:

1. **Drawing cost against history** (pyperf): one redraw of the overview (specs for the four
   charts, each drawn at 160x48) with 10 thousand, 100 thousand and 1 million points of
   history. Charts downsample to their width with a min/max block summary, so the figures
   should stay flat as history grows.
2. **A live session** (one run, figures printed beside the targets): a real collector
   (``edgescope collector`` on loopback) takes a producer process's stream on its ingest socket
   at ``--rate`` records/s; the App, headless, follows the collector over TCP through the live
   source. Measured: the records/s the App folded, how late a 10 ms timer on the App's event
   loop fired (the lag a keypress would see), and how long a keypress took to switch tabs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyperf
from edgescope_tracing import GpuSample, Metrics, RunStart
from edgescope_tui import views
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.discovery import TcpTarget
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources.live import live_source
from edgescope_tui.state import StateBuilder
from edgescope_tui.widgets.chart import draw_rows

COMMAND = ".venv/bin/python benchmarks/bench_live_ui.py"
T0 = 1_795_800_000_000_000

PRODUCER = r"""
import socket, sys, time
from edgescope_tracing import Metrics, RunStart, StreamEncoder
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
enc = StreamEncoder()
enc.add(RunStart(0, "11ve11ve", "live-bench", "bench", 1, {"batch_size": 64},
                 t_us=int(time.time() * 1e6)))
s.sendall(enc.take())
keys = ("loss", "step_time", "lr", "grad_norm")
tick = 0.01
per_tick = max(1, int(rate * tick))
step = 0
sent = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    now_us = int(time.time() * 1e6)
    for i in range(per_tick):
        key = keys[i % 4]
        if key == "loss":
            step += 1
        value = 2.0 / (1 + step * 1e-3) if key == "loss" else 0.005
        enc.add(Metrics(0, key, (step,), (now_us + i,), (value,), t_us=now_us + i))
    s.sendall(enc.take())
    sent += per_tick
    delay = start + (sent / rate) - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(sent, time.monotonic() - start, flush=True)
s.close()
"""


# --- 1. drawing cost against history ------------------------------------------------------


def history_state(points: int) -> Any:
    """A state with ``points`` steps of four metrics and GPU samples at a tenth of that."""
    b = StateBuilder()
    b.apply(RunStart(0, "aa", "history", "bench", 1, {"batch_size": 64}, t_us=T0))
    batch = 1000
    for start in range(0, points, batch):
        steps = tuple(range(start, start + batch))
        times = tuple(T0 + s * 5_000 for s in steps)
        for key in ("loss", "step_time", "cuda_alloc", "cuda_max_alloc"):
            values = tuple(1.0 / (1 + s) + (s % 7) * 1e-4 for s in steps)
            b.apply(Metrics(0, key, steps, times, values, t_us=times[0]))
        for s in steps[::10]:
            b.apply(GpuSample(0, "gpu", temp_c=50.0 + s % 5, power_mw=600_000, t_us=T0 + s * 5_000))
    return b.freeze()


def redraw(screen_specs: Any, width: int = 76, height: int = 21) -> None:
    for spec in screen_specs:
        draw_rows(spec, width, height)


def overview_specs(state: Any) -> list[Any]:
    """The overview's four chart specs, as the dashboard builds them."""
    t0, t1 = state.stream.first_us, state.stream.last_us
    return list(views.overview_specs(state, 0, None, t0, t1).values())


def bench_redraw(loops: int, specs: list[Any]) -> float:
    t = time.perf_counter()
    for _ in range(loops):
        redraw(specs)
    return time.perf_counter() - t


# --- 2. a live session ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the collector exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the collector did not start listening")


async def live_session(port: int, ingest: Path, rate: int, seconds: float) -> dict[str, float]:
    source = live_source(TcpTarget("127.0.0.1", port), idle_timeout=30.0)
    app = EdgescopeApp([source])
    out: dict[str, float] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        producer = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(ingest), str(rate), str(seconds)],
            stdout=subprocess.PIPE,
        )
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        feed = screen.feed
        lags: list[float] = []
        keys: list[float] = []
        start_records = feed.records
        start = time.perf_counter()
        tabs = screen.query_one("#tabs")
        tab = "overview"
        next_key = start + 0.5
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)
            if time.perf_counter() >= next_key:
                tab = "system" if tab == "overview" else "overview"
                pressed = time.perf_counter()
                app.simulate_key("3" if tab == "system" else "1")
                while tabs.active != tab:  # type: ignore[attr-defined]
                    await asyncio.sleep(0.001)
                keys.append(time.perf_counter() - pressed)
                next_key = time.perf_counter() + 0.5
        elapsed = time.perf_counter() - start
        folded = feed.records - start_records
        sent_line = producer.communicate(timeout=30)[0].decode().split()
        lags.sort()
        keys.sort()
        out = {
            "sent_per_s": float(sent_line[0]) / float(sent_line[1]),
            "folded_per_s": folded / elapsed,
            "lag_p50": lags[len(lags) // 2],
            "lag_p99": lags[(len(lags) * 99) // 100],
            "key_p50": keys[len(keys) // 2],
            "key_max": keys[-1],
            "records": float(feed.records),
        }
    return out


def run_live(rate: int, seconds: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="edgescope-live-bench-"))
    port = _free_port()
    ingest = tmp / "ingest.sock"
    collector = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "edgescope"),
            "collector",
            "--listen",
            f"127.0.0.1:{port}",
            "--ingest",
            str(ingest),
            "--data-dir",
            str(tmp / "data"),
            "--no-mdns",
            "--log-level",
            "error",
        ],
        env={**os.environ, "EDGESCOPE_SOCKET": str(ingest)},
    )
    try:
        _wait_port(port, collector)
        return asyncio.run(live_session(port, ingest, rate, seconds))
    finally:
        collector.terminate()
        collector.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


def _worker_args(cmd: list[str], args: Any) -> None:
    cmd.extend(["--rate", str(args.rate), "--seconds", str(args.seconds)])


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--rate", type=int, default=10_000)
    runner.argparser.add_argument("--seconds", type=float, default=10.0)
    args = runner.parse_args()
    results = {}
    for points in (10_000, 100_000, 1_000_000):
        specs = overview_specs(history_state(points))
        results[points] = runner.bench_time_func(
            f"overview redraw, {points:,} points of history", bench_redraw, specs
        )
    if args.worker or any(r is None for r in results.values()):
        return
    live = run_live(args.rate, args.seconds)
    print()
    print("drawing cost against history (four charts of the overview, 76x21 each)")
    for points, bench in results.items():
        print(f"  {points:>9,} points   {bench.mean() * 1e3:7.2f} ms ± {bench.stdev() * 1e3:.2f}")
    print()
    print(f"live session: {args.seconds:g} s, collector on loopback, producer at {args.rate:,}/s")
    rows = [
        ("records/s sent", f">= {args.rate:,}", f"{live['sent_per_s']:,.0f}", True),
        (
            "records/s folded by the App",
            ">= 95% of sent",
            f"{live['folded_per_s']:,.0f}",
            live["folded_per_s"] >= 0.95 * args.rate,
        ),
        (
            "event-loop lag p50",
            "< 50 ms",
            f"{live['lag_p50'] * 1e3:.1f} ms",
            live["lag_p50"] < 0.05,
        ),
        (
            "event-loop lag p99",
            "< 100 ms",
            f"{live['lag_p99'] * 1e3:.1f} ms",
            live["lag_p99"] < 0.1,
        ),
        (
            "keypress to tab switch p50",
            "< 100 ms",
            f"{live['key_p50'] * 1e3:.1f} ms",
            live["key_p50"] < 0.1,
        ),
        (
            "keypress to tab switch max",
            "< 200 ms",
            f"{live['key_max'] * 1e3:.1f} ms",
            live["key_max"] < 0.2,
        ),
    ]
    print(f"  {'':30} {'target':>12} {'measured':>12}  ok")
    for name, target, measured, ok in rows:
        print(f"  {name:30} {target:>12} {measured:>12}  {'yes' if ok else 'NO'}")
    print(f"\nrerun: {COMMAND} --rate {args.rate} --seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
