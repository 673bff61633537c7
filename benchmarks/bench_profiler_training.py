"""What profiling costs a training loop: bare, edgescope ``profile=True``, and py-spy, at 100 Hz.

The loop is the NumPy MLP of ``edgescope.demo.job`` (32 → 128 → 4, SGD with momentum, batches
of 256: matrix products in BLAS with the GIL released, and the Python around them), one
thread of BLAS (``OPENBLAS_NUM_THREADS=1``, so that the machine's other work disturbs it less).
Each measurement is a fresh process that trains for ``--seconds`` of wall time and reports the
median time of one step:

- ``bare``: the loop alone;
- ``edgescope``: the loop inside ``edgescope.init(profile=True)`` (100 Hz, the default
  driver, the run written to a file as without a collector);
- ``py-spy``: the bare loop under ``py-spy record -r 100`` (its default, blocking mode: it
  pauses the process to read each sample), started by py-spy as a user would.

The three run by turns, each round in a new order, so that a drift of the machine's speed
spreads over all three; the verdict is the median over rounds of each one's ratio to the bare
run of the same round, with the spread (lowest and highest round). pyperf does not fit here:
py-spy has to start (or attach to) the very process it samples, which pyperf's workers are not
made for.

Rerun::

    .venv/bin/python benchmarks/bench_profiler_training.py            # about two minutes
    .venv/bin/python benchmarks/bench_profiler_training.py --fast     # about 40 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("bare", "edgescope", "py-spy")
RERUN = "  .venv/bin/python benchmarks/bench_profiler_training.py"

WORKER = """
import json, os, statistics, sys, time
import numpy as np
from edgescope.demo.job import NumpyBackend

mode, seconds = sys.argv[1], float(sys.argv[2])
rng = np.random.default_rng(0)
backend = NumpyBackend(rng)
batches = [rng.integers(0, len(backend.x_train), 256) for _ in range(64)]
if mode == "edgescope":
    import edgescope
    edgescope.init(name="bench-training", profile=True, profile_hz=100)
for i in range(30):
    backend.step(batches[i % 64], 0.05)
times = []
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    t = time.perf_counter()
    backend.step(batches[i % 64], 0.05)
    times.append(time.perf_counter() - t)
    i += 1
print(json.dumps({"median": statistics.median(times), "steps": len(times)}))
"""


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if os.access(found, os.X_OK) else None


def measure(mode: str, seconds: float, tmp: Path, spy: str | None) -> float:
    worker = tmp / "worker.py"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(EDGESCOPE_DIR=str(tmp / "runs"), XDG_RUNTIME_DIR=str(tmp))
    env.pop("EDGESCOPE_SOCKET", None)
    argv = [sys.executable, str(worker), mode, str(seconds)]
    if mode == "py-spy":
        assert spy is not None
        argv = [spy, "record", "-r", "100", "-f", "raw", "-o", str(tmp / "spy.txt"), "--", *argv]
        argv[-2] = "bare"
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=300)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("{"))
    return float(json.loads(line)["median"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="3 rounds of 2 s (default 6 of 5 s)")
    ap.add_argument("--seconds", type=float, help="seconds of training per measurement")
    ap.add_argument("--rounds", type=int, help="rounds of the three measurements")
    args = ap.parse_args()
    seconds = args.seconds or (2.0 if args.fast else 5.0)
    rounds = args.rounds or (3 if args.fast else 6)
    spy = py_spy()
    modes = MODES if spy else MODES[:2]
    got: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-prof-train-") as d:
        tmp = Path(d)
        (tmp / "worker.py").write_text(WORKER)
        t0 = time.monotonic()
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                got[m].append(measure(m, seconds, tmp, spy))
        took = time.monotonic() - t0
    print(f"NumPy MLP training step, {rounds} rounds of {seconds:g} s each, sampling at 100 Hz")
    print(f"{'':<28}{'step (ms)':>10}{'vs bare':>10}{'rounds (lowest .. highest)':>30}")
    for m in modes:
        ratios = [x / b - 1 for x, b in zip(got[m], got["bare"], strict=True)]
        label = {
            "bare": "bare",
            "edgescope": "edgescope profile=True",
            "py-spy": "py-spy record -r 100",
        }[m]
        spread = f"{min(ratios) * 100:+.1f} .. {max(ratios) * 100:+.1f} %"
        print(
            f"{label:<28}{statistics.median(got[m]) * 1e3:>10.3f}"
            f"{statistics.median(ratios) * 100:>+9.1f}%{spread:>30}"
        )
    if not spy:
        print("py-spy is not installed (pip install py-spy): its row is left out")
    print(f"\n({took:.0f} s) rerun:\n{RERUN}{' --fast' if args.fast else ''}")


if __name__ == "__main__":
    main()
