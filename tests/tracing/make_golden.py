"""Make ``tests/tracing/data/golden-v1.est``, the trace every future version must still read.

From real data: the first 300 steps (loss, step time, CUDA memory) and the 20 NVML samples
around them of ``h200-mlp-training.jsonl``, a PyTorch run on an NVIDIA H200 (see
``tests/fixtures/README.md``), framed by a RunStart and RunEnd, with an Event and a
StackSamples, and one record of every other kind built from the same samples. Metrics are
batched the way the SDK flushes them; keyframes are frequent so that the file holds several,
and an index. The output is byte-for-byte reproducible::

    PYTHONPATH=tests .venv/bin/python tests/tracing/make_golden.py [--fixture FILE] [--out FILE]

Never regenerate it for a newer format version: it is the 1.0 file that later readers are
tested against. Make a ``golden-v2.est`` beside it instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from edgescope_tracing import (
    CoolingDevice,
    CpuFreq,
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    SystemSample,
    ThermalSample,
    ThermalZone,
    TraceReader,
    TraceWriter,
)
from realdata import H200_RUN

HERE = Path(__file__).resolve().parent
FIXTURE = H200_RUN
OUT = HERE / "data" / "golden-v1.est"
STEPS = 300
NVML_SAMPLES = 20
BATCH = 64
"""Steps per metric batch: what the SDK's background thread would flush at a time."""
KEYFRAME_BYTES = 2048


