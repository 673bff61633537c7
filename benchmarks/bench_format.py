"""The trace format beside JSON lines and a TensorBoard event file, for the same scalars.

100,000 values of one metric (``loss``) at steps 0..99,999: a decaying loss with noise, cast
through float32 as a loss from a float32 tensor is; each at a wall time in microseconds, the
steps apart by times drawn around 5.7 ms (the H200 fixture's steady step time, with jitter).
The same data is stored three ways:

* **edgescope**: through :class:`~edgescope_tracing.TraceWriter` the way the SDK writes it, one
  columnar ``Metrics`` batch per flush (the SDK flushes every 0.5 s: ~88 values), the frame
  written at each flush, the index at close.
* **JSON lines**: one ``{"step": .., "t_us": .., "key": "loss", "value": ..}`` object a line.
* **tensorboardX**: ``SummaryWriter.add_scalar("loss", value, step, walltime)`` per value; read
  back by parsing the TFRecord event file with tensorboardX's protobuf classes (checksums not
  verified, which only flatters it).

Measured: bytes on disk per scalar, and write and read throughput in scalars per second (each
pyperf value is one full write or read of all 100,000; writes include building what is
written). Every format is checked to read back exactly what was written.

Targets (issue 2): edgescope <= 8 bytes per scalar, lossless; reading >= 1,000,000 scalars/s.

Rerun (about a minute; 2 worker processes x 3 values, 1 loop each: tensorboardX takes ~5 s
per write)::

    .venv/bin/python benchmarks/bench_format.py
    .venv/bin/python benchmarks/bench_format.py -o format.json   # also keep the pyperf suite

Any pyperf option works (``--fast``, ``--rigorous``, ``--processes N``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyperf

N = 100_000
STEP_US = 5_700
FLUSH_US = 500_000
"""The SDK's default flush interval: one Metrics batch per 0.5 s of training."""
T0_US = 1_795_800_876_015_431
RERUN = "    .venv/bin/python benchmarks/bench_format.py"

Data = tuple[list[int], list[int], list[float]]


def make_data(n: int = N) -> Data:
    rng = random.Random(2026)
    steps = list(range(n))
    times = []
    t = T0_US
    for _ in steps:
        t += max(1, int(rng.gauss(STEP_US, 180)))
        times.append(t)
    values = []
    for s in steps:
        loss = 2.3 * math.exp(-s / 15_000) + 0.02 + abs(rng.gauss(0, 0.03))
        values.append(struct.unpack("<f", struct.pack("<f", loss))[0])  # through float32
    return steps, times, values


# --- writers ------------------------------------------------------------------------------


def write_edgescope(path: Path, data: Data) -> None:
    from edgescope_tracing import Metrics, TraceWriter

    steps, times, values = data
    with TraceWriter(path / "run.est", flush_interval=1e9) as w:
        lo = 0
        n = len(steps)
        while lo < n:
            end_t = times[lo] + FLUSH_US
            hi = lo
            while hi < n and times[hi] < end_t:
                hi += 1
            w.append(
                Metrics(0, "loss", tuple(steps[lo:hi]), tuple(times[lo:hi]), tuple(values[lo:hi]))
            )
            w.flush()
            lo = hi


def write_jsonl(path: Path, data: Data) -> None:
    dumps = json.dumps
    with open(path / "run.jsonl", "w") as f:
        for s, t, v in zip(*data, strict=True):
            f.write(dumps({"step": s, "t_us": t, "key": "loss", "value": v}))
            f.write("\n")


def write_tensorboardx(path: Path, data: Data) -> None:
    from tensorboardX import SummaryWriter

    w = SummaryWriter(str(path))
    for s, t, v in zip(*data, strict=True):
        w.add_scalar("loss", v, global_step=s, walltime=t / 1e6)
    w.close()


# --- readers: each returns (steps, times_us, values) ------------------------------------


def read_edgescope(path: Path) -> Data:
    from edgescope_tracing import Metrics, TraceReader

    steps: list[int] = []
    times: list[int] = []
    values: list[float] = []
    with TraceReader(path / "run.est") as r:
        for rec in r:
            if isinstance(rec, Metrics) and rec.key == "loss":
                steps += rec.steps
                times += rec.times_us
                values += rec.values
    return steps, times, values


def read_jsonl(path: Path) -> Data:
    loads = json.loads
    steps: list[int] = []
    times: list[int] = []
    values: list[float] = []
    with open(path / "run.jsonl") as f:
        for line in f:
            o = loads(line)
            if o["key"] == "loss":
                steps.append(o["step"])
                times.append(o["t_us"])
                values.append(o["value"])
    return steps, times, values


