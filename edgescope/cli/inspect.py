"""``edgescope inspect FILE [--json]``: what a trace holds, for people and for scripts.

The summary streams through the file (:mod:`edgescope_tracing.summary`): memory does not grow
with it. Everything from the trace is escaped before it reaches the terminal
(:func:`edgescope_tracing.text.escape`); ``--json`` is ASCII, every other character escaped.

A post-mortem reads plainly: how each run ended (a signal by name, the OOM killer and the limit
it enforced), the container and cgroup it ran in with its CPU quota's throttling, where a run
that never ended stopped (``lost: the process died without finishing (SIGKILL or power loss)
at ...``), the stored traceback of an exception, the memory peaks, the functions on top of the
sampled stacks, and events with like ones folded into one line with a count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from edgescope_tracing import Event, TraceReader
from edgescope_tracing.causes import cpu_quota_text
from edgescope_tracing.files import check_input
from edgescope_tracing.summary import (
    RunSummary,
    TraceSummary,
    event_traceback,
    exit_words,
    summarize_file,
)
from edgescope_tracing.text import escape, escape_block

from edgescope.errors import EdgescopeError, file_error

SEVERITY = {0: "info", 1: "warning", 2: "error"}
EVENT_LINES = 20
"""Lines of events (groups of like events) the human summary shows."""
TRACEBACK_LINES = 40
"""Lines of a stored traceback shown (the last ones: the exception is at the end)."""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("inspect", help="summarize a trace file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        summary = inspect_file(args.file)
    except OSError as e:
        raise file_error(args.file, e) from None
    if args.json:
        print_json(summary, sys.stdout)
    else:
        print_human(args.file, summary, sys.stdout)
    return 0


def inspect_file(path: str) -> TraceSummary:
    check_input(path)
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


def _clock(t_us: int) -> str:
    """``17:34:35 UTC``: the time of day a run stopped."""
    when = _when(t_us)
    return when if when.startswith("t_us=") else when[11:19] + " UTC"


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


def _writing(fn: Callable[..., None]) -> Callable[..., None]:
    """A failed write to the output (a full disk under ``> out``) is one sentence, exit 1."""

    def wrapped(*args: Any) -> None:
        try:
            fn(*args)
        except BrokenPipeError:
            raise  # the reader went away (``| head``): main() ends quietly
        except OSError as e:
            raise EdgescopeError(f"writing the summary failed: {e.strerror or e}", 1) from None

    wrapped.__doc__ = fn.__doc__
    return wrapped


@_writing
def print_json(s: TraceSummary, out: TextIO) -> None:
    data = s.to_json()
    for r, j in zip(s.runs, data["runs"], strict=True):
        if r.end is None:
            j["state"] = "running" if _alive_here(r) else "lost"
    json.dump(data, out, indent=2, allow_nan=False)
    out.write("\n")


def _alive_here(r: RunSummary) -> bool:
    """Whether the run's process is still running on this machine: same host name, and a
    process with its pid that started no later than the run (not a later one with the pid)."""
    if r.host != socket.gethostname():
        return False
    try:
        with open(f"/proc/{r.pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        with open("/proc/stat", "rb") as f:
            btime = next(
                int(line.split()[1])
                for line in f.read().decode().splitlines()
                if line.startswith("btime ")
            )
    except (OSError, ValueError, StopIteration, IndexError):
        return False
    try:
        start_ticks = int(stat.rpartition(")")[2].split()[19])
    except (IndexError, ValueError):
        return False
    started_us = (btime + start_ticks / os.sysconf("SC_CLK_TCK")) * 1e6
    return started_us <= r.start + 1_000_000  # the clock tick's and btime's rounding


def _where(r: RunSummary) -> str:
    at = f"at {_clock(r.last_t)}" if r.last_t else "before any record"
    step = f"last step {r.last_step}" if r.last_step is not None else "no step logged"
    return f"{at}, {step}"


def run_state(r: RunSummary, *, closed: bool) -> str:
    """How a run ended, in words (``closed``: the file was closed, so no more is coming)."""
    if r.end is None:
        if _alive_here(r):
            return f"still running (pid {r.pid} is alive here), last record {_where(r)}"
        if closed or r.host == socket.gethostname():
            return f"lost: the process died without finishing (SIGKILL or power loss) {_where(r)}"
        return (
            "lost: the process died without finishing (SIGKILL or power loss) "
            f"{_where(r)}; or it is still running on {escape(r.host)} and the file still growing"
        )
    took = f" after {_duration(r.end - r.start)}"
    if r.cause is not None:
        code = f" ({exit_words(r.exit_code)})" if r.exit_code is not None else ""
        step = f" (last step {r.last_step})" if r.last_step is not None else ""
        return f"failed: {escape(r.cause)}{code}{took}{step}"
    if r.lost_contact is not None:
        return f"lost contact: {escape(r.lost_contact)}; last record {_where(r)}"
    if r.exit_code is None:
        return f"ended{took}; its exit code was not recorded"
    if r.exit_code == 0:
        return f"finished{took} (exit code 0)"
    step = f" (last step {r.last_step})" if r.last_step is not None else ""
    return f"failed: {exit_words(r.exit_code)}{took}{step}"


@_writing
def print_human(path: str, s: TraceSummary, out: TextIO) -> None:
    def line(label: str, text: str) -> None:
        out.write(f"  {label:<8}{text}".rstrip() + "\n")

    out.write(
        f"{escape(path)}: edgescope trace format {s.format_version}, {_size(s.bytes)}, "
        f"{s.records} records\n"
    )
    if s.first_t is not None and s.last_t is not None:
        line(
            "time",
            f"{_when(s.first_t)} .. {_span(s.first_t, s.last_t)} "
            f"({_duration(s.last_t - s.first_t)})",
        )
    line("records", ", ".join(f"{k} {n}" for k, n in sorted(s.kinds.items())) or "none")
    if s.runs_other:
        line("runs", f"{len(s.runs)} summarized below; {s.runs_other} more not summarized")
    for r in s.runs:
        state = run_state(r, closed=s.indexed)
        if r.dropped:
            state += f", {r.dropped:,} items dropped"  # metric values, events, stack windows
        elif r.end is not None and r.lost_contact is None:
            # The SDK's own count, in its RunEnd (also where it recorded no exit code: a script
            # that never called finish()); not the collector's stand-in end for a vanished run.
            state += ", nothing dropped"
        line(
            "run",
            f"{escape(r.name)} ({escape(r.id[:12])}) on {escape(r.host)}, pid {r.pid}: {state}",
        )
        mem = _memory(r)
        if mem:
            line("memory", mem)
        line("energy", _energy(r, s))
        if r.energy is not None and r.energy.marks:
            marks = r.energy.marks
            shown = marks if len(marks) <= EVENT_LINES else marks[: EVENT_LINES - 1] + marks[-1:]
            for i, (text, t, j) in enumerate(shown):
                if len(marks) > EVENT_LINES and i == EVENT_LINES - 1:
                    out.write(f"    ... {len(marks) - EVENT_LINES} more marks (see --json)\n")
                out.write(f"    {_clock(t)}  {_joules(j):>10}  up to {escape(text)}\n")
        cg = _cgroup(r)
        if cg:
            line("cgroup", cg)
    for e in s.crashes:
        _exception(e, s, out)
    if s.crashes_total > len(s.crashes):
        out.write(f"    ... {s.crashes_total - len(s.crashes)} more crashes (tracebacks)\n")
    if s.energy_sources:
        said = [f"{s.energy_wraps} counter wrap(s)"] if s.energy_wraps else []
        said += [f"{s.energy_resets} counter restart(s)"] if s.energy_resets else []
        more = f" ({', '.join(said)})" if said else ""
        line("power", f"energy sources {', '.join(map(escape, s.energy_sources))}{more}")
    for i, (name, peak, total) in sorted(s.gpu_memory.items()):
        of = f" of {_size(total)}" if total else ""
        line("gpu mem", f"gpu{i} {escape(name)}: peak {_size(peak)} used{of}")
    if s.metrics:
        line("metrics", "")
        table = [("key", "count", "first", "last", "min", "max", "last step", "")]
        for k, m in sorted(s.metrics.items()):
            table.append(
                (
                    escape(k),
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
    if s.metric_values_other:
        out.write(
            f"    ... {s.metric_values_other:,} values of further keys not summarized "
            f"(beyond {len(s.metrics):,} keys)\n"
        )
    if s.stack_samples:
        backends = ", ".join(escape(b) for b in sorted(s.stack_backends))
        line("stacks", f"{s.stack_samples} samples from {backends}")
        _functions(s, out)
    for note in s.stack_notes:
        line("stacks", escape(note))
    if s.events_total:
        _events(s, out, line)
    damaged = [d for d in s.damage if not d.truncated]
    if damaged:
        lost = sum(d.length for d in damaged)
        line(
            "damage",
            f"{len(damaged)} damaged span(s), {_size(lost)} skipped; every other frame was read",
        )
        for d in damaged[:10]:
            out.write(f"    at byte {d.offset}, {d.length} bytes: {escape(d.reason)}\n")
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


def _joules(j: float) -> str:
    """``46,747 J``, ``2.57 J``: whole joules with separators from 100 J up."""
    return f"{j:,.0f} J" if j >= 100 else f"{j:.3g} J"


def _energy(r: RunSummary, s: TraceSummary) -> str:
    """The run's energy in words, or why there is none."""
    e = r.energy
    if e is None:
        if s.energy_sources:
            return "no power record covers the run's time"
        return "no energy source in the trace (no power records)"
    parts = [f"{_joules(e.total_j)} ({e.wh:.4g} Wh)"]
    if e.mean_w is not None:
        parts.append(f"mean {e.mean_w:.3g} W over {_duration(e.covered_us)}")
    if e.per_step_j is not None:
        parts.append(f"{e.per_step_j:.3g} J/step over {e.steps:,} steps")
    if len(e.joules) > 1:
        parts.append(", ".join(f"{escape(k)} {_joules(j)}" for k, j in sorted(e.joules.items())))
    return "; ".join(parts)


