"""Turn the first steps of the real H200 run (tests/fixtures) into edgescope records.

The fixture is JSON lines: NVML samples every 100 ms and one line per training step. Steps are
batched into columnar metric records of 50 steps each, as the SDK would ship them; each NVML
sample becomes a GPU sample, a process sample (RSS) and a system sample (CPU %). At step 600 the
run allocated and freed a 20 GB tensor: a mark event says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    Record,
    RunStart,
    SystemSample,
    TraceWriter,
)
from realdata import H200_RUN

FIXTURE = H200_RUN
KEYS = ("loss", "step_ns", "cuda_alloc", "cuda_max_alloc")
BATCH = 50


def h200_records(steps: int = 2000, path: Path = FIXTURE) -> list[Record]:
    """Records for the first ``steps`` steps and the NVML samples up to the last of them."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = lines[0]
    step_lines = [x for x in lines if x["kind"] == "step"][:steps]
    end_ns = step_lines[-1]["t_ns"]
    nvml = [x for x in lines if x["kind"] == "nvml" and x["t_ns"] <= end_ns]
    t0 = nvml[0]["t_ns"] // 1000
    out: list[tuple[int, int, Record]] = []
    start = RunStart(
        run=0,
        run_id="5eed0000c0ffee00",
        name="h200-mlp",
        host="h200",
        pid=4242,
        config={"model": "mlp 4096-16384-4096-10", "batch_size": 2048, "optimizer": "AdamW"},
        device={
            "gpu": meta["gpu"],
            "driver": meta["driver"],
            "torch": meta["torch"],
            "cpu_count": meta["cpu_count"],
        },
        t_us=t0,
    )
    out.append((t0, 0, start))
    for i in range(0, len(step_lines), BATCH):
        chunk = step_lines[i : i + BATCH]
        times = tuple(x["t_ns"] // 1000 for x in chunk)
        steps_ = tuple(int(x["step"]) for x in chunk)
        for k, key in enumerate(KEYS):
            values = tuple(float(x[key]) for x in chunk)
            out.append((times[-1], 1 + k, Metrics(0, key, steps_, times, values, t_us=times[0])))
    for x in nvml:
        t = x["t_ns"] // 1000
        out.append((t, 1, _gpu(x, meta["gpu"], t)))
        out.append((t, 2, ProcessSample(run=0, pid=4242, rss=x["rss"], t_us=t)))
        out.append((t, 3, SystemSample(cpu_percent=x["cpu_percent_sys"], t_us=t)))
    mark = next((x for x in step_lines if x["step"] == 600), None)
    if mark is not None:
        t = mark["t_ns"] // 1000
        out.append(
            (
                t,
                9,
                Event(
                    "mark",
                    "20 GB tensor allocated and freed",
                    run=0,
                    detail={"step": 600},
                    t_us=t,
                ),
            )
        )
    out.sort(key=lambda x: (x[0], x[1]))
    return [r for _, _, r in out]


def _gpu(x: dict[str, Any], name: str, t: int) -> GpuSample:
    return GpuSample(
        index=0,
        name=name,
        temp_c=float(x["temp_c"]),
        power_mw=x["power_mw"],
        power_limit_mw=x["power_limit_mw"],
        sm_clock_mhz=x["sm_clock_mhz"],
        mem_clock_mhz=x["mem_clock_mhz"],
        max_sm_clock_mhz=x["max_sm_clock_mhz"],
        clock_event_reasons=x["clock_event_reasons"],
        util_gpu=float(x["util_gpu"]),
        util_mem=float(x["util_mem"]),
        mem_used=x["mem_used"],
        mem_total=x["mem_total"],
        t_us=t,
    )


def write_h200_trace(path: Path, steps: int = 2000, keyframe_bytes: int = 16384) -> Path:
    """Write the converted records to a trace file; returns its path."""
    with TraceWriter(path, keyframe_bytes=keyframe_bytes, fsync="never") as w:
        for rec in h200_records(steps):
            w.append(rec)
    return path
