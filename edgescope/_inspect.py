"""``edgescope inspect FILE [--json]``: what a trace holds, for people and for scripts."""

from __future__ import annotations

import json
import math
from typing import TextIO

from edgescope_tracing import TraceReader
from edgescope_tracing.summary import TraceSummary, iso_time, summarize_file

SEVERITY = {0: "info", 1: "warning", 2: "error"}


def inspect_file(path: str) -> TraceSummary:
    with TraceReader(path) as reader:
        return summarize_file(reader)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


def _step(step: int | None) -> str:
    return "-" if step is None else str(step)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def print_json(s: TraceSummary, out: TextIO) -> None:
    json.dump(s.to_json(), out, indent=2, allow_nan=False)
    out.write("\n")


def print_human(path: str, s: TraceSummary, out: TextIO) -> None:
    w = out.write
    w(f"{path}: edgescope trace format {s.format_version}, {_size(s.bytes)}, {s.records} records\n")
    if s.first_t is not None:
        w(f"  time   {iso_time(s.first_t)} .. {iso_time(s.last_t)}\n")
    w("  kinds  " + ", ".join(f"{k} {n}" for k, n in sorted(s.kinds.items())) + "\n")
    for r in s.runs:
        if r.end is None:
            state = "did not finish (no run end recorded)"
        else:
            state = f"exit code {r.exit_code}" if r.exit_code is not None else "finished"
            state += f" after {(r.end - r.start) / 1e6:.1f} s"
        w(f"  run    {r.name} ({r.id[:12]}) on {r.host}, pid {r.pid}: {state}")
        w(f", {r.dropped} records dropped\n" if r.dropped else "\n")
    if s.metrics:
        w("  metrics\n")
        width = max(len(k) for k in s.metrics)
        w(
            f"    {'key':<{width}}  {'count':>8}  {'first':>11}  {'last':>11}  {'min':>11}  "
            f"{'max':>11}  {'last step':>9}\n"
        )
        for k, m in sorted(s.metrics.items()):
            w(
                f"    {k:<{width}}  {m.count:>8}  {_num(m.first):>11}  {_num(m.last):>11}  "
                f"{_num(m.min):>11}  {_num(m.max):>11}  {_step(m.last_step):>9}"
            )
            w(f"  ({m.non_finite} non-finite)\n" if m.non_finite else "\n")
    if s.stack_samples:
        w(f"  stacks {s.stack_samples} samples ({', '.join(sorted(s.stack_backends))})\n")
    if s.events:
        w(f"  events {len(s.events)}\n")
        for e in s.events[:20]:
            w(
                f"    {iso_time(e.t_us)}  {e.kind:<8} {SEVERITY.get(e.severity, e.severity)}: "
                f"{e.message}\n"
            )
        if len(s.events) > 20:
            w(f"    ... {len(s.events) - 20} more (see --json)\n")
    if s.damage:
        w(
            f"  damage {s.damaged_frames} damaged span(s)"
            + (", last frame truncated (incomplete write)" if s.truncated else "")
            + "\n"
        )
        for d in s.damage[:10]:
            w(f"    at byte {d.offset}, {d.length} bytes: {d.reason}\n")
    else:
        w("  damage none\n")
    if not s.indexed:
        w("  index  none (the file was not closed cleanly; seeking rebuilds it by a scan)\n")