def _memory(r: RunSummary) -> str:
    m = r.memory
    parts = []
    if m.rss_peak is not None:
        parts.append(f"peak RSS {_size(m.rss_peak)} (VmHWM, pid {m.rss_peak_pid})")
    if m.cgroup_peak is not None:
        limit = f" of a {_size(m.cgroup_limit)} limit" if m.cgroup_limit is not None else ""
        parts.append(f"cgroup peak {_size(m.cgroup_peak)}{limit}")
    elif m.cgroup_limit is not None:
        parts.append(f"cgroup limit {_size(m.cgroup_limit)}")
    if m.oom_kills:
        parts.append(f"{m.oom_kills} OOM kill(s) in its cgroup")
    return ", ".join(parts)


def _cgroup(r: RunSummary) -> str:
    """Where the run ran (its container, its cgroup) and what its cgroup's limits did to it."""
    c = r.cgroup
    if c.path is None:
        return ""
    box = c.container
    parts = [f"{escape(box.text)} ({escape(c.path)})" if box is not None else escape(c.path)]
    if c.quota_us is not None and c.period_us:
        quota = cpu_quota_text(c.quota_us, c.period_us, c.version)
        share, periods = c.throttled_share, c.rise(c.periods)
        if share is not None and periods:
            waited = c.rise(c.throttled_us)
            spent = f", {waited / 1e6:.1f} s throttled" if waited else ""
            quota += f": throttled in {share:.0%} of {periods:,} periods{spent}"
        parts.append(quota)
    if c.memory_high is not None:
        high = f"memory.high {_size(c.memory_high)}"
        over = c.rise(c.high_events)
        if over:
            high += f": over it {over:,} time(s), reclaim-throttled"
        parts.append(high)
    hit = c.rise(c.max_events)
    if hit:
        parts.append(f"hit its memory limit {hit:,} time(s)")
    if c.swap_peak:
        parts.append(f"swap up to {_size(c.swap_peak)}")
    return ", ".join(parts)


