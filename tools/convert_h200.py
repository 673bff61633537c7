"""Convert the recorded H200 training run (JSON lines) into an edgescope trace.

The source is ``tests/fixtures/h200-mlp-training.jsonl``: a real PyTorch run on one NVIDIA H200
with NVML read every 100 ms from a thread of the training process. One JSON object a line, sorted
by ``t_ns``: a ``meta`` line, then ``nvml`` samples and ``step`` records. This module maps them
onto the trace's record kinds:

- ``meta`` → the :class:`RunStart`'s device facts (GPU, driver, torch, Python, CPU count, the NVML
  call used for clock-event reasons and what one sample cost);
- ``step`` → :class:`Metrics` ``loss``, ``step_time`` (seconds, from ``step_ns``), ``cuda_alloc``
  and ``cuda_max_alloc`` (bytes), batched per second of run time as the SDK ships them;
- ``nvml`` → one :class:`GpuSample` (temperature, power and limit, clocks, clock-event reasons,
  utilisation, memory), one :class:`ProcessSample` (the process's RSS) and one
  :class:`SystemSample` (system CPU %);
- a ``mark`` :class:`Event` where the CUDA memory peak jumps (step 600, where a 20 GB tensor was
  allocated and freed), found in the data, not assumed.

Times become integer microseconds since the epoch (``t_ns // 1000``). The output is the same
bytes every time for the same input (frames are cut by size only; the run id is derived from
the input's content), so the example checked in under ``examples/`` can be rebuilt and compared::

    python tools/convert_h200.py tests/fixtures/h200-mlp-training.jsonl \\
        -o examples/h200-mlp-training.est

It lives outside the installed package: only building the example needs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    SystemSample,
    TraceWriter,
)

__all__ = ["ConvertError", "convert", "h200_records", "peak_jumps", "main"]

RUN = 0
"""The run's number in the trace (a converted file holds one run)."""

BATCH_US = 1_000_000
"""Metric values are shipped in batches of this much run time, as the SDK's flush interval."""

KEYFRAME_BYTES = 64 << 10
"""Keyframes every 64 KiB, so that replay can seek in the example as in a big trace."""

METRIC_KEYS = ("loss", "step_time", "cuda_alloc", "cuda_max_alloc")

PEAK_JUMP_MIN_BYTES = 1 << 30
PEAK_JUMP_MIN_RATIO = 2.0
"""A peak jump worth a mark: the CUDA peak at least doubles and grows by at least 1 GiB."""

CONFIG: dict[str, Any] = {
    # From tests/fixtures/README.md, which describes the recorded run; the JSON lines
    # themselves carry only the device facts (the meta line) and the measurements.
    "model": "MLP 4096-16384-4096-10, GELU",
    "optimizer": "AdamW",
    "autocast": "bf16",
    "batch_size": 2048,
    "framework": "pytorch",
}


class ConvertError(Exception):
    """The input is not the JSON lines this converter knows; one sentence naming the line."""


@dataclass(slots=True)
class _Pending:
    """Metric values waiting for their batch to be written, one column set per key."""

    steps: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRIC_KEYS})

    def add(self, step: int, t_us: int, row: dict[str, float]) -> None:
        self.steps.append(step)
        self.times.append(t_us)
        for k in METRIC_KEYS:
            self.values[k].append(row[k])

    def take(self) -> list[Metrics]:
        if not self.steps:
            return []
        steps, times = tuple(self.steps), tuple(self.times)
        out = [
            Metrics(RUN, k, steps, times, tuple(self.values[k]), t_us=times[0]) for k in METRIC_KEYS
        ]
        self.steps, self.times = [], []
        self.values = {k: [] for k in METRIC_KEYS}
        return out


def _num(obj: dict[str, Any], key: str, lineno: int, kind: type = int) -> Any:
    v = obj.get(key)
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    if not ok:
        raise ConvertError(f"line {lineno}: {obj.get('kind')} record has no numeric {key!r}")
    return v


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ConvertError(f"{path}, line {lineno}: not a JSON object") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
                raise ConvertError(f"{path}, line {lineno}: not a record with a 'kind'")
            yield lineno, obj


