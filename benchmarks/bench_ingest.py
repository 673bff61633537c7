"""The collector's ingest rate: SDK runs streaming into a real collector process, all stored.

pyperf benchmarks in the same run (each value is one whole batch of runs, from the first
``init`` to the last ``finish``; ``finish`` returns once the collector has acknowledged the
run's end, that is once every value is written to its segment file):

- ``1 run x 1,000,000 values``: one process logging one-key values as fast as Python goes;
- ``20 runs x 50,000 values at once``: 20 forked processes, each its own run and connection.

The figure is time per value; values/s is its inverse. Then, outside pyperf, a check run on a
fresh collector: both batches again, the collector stopped, and every run's values counted in
its store (they must all be there).

Rerun::

    .venv/bin/python benchmarks/bench_ingest.py --fast
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyperf

N = 1_000_000
RUNS = 20
PER_RUN = 50_000
RERUN = "  .venv/bin/python benchmarks/bench_ingest.py --fast"
_state: dict[str, Any] = {}


class _Collector:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        atexit.register(shutil.rmtree, self.tmp, True)
        self.data = self.tmp / "data"
        self.ingest = self.tmp / "run" / "ingest.sock"
        log = self.tmp / "collector.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = [sys.executable, "-m", "edgescope_collector", "--listen", f"127.0.0.1:{port}"]
        args += ["--data-dir", str(self.data), "--ingest", str(self.ingest), "--no-mdns"]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(args, stderr=err)
        atexit.register(self.stop)
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench_ingest: the collector did not start: {log.read_text()}")
            time.sleep(0.05)
        os.environ["EDGESCOPE_SOCKET"] = str(self.ingest)
        os.environ["EDGESCOPE_DIR"] = str(self.tmp / "fallback")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def _collector() -> _Collector:
    if "c" not in _state:
        _state["c"] = _Collector()
    c: _Collector = _state["c"]
    return c


def _one_run(name: str, n: int) -> None:
    import edgescope

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        run = edgescope.init(name=name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    if run.collector is None:
        raise SystemExit("bench_ingest: the SDK did not reach the collector")
    log = edgescope.log
    for i in range(n):
        log({"loss": 0.5}, step=i)
    edgescope.finish(0)
    if run.path is not None or run.dropped:
        raise SystemExit(f"bench_ingest: run {name} fell back to a file or dropped values")


def _many_runs(tag: str) -> None:
    kids = []
    for k in range(RUNS):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _one_run(f"{tag}-{k}", PER_RUN)
            except BaseException:
                code = 1
            os._exit(code)
        kids.append(pid)
    bad = sum(os.waitpid(p, 0)[1] != 0 for p in kids)
    if bad:
        raise SystemExit(f"bench_ingest: {bad} of {RUNS} producer processes failed")


def bench_one(loops: int) -> float:
    _collector()
    total = 0.0
    for i in range(loops):
        t0 = time.perf_counter()
        _one_run(f"one-{os.getpid()}-{i}", N)
        total += time.perf_counter() - t0
    return total


def bench_many(loops: int) -> float:
    _collector()
    total = 0.0
    for i in range(loops):
        t0 = time.perf_counter()
        _many_runs(f"many-{os.getpid()}-{i}")
        total += time.perf_counter() - t0
    return total


def check() -> list[tuple[str, int]]:
    """A fresh collector, both batches, then the values of each run counted in its store."""
    from edgescope_tracing import Metrics, RunStart, TraceReader

    c = _Collector()
    _one_run("check-one", N)
    _many_runs("check-many")
    c.stop()
    names: dict[int, str] = {}
    counts: dict[str, int] = {}
    for seg in sorted(c.data.glob("seg-*.est")):
        with TraceReader(seg) as r:
            for rec in r:
                if isinstance(rec, RunStart):
                    names[rec.run] = rec.name
                elif isinstance(rec, Metrics) and rec.run in names:
                    counts[names[rec.run]] = counts.get(names[rec.run], 0) + len(rec.values)
    return sorted(counts.items())


def main() -> None:
    runner = pyperf.Runner(values=3, processes=1, warmups=0, loops=1)
    runner.metadata["description"] = "SDK runs into a real collector, per value stored"
    benches = [
        runner.bench_time_func("1 run x 1,000,000 values", bench_one, inner_loops=N),
        runner.bench_time_func(
            f"{RUNS} runs x {PER_RUN:,} values at once", bench_many, inner_loops=RUNS * PER_RUN
        ),
    ]
    if runner.args.worker or any(b is None for b in benches):
        return
    print()
    print(f"{'into one collector, acknowledged':<40}{'us/value':>9}{'values/s':>12}")
    for b in benches:
        v = b.median()  # type: ignore[union-attr]
        print(f"{b.get_name():<40}{v * 1e6:>9.3f}{1 / v:>12,.0f}")  # type: ignore[union-attr]
    counts = check()
    one = dict(counts).get("check-one", 0)
    many = [v for k, v in counts if k.startswith("check-many")]
    full = one == N and len(many) == RUNS and all(v == PER_RUN for v in many)
    print(
        f"check on a fresh collector: 1 run {one:,} of {N:,} values stored; {len(many)} runs "
        f"of {RUNS}, {sum(many):,} of {RUNS * PER_RUN:,} values stored: "
        f"{'all there' if full else 'VALUES MISSING'}"
    )
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
