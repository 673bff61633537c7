"""``edgescope inspect FILE [--json]``: what a trace holds, for people and for scripts."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TextIO

from edgescope_tracing import TraceReader
from edgescope_tracing.summary import TraceSummary, summarize_file

SEVERITY = {0: "info", 1: "warning", 2: "error"}


def inspect_file(path: str) -> TraceSummary:
    with TraceReader(path) as reader:
        return summarize_file(reader)


def _num(v: float | None) -> str:
    """Six significant digits; whole numbers (byte counts, steps) in full with separators."""
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.6g}"


def _step(step: int | None) -> str:
    return "-" if step is None else str(step)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _when(t_us: int) -> str:
    """``2026-11-27 17:34:35.568 UTC``: milliseconds are enough for people."""
    try:
        when = datetime.fromtimestamp(t_us / 1e6, UTC)
    except (ValueError, OverflowError, OSError):
        return f"t_us={t_us}"
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _span(t0: int, t1: int) -> str:
    """The end of a time span, without the date when it is the same day."""
    a, b = _when(t0), _when(t1)
    return b[11:] if a[:10] == b[:10] else b


def _duration(us: int) -> str:
    s = us / 1e6
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def print_json(s: TraceSummary, out: TextIO) -> None:
    json.dump(s.to_json(), out, indent=2, allow_nan=False)
    out.write("\n")


def print_human(path: str, s: TraceSummary, out: TextIO) -> None:
    def line(label: str, text: str) -> None:
        out.write(f"  {label:<8}{text}".rstrip() + "\n")

    out.write(
        f"{path}: edgescope trace format {s.format_version}, {_size(s.bytes)}, "
        f"{s.records} records\n"
    )
    if s.first_t is not None and s.last_t is not None:
        line(
            "time",
            f"{_when(s.first_t)} .. {_span(s.first_t, s.last_t)} "
            f"({_duration(s.last_t - s.first_t)})",
        )
    line("records", ", ".join(f"{k} {n}" for k, n in sorted(s.kinds.items())) or "none")
    for r in s.runs:
        if r.end is None:
            state = "no run end recorded (still running, or it was killed)"
        else:
            state = "finished" if r.exit_code is None else f"exit code {r.exit_code}"
            state += f" after {_duration(r.end - r.start)}"
        if r.dropped:
            state += f", {r.dropped} records dropped"
        line("run", f"{r.name} ({r.id[:12]}) on {r.host}, pid {r.pid}: {state}")
    if s.metrics:
        line("metrics", "")
        table = [("key", "count", "first", "last", "min", "max", "last step", "")]
        for k, m in sorted(s.metrics.items()):
            table.append(
                (
                    k,
                    f"{m.count:,}",
                    _num(m.first),
                    _num(m.last),
                    _num(m.min),
                    _num(m.max),
                    _step(m.last_step),
                    f"({m.non_finite} not finite)" if m.non_finite else "",
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(7)]
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:7], widths[1:], strict=True)]
            out.write(f"    {'  '.join(cells)}  {row[7]}".rstrip() + "\n")
    if s.stack_samples:
        line("stacks", f"{s.stack_samples} samples from {', '.join(sorted(s.stack_backends))}")
    for e in s.events:
        why = e.detail.get("no_stacks") or e.detail.get("stacks_note")
        if isinstance(why, str):
            line("stacks", why)
    if s.events:
        line("events", str(len(s.events)))
        for e in s.events[:20]:
            sev = SEVERITY.get(e.severity, str(e.severity))
            out.write(f"    {_when(e.t_us)}  {e.kind:<8} {sev:<7} {e.message}\n")
        if len(s.events) > 20:
            out.write(f"    ... {len(s.events) - 20} more (see --json)\n")
    damaged = [d for d in s.damage if not d.truncated]
    if damaged:
        lost = sum(d.length for d in damaged)
        line(
            "damage",
            f"{len(damaged)} damaged span(s), {_size(lost)} skipped; every other frame was read",
        )
        for d in damaged[:10]:
            out.write(f"    at byte {d.offset}, {d.length} bytes: {d.reason}\n")
        if len(damaged) > 10:
            out.write(f"    ... {len(damaged) - 10} more (see --json)\n")
    else:
        line("damage", "none")
    for d in s.damage:
        if d.truncated:
            line(
                "end",
                f"the last frame is cut short at byte {d.offset} ({d.length} bytes): an "
                "incomplete write (a crash, or a writer still at work)",
            )
    if not s.indexed:
        line("index", "none (the file was not closed); seeking rebuilds it by a scan")