def peak_jumps(peaks: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """``(step, before, after)`` for each step where the CUDA peak at least doubles by ≥ 1 GiB.

    ``peaks`` is ``(step, cuda_max_alloc)`` in step order. The first step is not a jump: its
    peak is the model's first allocation, not an event.
    """
    out: list[tuple[int, int, int]] = []
    for (_, before), (step, after) in pairwise(peaks):
        if after - before >= PEAK_JUMP_MIN_BYTES and after >= PEAK_JUMP_MIN_RATIO * before:
            out.append((step, before, after))
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def h200_records(path: Path) -> Iterator[Record]:
    """The trace's records for the JSON lines at ``path``, in time order."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None or first[1]["kind"] != "meta":
        raise ConvertError(f"{path}: the first line is not the 'meta' record")
    meta = {k: v for k, v in first[1].items() if k != "kind"}
    gpu_name = str(meta.get("gpu", "GPU"))
    body = list(lines)
    if not body:
        raise ConvertError(f"{path}: no samples or steps after the meta line")
    t0 = _num(body[0][1], "t_ns", body[0][0]) // 1000
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    yield RunStart(
        RUN,
        digest,
        path.stem,
        "unknown",
        0,
        config=dict(CONFIG),
        tags=("pytorch", "nvml", "converted"),
        device=meta,
        t_us=t0,
    )

    pending = _Pending()
    batch_start: int | None = None
    prev_peak: tuple[int, int] | None = None
    t_us = t0
    for lineno, obj in body:
        t_us = _num(obj, "t_ns", lineno) // 1000
        if batch_start is not None and t_us - batch_start >= BATCH_US:
            yield from pending.take()
            batch_start = None
        kind = obj["kind"]
        if kind == "step":
            step = _num(obj, "step", lineno)
            peak = _num(obj, "cuda_max_alloc", lineno)
            row = {
                "loss": float(_num(obj, "loss", lineno, float)),
                "step_time": _num(obj, "step_ns", lineno) / 1e9,
                "cuda_alloc": float(_num(obj, "cuda_alloc", lineno)),
                "cuda_max_alloc": float(peak),
            }
            if batch_start is None:
                batch_start = t_us
            pending.add(step, t_us, row)
            if prev_peak is not None:
                for jstep, before, after in peak_jumps([prev_peak, (step, peak)]):
                    # the batch holding this step goes first, so the mark follows its value
                    yield from pending.take()
                    batch_start = None
                    alloc = _num(obj, "cuda_alloc", lineno)
                    yield Event(
                        "mark",
                        f"CUDA memory peak jumped {_gb(before)} → {_gb(after)} at step {jstep} "
                        f"(about {_gb(after - alloc)} allocated on top of {_gb(alloc)} in use)",
                        run=RUN,
                        detail={
                            "step": jstep,
                            "cuda_max_alloc_before": before,
                            "cuda_max_alloc_after": after,
                            "cuda_alloc": alloc,
                        },
                        t_us=t_us,
                    )
            prev_peak = (step, peak)
        elif kind == "nvml":
            yield GpuSample(
                0,
                gpu_name,
                temp_c=float(_num(obj, "temp_c", lineno, float)),
                power_mw=_num(obj, "power_mw", lineno),
                power_limit_mw=_num(obj, "power_limit_mw", lineno),
                sm_clock_mhz=_num(obj, "sm_clock_mhz", lineno),
                mem_clock_mhz=_num(obj, "mem_clock_mhz", lineno),
                max_sm_clock_mhz=_num(obj, "max_sm_clock_mhz", lineno),
                clock_event_reasons=_num(obj, "clock_event_reasons", lineno),
                util_gpu=float(_num(obj, "util_gpu", lineno, float)),
                util_mem=float(_num(obj, "util_mem", lineno, float)),
                mem_used=_num(obj, "mem_used", lineno),
                mem_total=_num(obj, "mem_total", lineno),
                t_us=t_us,
            )
            yield ProcessSample(RUN, 0, rss=_num(obj, "rss", lineno), t_us=t_us)
            yield SystemSample(
                cpu_percent=float(_num(obj, "cpu_percent_sys", lineno, float)), t_us=t_us
            )
        else:
            raise ConvertError(f"{path}, line {lineno}: unknown record kind {kind!r}")
    yield from pending.take()
    yield RunEnd(RUN, t_us=t_us)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Write the trace for ``src`` to ``dst`` (via a temporary file); returns its size in bytes."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        # frames are cut by size only (no time-based flush): the same input gives the same bytes
        with TraceWriter(tmp, flush_interval=1e9, keyframe_bytes=KEYFRAME_BYTES) as w:
            for rec in h200_records(src):
                w.append(rec)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    return dst.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python tools/convert_h200.py",
        description="Convert the recorded H200 run (JSON lines) into an edgescope trace.",
    )
    p.add_argument("src", metavar="JSONL")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    args = p.parse_args(argv)
    try:
        size = convert(args.src, args.output)
    except FileNotFoundError as e:
        print(f"convert: {e.filename}: no such file", file=sys.stderr)
        return 2
    except ConvertError as e:
        print(f"convert: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
