"""Opening a device mid-run: how long until the dashboard's source is LIVE, from the run's start.

A real collector (``python -m edgescope_collector``) takes a run of STEPS steps (four metrics
a step, one record each) from a producer on its ingest socket that stays connected: the run is
still active, so the collector's latest keyframe restates it. Each loop
opens the collector through the TUI's live source and reads until it says ``live``:

- ``latest keyframe`` (the anchor): what a live client did before issue 15, joining at the
  collector's latest keyframe: fast, and only the steps after it;
- ``from the run's start``: the TUI's source now (``from_start``): it learns where the run
  starts from that keyframe, connects again there and reads the run's history, then is live.

The cost of showing the whole run is the reading of its history (one more handshake besides):
it grows with the run, at the live source's rate (``bench_live.py``).

Rerun::

    .venv/bin/python benchmarks/bench_open_midrun.py --fast
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyperf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tui"))

STEPS = 20_000
KEYS = ("loss", "step_time", "lr", "grad_norm")
RERUN = "  .venv/bin/python benchmarks/bench_open_midrun.py --fast"
_state: dict[str, Any] = {}


def _setup() -> dict[str, Any]:
    """Once per process: a collector, and a producer on its ingest socket that has logged the
    run's STEPS steps and stays connected (the run goes on)."""
    if _state:
        return _state
    from edgescope_tracing import Metrics, RunStart, StreamEncoder
    from edgescope_tracing.protocol import Client
    from sshd.collector import Collector  # tests/tui/sshd

    base = Path(tempfile.mkdtemp(prefix="edgescope-bench-midrun-"))
    atexit.register(shutil.rmtree, base, True)
    collector = Collector(base / "collector", interval=3600)
    collector.start()
    atexit.register(collector.stop)
    enc = StreamEncoder()
    t0 = 1_795_800_000_000_000
    enc.add(RunStart(0, "b1d00000", "midrun-bench", "bench", 1, t_us=t0))
    for step in range(STEPS):
        t = t0 + step * 10_000
        for i, key in enumerate(KEYS):
            enc.add(Metrics(0, key, (step,), (t + i,), (1.0 / (1 + step),)))
    producer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 10
    while True:
        try:
            producer.connect(str(collector.ingest))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    producer.sendall(enc.take())
    atexit.register(producer.close)
    records = 1 + STEPS * len(KEYS)
    while True:  # until the collector's store holds all of it
        with Client.connect("127.0.0.1", collector.port) as c:
            if c.welcome.next_seq >= records:
                break
        if time.monotonic() > deadline + 20:
            raise RuntimeError("the collector did not store the run")
        time.sleep(0.1)
    _state["collector"] = collector
    _state["producer"] = producer
    return _state


async def _until_live(from_start: bool) -> int:
    """Open the collector as the TUI does; the loss steps read by the time it is live."""
    from edgescope_tracing import Metrics
    from edgescope_tui.sources import Status
    from edgescope_tui.sources.live import LiveSource, TcpOpener

    port = _setup()["collector"].port
    source = LiveSource(TcpOpener("127.0.0.1", port), from_start=from_start)
    steps = 0
    try:
        async for item in source.stream():
            if isinstance(item, Status):
                if item.state == "live":
                    break
                if item.state not in ("connecting", "history"):
                    raise RuntimeError(f"{item.state}: {item.message}")
            elif isinstance(item, Metrics) and item.key == "loss":
                steps += len(item.steps)
    finally:
        await source.close()
    return steps


def _timed(from_start: bool) -> Any:
    def bench(loops: int) -> float:
        _setup()
        total = 0.0
        for _ in range(loops):
            t = time.perf_counter()
            steps = asyncio.run(_until_live(from_start))
            total += time.perf_counter() - t
            assert steps == STEPS or not from_start, steps
        return total

    return bench


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = f"opening a collector mid-run ({STEPS:,} steps held)"
    results = {
        "latest keyframe": runner.bench_time_func("latest keyframe", _timed(False)),
        "from the run's start": runner.bench_time_func("from the run's start", _timed(True)),
    }
    if runner.args.worker or any(b is None for b in results.values()):
        return
    records = STEPS * len(KEYS)
    anchor = results["latest keyframe"].median()
    shown = {
        "latest keyframe": asyncio.run(_until_live(False)),
        "from the run's start": asyncio.run(_until_live(True)),
    }
    print()
    print(f"opening a real collector mid-run: {STEPS:,} steps ({records:,} records) held")
    print(f"{'joining at':<24}{'ms to LIVE':>11}{'steps shown':>13}{'x anchor':>10}")
    for name, b in results.items():
        t = b.median()
        print(f"{name:<24}{t * 1e3:>11.1f}{shown[name]:>13,}{t / anchor:>10.1f}")
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