def read_tensorboardx(path: Path) -> Data:
    from tensorboardX.proto import event_pb2  # type: ignore[import-untyped]

    (name,) = (p for p in os.listdir(path) if p.startswith("events.out.tfevents"))
    data = (path / name).read_bytes()
    steps: list[int] = []
    times: list[int] = []
    values: list[float] = []
    pos = 0
    parse = event_pb2.Event.FromString
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        ev = parse(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for v in ev.summary.value:
            if v.tag == "loss":
                steps.append(ev.step)
                times.append(round(ev.wall_time * 1e6))
                values.append(v.simple_value)
    return steps, times, values


FORMATS: dict[str, tuple[Callable[[Path, Data], None], Callable[[Path], Data]]] = {
    "edgescope": (write_edgescope, read_edgescope),
    "JSON lines": (write_jsonl, read_jsonl),
    "tensorboardX": (write_tensorboardx, read_tensorboardx),
}

# --- pyperf time functions ------------------------------------------------------------------

_DATA: Data | None = None
_WRITTEN: dict[str, Path] = {}


def data() -> Data:
    global _DATA
    if _DATA is None:
        _DATA = make_data()
    return _DATA


def time_write(fmt: str) -> Callable[[int], float]:
    write = FORMATS[fmt][0]

    def run(loops: int) -> float:
        d = data()
        total = 0.0
        for _ in range(loops):
            tmp = Path(tempfile.mkdtemp(prefix="bench-format-"))
            try:
                t = time.perf_counter()
                write(tmp, d)
                total += time.perf_counter() - t
            finally:
                shutil.rmtree(tmp)
        return total

    return run


def time_read(fmt: str) -> Callable[[int], float]:
    write, read = FORMATS[fmt]

    def run(loops: int) -> float:
        if fmt not in _WRITTEN:
            tmp = Path(tempfile.mkdtemp(prefix="bench-format-"))
            write(tmp, data())
            _WRITTEN[fmt] = tmp
        total = 0.0
        for _ in range(loops):
            t = time.perf_counter()
            got = read(_WRITTEN[fmt])
            total += time.perf_counter() - t
            assert len(got[2]) == N
        return total

    return run


def sizes_and_exactness() -> dict[str, tuple[int, bool]]:
    """Bytes on disk and whether every step, time and value reads back exactly."""
    d = data()
    out = {}
    for fmt, (write, read) in FORMATS.items():
        tmp = Path(tempfile.mkdtemp(prefix="bench-format-"))
        try:
            write(tmp, d)
            size = sum(p.stat().st_size for p in tmp.iterdir())
            steps, times, values = read(tmp)
            exact = (
                steps == d[0]
                and times == d[1]
                and [struct.pack("<d", v) for v in values] == [struct.pack("<d", v) for v in d[2]]
            )
            out[fmt] = (size, exact)
        finally:
            shutil.rmtree(tmp)
    return out


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1, loops=1)
    runner.metadata["description"] = (
        f"{N:,} float32 scalars of one metric: edgescope trace vs JSON lines vs tensorboardX"
    )
    results = {}
    for fmt in FORMATS:
        results[fmt] = (
            runner.bench_time_func(f"{fmt} write", time_write(fmt)),
            runner.bench_time_func(f"{fmt} read", time_read(fmt)),
        )
    for tmp in _WRITTEN.values():
        shutil.rmtree(tmp, ignore_errors=True)
    if runner.args.worker or any(b is None for pair in results.values() for b in pair):
        return
    sizes = sizes_and_exactness()
    print()
    print(f"{N:,} scalars of one metric (float32 values, steps +1, times ~5.7 ms apart):")
    print(
        f"{'format':<14}{'bytes':>11}{'B/scalar':>10}{'lossless':>10}"
        f"{'write scalars/s':>17}{'read scalars/s':>16}"
    )
    for fmt, (w, r) in results.items():
        size, exact = sizes[fmt]
        assert w is not None and r is not None
        print(
            f"{fmt:<14}{size:>11,}{size / N:>10.2f}{'yes' if exact else 'NO':>10}"
            f"{N / w.median():>17,.0f}{N / r.median():>16,.0f}"
        )
    size, exact = sizes["edgescope"]
    read_rate = N / results["edgescope"][1].median()
    tbx = sizes["tensorboardX"][0] / N
    print()
    print(
        f"edgescope: {size / N:.2f} bytes/scalar (target <= 8, lossless): "
        f"{'met' if size / N <= 8 and exact else 'NOT met'}; {tbx / (size / N):.1f}x smaller "
        "than tensorboardX"
    )
    print(
        f"edgescope read: {read_rate:,.0f} scalars/s (target >= 1,000,000): "
        f"{'met' if read_rate >= 1e6 else 'NOT met'}"
    )
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
