"""The Run tab: what the trace says about a run that no chart shows, as markup: UI-free.

Identity and outcome (name, id, host, pid, start, end, exit), the summary (each metric's
last value, lowest and highest, at its last step; memory peaks; events by severity), the
configuration the run was started with, and the device facts it recorded (board, CPU, memory,
kernel, Python; GPU and driver where the SDK or the collector gave them; each GPU the samples
name with its memory and power limit). Every text from the trace is escaped: a config value
cannot drive the terminal or the markup.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from edgescope_tracing.summary import exit_words
from edgescope_tracing.text import escape as escape_text
from rich.markup import escape

from .chartspec import fmt_bytes, fmt_number, fmt_offset
from .state import RunState
from .views import metric_format

__all__ = ["run_overview", "flatten"]

BYTE_FACTS = ("mem_total", "memory", "gpu_mem_total")
"""Device facts that count bytes."""


def _text(v: object) -> str:
    return escape(escape_text(str(v)))


def flatten(m: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of a nested map, leaves in order."""
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


def _value(key: str, v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int | float):
        if key.rsplit(".", 1)[-1] in BYTE_FACTS:
            return fmt_bytes(v)
        return fmt_number(v) if isinstance(v, float) or abs(v) >= 1e4 else str(v)
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return str(v)


def _table(rows: list[tuple[str, str]], empty: str) -> list[str]:
    if not rows:
        return [f"  [dim]{empty}[/dim]"]
    width = min(28, max(len(k) for k, _ in rows))
    return [f"  {_text(k).ljust(width)}  {_text(v)}" for k, v in rows]


def _when(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_overview(s: RunState, run: int) -> str:
    """The Run tab's text for ``run`` of the state."""
    info = s.runs.get(run)
    out: list[str] = []
    if info is None:
        return "[dim]no run start in what is loaded: nothing is known of this run yet[/dim]"
    out.append(f"[b]{_text(info.name)}[/b]  [dim]run {run} · id {_text(info.run_id)}[/dim]")
    ident = [("host", info.host), ("pid", str(info.pid)), ("started", _when(info.start_us))]
    if info.end_us is not None:
        ident.append(("ended", f"{_when(info.end_us)} ({exit_words(info.exit_code)})"))
        ident.append(("lasted", fmt_offset(info.end_us - info.start_us)))
    else:
        newest = s.stream.last_us
        so_far = f" ({fmt_offset(newest - info.start_us)} so far)" if newest else ""
        ident.append(("ended", "not yet" + so_far))
    if info.dropped:
        ident.append(("dropped", f"{info.dropped} items dropped by the producer"))
    out += _table(ident, "")
    out.append("")
    out.append("[b]summary[/b]")
    summary: list[tuple[str, str]] = []
    for key in s.metric_keys(run):
        ser = s.metrics[(run, key)]
        if not ser.n:
            continue
        fmt, scale = metric_format(key)
        last = ser.y[ser.n - 1] * scale
        lo, hi = ser.lo * scale, ser.hi * scale
        line = f"last {fmt(last)} at step {ser.x[ser.n - 1]:.0f}"
        if math.isfinite(lo) and math.isfinite(hi):
            line += f" · min {fmt(lo)} · max {fmt(hi)}"
        line += f" · {ser.n:,} values"
        if ser.non_finite:
            line += f" · {ser.non_finite} non-finite"
        summary.append((key, line))
    p = s.proc.get(run)
    if p is not None:
        if p.rss_peak:
            summary.append(("RSS peak", fmt_bytes(p.rss_peak)))
        if p.cgroup_peak:
            limit = f" of its {fmt_bytes(p.cgroup_limit)} limit" if p.cgroup_limit else ""
            summary.append(("cgroup peak", fmt_bytes(p.cgroup_peak) + limit))
        if p.oom_kills:
            summary.append(("OOM kills", str(p.oom_kills)))
    evs = [e for e in s.events.view() if e.run in (run, -1)]
    if evs:
        counts = [sum(1 for e in evs if e.severity == k) for k in (0, 1, 2)]
        summary.append(("events", f"{counts[2]} error, {counts[1]} warning, {counts[0]} info"))
    out += _table(summary, "nothing logged yet")
    out.append("")
    out.append("[b]config[/b]")
    out += _table([(k, _value(k, v)) for k, v in flatten(info.config)], "no config recorded")
    out.append("")
    out.append("[b]device[/b]")
    facts = [(k, _value(k, v)) for k, v in flatten(info.device)]
    for g in s.gpus.values():
        parts = [g.name]
        if g.mem_total:
            parts.append(f"{fmt_bytes(g.mem_total)}")
        if g.power_limit_w:
            parts.append(f"power limit {g.power_limit_w:.0f} W")
        if g.max_sm_clock_mhz:
            parts.append(f"SM up to {fmt_number(g.max_sm_clock_mhz)} MHz")
        facts.append((f"gpu{g.index} (sampled)", " · ".join(parts)))
    if s.system.mem_total and not any(k == "mem_total" for k, _ in facts):
        facts.append(("memory (sampled)", fmt_bytes(s.system.mem_total)))
    out += _table(facts, "no device facts recorded")
    return "\n".join(out)