def _load(fixture: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    meta: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    nvml: list[dict[str, Any]] = []
    with fixture.open() as f:
        for line in f:
            row = json.loads(line)
            if row["kind"] == "meta":
                meta = row
            elif row["kind"] == "step" and len(steps) < STEPS:
                steps.append(row)
            elif row["kind"] == "nvml":
                nvml.append(row)
    start = steps[0]["t_ns"] - 100_000_000
    return meta, steps, [r for r in nvml if r["t_ns"] >= start][:NVML_SAMPLES]


def _us(t_ns: int) -> int:
    return t_ns // 1000


def build(fixture: Path = FIXTURE) -> list[Record]:
    """The golden records, in the order they are written."""
    meta, steps, nvml = _load(fixture)
    t_start = _us(steps[0]["t_ns"] - steps[0]["step_ns"])
    records: list[Record] = [
        RunStart(
            run=0,
            run_id="0f6d2c1e9a8b4c7d8e5f60718293a4b5",
            name="h200-mlp",
            host="h200-node",
            pid=48213,
            config={
                "model": "mlp 4096-16384-4096-10 gelu",
                "optimizer": "AdamW",
                "batch_size": 2048,
                "autocast": "bf16",
                "lr": 0.001,
            },
            tags=("fixture", "h200"),
            device={
                "gpu": meta["gpu"],
                "driver": meta["driver"],
                "torch": meta["torch"],
                "cpu_count": meta["cpu_count"],
                "python": meta["python"].split()[0],
            },
            t_us=t_start,
        )
    ]
    timed: list[tuple[int, int, Record]] = []
    columns = {
        "loss": lambda s: float(s["loss"]),  # float32-exact: stored as float32
        "step_time_ms": lambda s: s["step_ns"] / 1e6,  # not float32-exact: float64
        "cuda_alloc": lambda s: float(s["cuda_alloc"]),
        "cuda_max_alloc": lambda s: float(s["cuda_max_alloc"]),
    }
    for lo in range(0, len(steps), BATCH):
        batch = steps[lo : lo + BATCH]
        for k, (name, value) in enumerate(columns.items()):
            timed.append(
                (
                    _us(batch[-1]["t_ns"]),
                    k,
                    Metrics(
                        run=0,
                        key=name,
                        steps=tuple(s["step"] for s in batch),
                        times_us=tuple(_us(s["t_ns"]) for s in batch),
                        values=tuple(value(s) for s in batch),
                    ),
                )
            )
    for i, n in enumerate(nvml):
        t = _us(n["t_ns"])
        timed.append(
            (
                t,
                10,
                GpuSample(
                    index=0,
                    name=meta["gpu"],
                    temp_c=float(n["temp_c"]),
                    power_mw=n["power_mw"],
                    power_limit_mw=n["power_limit_mw"],
                    sm_clock_mhz=n["sm_clock_mhz"],
                    mem_clock_mhz=n["mem_clock_mhz"],
                    max_sm_clock_mhz=n["max_sm_clock_mhz"],
                    clock_event_reasons=n["clock_event_reasons"],
                    util_gpu=float(n["util_gpu"]),
                    util_mem=float(n["util_mem"]),
                    mem_used=n["mem_used"],
                    mem_total=n["mem_total"],
                    t_us=t,
                ),
            )
        )
        timed.append((t, 11, ProcessSample(run=0, pid=48213, rss=n["rss"], t_us=t)))
        if i % 10 == 0:
            timed.append((t, 12, SystemSample(cpu_percent=n["cpu_percent_sys"], t_us=t)))
            timed.append(
                (
                    t,
                    13,
                    ThermalSample(
                        zones=(
                            ThermalZone("gpu0", float(n["temp_c"]), (("slowdown", 87.0, 0.0),)),
                        ),
                        freqs=(CpuFreq(0, None),),
                        cooling=(CoolingDevice("gpu0-fan", 0, 0),),
                        throttle={"gpu0.clock_event_reasons": n["clock_event_reasons"]},
                        t_us=t,
                    ),
                )
            )
    first_step = steps[0]
    timed.append(
        (
            _us(first_step["t_ns"]),
            20,
            Event(
                kind="anomaly",
                message=(
                    f"step 0 took {first_step['step_ns'] / 1e6:.0f} ms, "
                    f"{first_step['step_ns'] / steps[1]['step_ns']:.0f}x the next (warm-up)"
                ),
                run=0,
                severity=1,
                detail={"step": 0, "step_ns": first_step["step_ns"]},
                t_us=_us(first_step["t_ns"]),
            ),
        )
    )
    train = StackFrame("train_step", "train.py", 41)
    fwd = StackFrame("forward", "train.py", 22)
    timed.append(
        (
            _us(steps[-1]["t_ns"]),
            21,
            StackSamples(
                run=0,
                backend="python",
                period_us=10_000,
                samples=(
                    ((StackFrame("main", "train.py", 60), train, fwd), 131),
                    (
                        (
                            StackFrame("main", "train.py", 60),
                            train,
                            StackFrame("step", "adamw.py", 213),
                        ),
                        42,
                    ),
                    ((StackFrame("main", "train.py", 60), train), 27),
                ),
                t_us=_us(steps[-1]["t_ns"]),
            ),
        )
    )
    timed.sort(key=lambda x: (x[0], x[1]))
    records.extend(r for _, _, r in timed)
    records.append(RunEnd(run=0, exit_code=0, dropped=0, t_us=_us(steps[-1]["t_ns"]) + 1000))
    return records


def write(records: list[Record], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with TraceWriter(
        out, flush_interval=1e9, flush_bytes=4096, keyframe_bytes=KEYFRAME_BYTES, fsync="never"
    ) as w:
        for rec in records:
            w.append(rec)


def plain(x: Any) -> Any:
    """A record as JSON data: its class and its 1.0 fields (sequence numbers as read)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = {"type": type(x).__name__} if hasattr(x, "KIND") else {}
        out.update({f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)})
        return out
    if isinstance(x, tuple | list):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def write_expected(out: Path) -> Path:
    """What a reader must find in the golden file, one record a line, beside it as JSON."""
    expected = out.with_suffix(".json")
    with TraceReader(out) as r:
        lines = [json.dumps(plain(rec), sort_keys=True) for rec in r]
    expected.write_text("\n".join(lines) + "\n")
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    write(build(args.fixture), args.out)
    expected = write_expected(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {expected}")


if __name__ == "__main__":
    main()