def _exception(e: Event, s: TraceSummary, out: TextIO) -> None:
    run = next((r for r in s.runs if r.run == e.run), None)
    who = f"run {escape(run.name)}" if run is not None else "the device"
    out.write(f"  {'crash':<8}{who}: {escape(e.message)} at {_clock(e.t_us)}\n")
    tb = event_traceback(e)
    if tb is None:
        out.write("    (no traceback was stored)\n")
        return
    lines = escape_block(tb.rstrip()).splitlines()
    if len(lines) > TRACEBACK_LINES:
        out.write(f"    ... {len(lines) - TRACEBACK_LINES} lines (see --json)\n")
        lines = lines[-TRACEBACK_LINES:]
    for text in lines:
        out.write(f"    | {text}".rstrip() + "\n")


def _functions(s: TraceSummary, out: TextIO) -> None:
    top = s.top_functions(10)
    if not top:
        return
    total = s.stack_samples
    out.write(f"    {'self':>6} {'total':>6}  function (share of {total} samples)\n")
    for name, n_self, n_total in top:
        out.write(
            f"    {100 * n_self / total:5.1f}% {100 * n_total / total:5.1f}%  {escape(name)}\n"
        )
    if s.functions_other:
        out.write(f"    ({s.functions_other} samples of further functions not counted)\n")


def _events(s: TraceSummary, out: TextIO, line: Callable[[str, str], None]) -> None:
    kinds = ", ".join(f"{escape(k)} {n}" for k, n in sorted(s.event_kinds.items()))
    line("events", f"{s.events_total} ({kinds})")
    groups = list(s.groups.values())
    shown = groups
    if len(groups) > EVENT_LINES:
        half = EVENT_LINES // 2
        shown = groups[:half] + groups[-half:]
    for i, g in enumerate(shown):
        if len(groups) > EVENT_LINES and i == EVENT_LINES // 2:
            out.write(f"    ... {len(groups) - EVENT_LINES} more lines (see --json)\n")
        e = g.first
        sev = SEVERITY.get(e.severity, str(e.severity))
        more = ""
        if g.count > 1:
            more = f"  [x{g.count}: {g.count - 1} more like it, until {_span(e.t_us, g.last_t)}]"
        elif e.kind == "gap" and isinstance(e.detail, dict) and type(e.detail.get("to_us")) is int:
            more = f"  [until {_span(e.t_us, e.detail['to_us'])}]"  # what a producer dropped
        out.write(f"    {_when(e.t_us)}  {escape(e.kind):<8} {sev:<7} {escape(e.message)}{more}\n")
    if s.ungrouped:
        out.write(f"    ... {s.ungrouped} events of further kinds (see --json)\n")
