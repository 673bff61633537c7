"""End to end: 1,000,000 values logged as fast as Python goes, into a file, beside a bare packer.

pyperf benchmarks in the same run; each value is one whole run of N values (the figure is the
time per value: the whole run divided by N), from the first call to the file closed:

- ``msgpack.Packer`` anchor: ``packer.pack([step, time.time_ns(), name, value])`` per value,
  64 KiB at a time written to a file: the least a logger that keeps (step, time, name, value)
  records can do;
- ``edgescope.log`` 1-key: ``edgescope.log({"loss": v}, step=i)`` N times, then ``finish()``
  (its own trace file, no collector; everything is in the file, checked after each run);
- ``edgescope.log`` 10-key: N / 10 calls of ten keys each;
- the anchor for 10 keys: ten records per step;
- ``tensorboardX add_scalar``: N / 100 values (it is ~50x slower; the figure is per value too).

Each benchmark runs whole runs once per value (``loops=1``): 2 worker processes, 1 warm-up and
3 values each by default; ``--fast`` halves that.

The issue's bound: edgescope at most 3x the anchor, for 1-key and 10-key calls. Then, outside
pyperf, the bytes per value of each trace, and of a float32-rounded decaying loss curve with
noise (100,000 values), from files the SDK wrote.

Rerun::

    .venv/bin/python benchmarks/bench_sdk_throughput.py --fast            # about a minute
    .venv/bin/python benchmarks/bench_sdk_throughput.py -o throughput.json
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import pyperf

N = 1_000_000
KEYS10 = [f"metric{j}" for j in range(10)]
RERUN = "  .venv/bin/python benchmarks/bench_sdk_throughput.py --fast"
_state: dict[str, Any] = {}


def _tmp() -> str:
    if "tmp" not in _state:
        path = tempfile.mkdtemp(prefix="bench-thr-")
        atexit.register(shutil.rmtree, path, True)
        os.environ["EDGESCOPE_DIR"] = path
        os.environ["XDG_RUNTIME_DIR"] = path  # no default collector socket in reach
        os.environ.pop("EDGESCOPE_SOCKET", None)
        _state["tmp"] = path
    return str(_state["tmp"])


def _anchor(loops: int, keys: list[str]) -> float:
    tmp = _tmp()
    total = 0.0
    steps = N // len(keys)
    for _ in range(loops):
        path = os.path.join(tmp, "anchor.msgpack")
        t0 = time.perf_counter()
        packer = msgpack.Packer()
        pack = packer.pack
        now = time.time_ns
        out = bytearray()
        with open(path, "wb") as f:
            for i in range(steps):
                t = now()
                for k in keys:
                    out += pack([i, t, k, 0.5])
                if len(out) >= 1 << 16:
                    f.write(out)
                    out.clear()
            f.write(out)
        total += time.perf_counter() - t0
        os.unlink(path)
    return total


def bench_anchor_1(loops: int) -> float:
    return _anchor(loops, ["loss"])


def bench_anchor_10(loops: int) -> float:
    return _anchor(loops, KEYS10)


def _quiet_init(name: str) -> Any:
    import edgescope

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)  # the line init prints would land in pyperf's output
    try:
        return edgescope.init(name=name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check(path: Path, want: int) -> None:
    from edgescope_tracing import Metrics, TraceReader

    with TraceReader(path) as r:
        got = sum(len(m.values) for m in r if isinstance(m, Metrics))
    if got != want:
        raise SystemExit(f"bench_sdk_throughput: {path} holds {got} values, not {want}")
    _state.setdefault("sizes", {})[path.name.split("-")[0]] = os.path.getsize(path) / want
    os.unlink(path)


def bench_edgescope_1(loops: int) -> float:
    import edgescope

    _tmp()
    total = 0.0
    log = edgescope.log
    for _ in range(loops):
        run = _quiet_init("one")
        t0 = time.perf_counter()
        for i in range(N):
            log({"loss": 0.5}, step=i)
        edgescope.finish()
        total += time.perf_counter() - t0
        _check(run.path, N)
    return total


def bench_edgescope_10(loops: int) -> float:
    import edgescope

    _tmp()
    total = 0.0
    log = edgescope.log
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 = KEYS10
    x = 0.5
    for _ in range(loops):
        run = _quiet_init("ten")
        t0 = time.perf_counter()
        for i in range(N // 10):
            log(
                {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x, k9: x},
                step=i,
            )
        edgescope.finish()
        total += time.perf_counter() - t0
        _check(run.path, N)
    return total


def bench_tensorboardx(loops: int) -> float:
    from tensorboardX import SummaryWriter

    tmp = _tmp()
    total = 0.0
    n = N // 100
    for _ in range(loops):
        d = tempfile.mkdtemp(dir=tmp)
        t0 = time.perf_counter()
        w = SummaryWriter(d)
        add = w.add_scalar
        for i in range(n):
            add("loss", 0.5, i)
        w.close()
        total += time.perf_counter() - t0
        shutil.rmtree(d)
    return total * 100  # the figure is per value: the run's time over n


def loss_curve_bytes(n: int = 100_000) -> float:
    """Bytes per value of a trace the SDK wrote: float32 values of a decaying noisy loss."""
    import edgescope

    _tmp()
    rnd = random.Random(7)
    curve = [
        struct.unpack("f", struct.pack("f", 2.5 * 0.99997**i + 0.05 * rnd.random()))[0]
        for i in range(n)
    ]
    run = _quiet_init("curve")
    for i, v in enumerate(curve):
        edgescope.log({"loss": v}, step=i)
    edgescope.finish()
    size = os.path.getsize(run.path) / n
    os.unlink(run.path)
    return size


def paired(rounds: int = 3) -> tuple[float, float]:
    """Median ratios edgescope / anchor (1-key, 10-key) of back-to-back runs in one process.

    On a shared machine the load changes between pyperf's workers; a ratio of two runs made
    one right after the other is what the bound is about.
    """
    r1, r10 = [], []
    for _ in range(rounds):
        r1.append(bench_edgescope_1(1) / bench_anchor_1(1))
        r10.append(bench_edgescope_10(1) / bench_anchor_10(1))
    return statistics.median(r1), statistics.median(r10)


def main() -> None:
    runner = pyperf.Runner(values=3, processes=2, warmups=1, loops=1)
    runner.metadata["description"] = "1,000,000 values into a file: edgescope vs msgpack.Packer"
    names = [
        "msgpack.Packer anchor, 1 key",
        "edgescope.log 1-key calls",
        "msgpack.Packer anchor, 10 keys",
        "edgescope.log 10-key calls",
        "tensorboardX add_scalar (10,000 values)",
    ]
    funcs = [bench_anchor_1, bench_edgescope_1, bench_anchor_10, bench_edgescope_10]
    funcs.append(bench_tensorboardx)
    benches = [
        runner.bench_time_func(n, f, inner_loops=N) for n, f in zip(names, funcs, strict=True)
    ]
    if runner.args.worker or any(b is None for b in benches):
        return
    a1, e1, a10, e10, tb = (b.median() * 1e6 for b in benches)  # type: ignore[union-attr]
    print()
    print(f"{'1,000,000 values into a file':<44}{'us/value':>9}{'x anchor':>10}{'s per 1M':>10}")
    for name, v, a in (
        (names[0], a1, a1),
        (names[1], e1, a1),
        (names[2], a10, a10),
        (names[3], e10, a10),
        (names[4], tb, a1),
    ):
        print(f"{name:<44}{v:>9.3f}{v / a:>10.2f}{v:>10.2f}")
    print()
    verdict = {True: "met", False: "NOT met"}
    print(
        f"bound <= 3x the anchor: 1-key {e1 / a1:.2f}x {verdict[e1 <= 3 * a1]}, "
        f"10-key {e10 / a10:.2f}x {verdict[e10 <= 3 * a10]}; tensorboardX is {tb / e1:.0f}x "
        "edgescope's 1-key time"
    )
    p1, p10 = paired()
    print(
        f"paired back-to-back in one process (median of 3): 1-key {p1:.2f}x "
        f"{verdict[p1 <= 3]}, 10-key {p10:.2f}x {verdict[p10 <= 3]}"
    )
    sizes = _state.get("sizes", {})
    print(
        "bytes per value of those traces: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(sizes.items()))
    )
    curve = loss_curve_bytes()
    print(f"bytes per value, float32 loss curve of 100,000 values written by the SDK: {curve:.2f}")
    print()
    print("rerun:")
    print(RERUN)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
