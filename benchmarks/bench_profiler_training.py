"""What profiling costs a training loop: bare, edgescope ``profile=True``, and py-spy, at 100 Hz.

Two jobs (``--job``):

- ``torch`` (the default, where PyTorch is installed): the structure of pytorch/examples'
  MNIST on generated data (no download): its ``Net`` (two convolutions, dropout, two linear
  layers, log-softmax), Adadelta, batches of 64 from a ``DataLoader`` with ``num_workers=2``
  (worker processes, and the queue feeder threads that wait in ``Condition.wait``) over
  60 000 random 1x28x28 images; one intra-op thread (``torch.set_num_threads(1)``, so that
  the machine's other work disturbs it less);
- ``numpy``: the NumPy MLP of ``edgescope.demo.job`` (32 → 128 → 4, SGD with momentum,
  batches of 256), one thread of BLAS.

Each measurement is a fresh process that trains for ``--seconds`` of wall time after a
warm-up and reports the median time of one step and its peak RSS (``VmHWM``, the training
process; the DataLoader's workers are processes of their own):

- ``bare``: the loop alone;
- ``edgescope``: the loop inside ``edgescope.init(profile=True)`` (100 Hz, the default
  driver, the run written to a file as without a collector), called before the model and the
  DataLoader are made, as at the top of a script;
- ``py-spy``: the bare loop under ``py-spy record -r 100`` (its default, blocking mode: it
  pauses the process to read each sample), started by py-spy as a user would.

The three run by turns, each round in a new order, so that a drift of the machine's speed
spreads over all three; the verdict is the median over rounds of each one's ratio to the bare
run of the same round, with the spread (lowest and highest round). pyperf does not fit here:
py-spy has to start (or attach to) the very process it samples, which pyperf's workers are not
made for.

Rerun::

    .venv/bin/python benchmarks/bench_profiler_training.py            # about four minutes
    .venv/bin/python benchmarks/bench_profiler_training.py --fast     # about 90 s
    .venv/bin/python benchmarks/bench_profiler_training.py --job numpy
"""

from __future__ import annotations

import argparse
import importlib.util
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
HZ = 100

COMMON_HEAD = """
import json, statistics, sys, time

mode, seconds, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
if mode == "edgescope":
    import edgescope
    edgescope.init(name="bench-training", profile=True, profile_hz=hz)


def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

COMMON_TAIL = """
times = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(times), "steps": len(times), "hwm": hwm()}))
"""

JOBS = {
    "torch": """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)


class Net(nn.Module):  # pytorch/examples mnist/main.py
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


torch.manual_seed(1)
gen = torch.Generator().manual_seed(0)
data = TensorDataset(
    torch.randn(60_000, 1, 28, 28, generator=gen), torch.randint(0, 10, (60_000,), generator=gen)
)
loader = DataLoader(data, batch_size=64, shuffle=True, num_workers=2)
model = Net()
model.train()
opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
batches = iter(loader)


def step():
    global batches
    try:
        x, y = next(batches)
    except StopIteration:
        batches = iter(loader)
        x, y = next(batches)
    opt.zero_grad()
    loss = F.nll_loss(model(x), y)
    loss.backward()
    opt.step()


for _ in range(5):
    step()
""",
    "numpy": """
import numpy as np
from edgescope.demo.job import NumpyBackend

rng = np.random.default_rng(0)
backend = NumpyBackend(rng)
batches = [rng.integers(0, len(backend.x_train), 256) for _ in range(64)]
i = 0


def step():
    global i
    backend.step(batches[i % 64], 0.05)
    i += 1


for _ in range(30):
    step()
""",
}
TITLES = {
    "torch": "PyTorch CPU, MNIST's Net on generated data, DataLoader(num_workers=2)",
    "numpy": "NumPy MLP training step",
}


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if os.access(found, os.X_OK) else None


def measure(mode: str, seconds: float, tmp: Path, spy: str | None) -> tuple[float, int]:
    """One fresh process of the job in ``mode``: its median step (s) and peak RSS (bytes)."""
    worker = tmp / "worker.py"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(EDGESCOPE_DIR=str(tmp / "runs"), XDG_RUNTIME_DIR=str(tmp))
    env.pop("EDGESCOPE_SOCKET", None)
    argv = [sys.executable, str(worker), mode, str(seconds), str(HZ)]
    if mode == "py-spy":
        assert spy is not None
        argv[-3] = "bare"
        argv = [spy, "record", "-r", str(HZ), "-f", "raw", "-o", str(tmp / "spy.txt"), "--", *argv]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        raise SystemExit(f"bench_profiler_training: the {mode} run failed: {why}")
    got = json.loads(line)
    return float(got["median"]), int(got["hwm"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    has_torch = importlib.util.find_spec("torch") is not None
    ap.add_argument(
        "--job",
        choices=sorted(JOBS),
        default="torch" if has_torch else "numpy",
        help="the training loop (default: torch where it is installed, else numpy)",
    )
    ap.add_argument("--fast", action="store_true", help="3 rounds of 4 s (default 6 of 8 s)")
    ap.add_argument("--seconds", type=float, help="seconds of training per measurement")
    ap.add_argument("--rounds", type=int, help="rounds of the three measurements")
    args = ap.parse_args()
    if args.job == "torch" and not has_torch:
        ap.error("--job torch needs PyTorch (pip install torch==2.13.0)")
    seconds = args.seconds or (4.0 if args.fast else 8.0)
    rounds = args.rounds or (3 if args.fast else 6)
    spy = py_spy()
    modes = MODES if spy else MODES[:2]
    steps: dict[str, list[float]] = {m: [] for m in modes}
    peaks: dict[str, list[int]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-prof-train-") as d:
        tmp = Path(d)
        (tmp / "worker.py").write_text(COMMON_HEAD + JOBS[args.job] + COMMON_TAIL)
        t0 = time.monotonic()
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                step, peak = measure(m, seconds, tmp, spy)
                steps[m].append(step)
                peaks[m].append(peak)
        took = time.monotonic() - t0
    print(f"{TITLES[args.job]}, {rounds} rounds of {seconds:g} s each, sampling at {HZ} Hz")
    head = f"{'':<26}{'step (ms)':>10}{'vs bare':>9}{'rounds (lowest .. highest)':>29}"
    print(f"{head}{'peak RSS (MiB)':>16}{'vs bare':>9}")
    labels = {
        "bare": "bare",
        "edgescope": "edgescope profile=True",
        "py-spy": f"py-spy record -r {HZ}",
    }
    for m in modes:
        ratios = [x / b - 1 for x, b in zip(steps[m], steps["bare"], strict=True)]
        spread = f"{min(ratios) * 100:+.1f} .. {max(ratios) * 100:+.1f} %"
        peak = statistics.median(peaks[m])
        grew = peak / statistics.median(peaks["bare"]) - 1
        print(
            f"{labels[m]:<26}{statistics.median(steps[m]) * 1e3:>10.2f}"
            f"{statistics.median(ratios) * 100:>+8.1f}%{spread:>29}"
            f"{peak / 2**20:>16.0f}{grew * 100:>+8.1f}%"
        )
    if not spy:
        print("py-spy is not installed (pip install py-spy): its row is left out")
    flags = " --fast" if args.fast else ""
    flags += f" --job {args.job}" if args.job != ("torch" if has_torch else "numpy") else ""
    print(f"\n({took:.0f} s) rerun:\n{RERUN}{flags}")


if __name__ == "__main__":
    main()
