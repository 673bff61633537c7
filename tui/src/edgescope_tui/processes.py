"""The process table of a run at the cursor, as plain rows: UI-free.

Built from :attr:`RunState.procs <edgescope_tui.state.RunState.procs>` (each process's own
history from its process samples) for a time: the figures of each process's last sample at or
before it. A process not in the run's last sweep of samples before that time has exited (the
collector samples every process of a run in one sweep) and is listed after the living, with
``exited`` as its state. Sorted by a column, filtered by text, and either flat or as the run's
process tree (children under their parent, siblings in the sort order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .series import Series
from .state import PidState, RunState, log_at

__all__ = ["ProcRow", "SORTS", "STATE_NAMES", "process_rows", "matches"]

SORTS = ("cpu", "rss", "peak", "gpu", "threads", "pid", "command")
"""The columns a table sorts by, in the order a key cycles through them."""

STATE_NAMES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk wait",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
    "P": "parked",
    "W": "paging",
}
"""The kernel's state letters (``/proc/PID/stat``) in words."""


@dataclass(frozen=True, slots=True)
class ProcRow:
    """One process at the cursor. ``None`` where its samples lack the figure."""

    pid: int
    ppid: int | None
    command: str
    cpu: float | None
    rss: float | None
    rss_peak: float | None
    gpu_mem: float | None
    """Summed over the GPUs it uses, where the driver gives the figure."""
    threads: int | None
    state: str
    """The kernel's state in words, or ``exited``."""
    alive: bool
    depth: int = 0
    """Its depth in the tree (0 flat, or a root of the tree)."""
    prefix: str = ""
    """Tree branches to draw before the command (``├─ ``)."""


def _at(s: Series, n_end: float | None) -> float | None:
    n = s.count_until(n_end)
    return s.y[n - 1] if n else None


def _row(p: PidState, end: int | None, sweep: float | None) -> ProcRow | None:
    n = p.seen_until(end)
    if n == 0:
        return None  # not sampled yet at the cursor
    last = p.seen.items[n - 1]
    alive = sweep is None or last >= sweep
    letter = log_at(p.states, end) or ""
    state = STATE_NAMES.get(letter, letter or "?") if alive else "exited"
    gpu = [v for v in (_at(g, end) for g in p.gpu_mem.values()) if v is not None]
    peak = log_at(p.rss_peak, end)
    return ProcRow(
        pid=p.pid,
        ppid=p.ppid,
        command=p.command or "?",
        cpu=_at(p.cpu, end),
        rss=_at(p.rss, end),
        rss_peak=None if peak is None else float(peak),
        gpu_mem=sum(gpu) if gpu else None,
        threads=log_at(p.threads, end),
        state=state,
        alive=alive,
    )


def matches(row: ProcRow, text: str) -> bool:
    """Whether a filter's text is in the row's command or state, or is its pid."""
    t = text.strip().lower()
    return not t or t in row.command.lower() or t in row.state or t == str(row.pid)


def _sort_value(r: ProcRow, sort: str) -> float | str | None:
    """What a row sorts by; None where its samples lack the figure."""
    if sort == "command":
        return r.command.lower()
    if sort == "pid":
        return float(r.pid)
    if sort == "threads":
        return None if r.threads is None else float(r.threads)
    return {"cpu": r.cpu, "rss": r.rss, "peak": r.rss_peak, "gpu": r.gpu_mem}.get(sort)


def process_rows(
    s: RunState,
    run: int,
    end: int | None,
    *,
    sort: str = "cpu",
    descending: bool = True,
    text: str = "",
    tree: bool = False,
) -> list[ProcRow]:
    """The run's processes at ``end`` (None: the newest samples), living first.

    ``sort`` is one of :data:`SORTS`; numbers sort highest first with ``descending``, text
    (the command) A to Z unless reversed; unknown figures go last. ``text`` keeps the rows it
    :func:`matches` (in a tree, with the parents that lead to them). ``tree`` nests each
    process under its parent.
    """
    procs = [p for (r, _), p in s.procs.items() if r == run]
    lasts = [p.seen.items[n - 1] for p in procs if (n := p.seen_until(end))]
    sweep = max(lasts) if lasts else None
    rows = [r for r in (_row(p, end, sweep) for p in procs) if r is not None]
    # numbers read best highest first; names (and pids) A to Z
    reverse = descending if sort not in ("command", "pid") else not descending

    def order(items: Sequence[ProcRow]) -> list[ProcRow]:
        """Living first, then exited; in each, known figures in order, unknown ones last."""
        out: list[ProcRow] = []
        for alive in (True, False):
            group = [r for r in items if r.alive is alive]
            known = [(v, r) for r in group if (v := _sort_value(r, sort)) is not None]
            known.sort(key=lambda vr: (vr[0], vr[1].pid), reverse=reverse)
            out += [r for _, r in known]
            out += [r for r in group if _sort_value(r, sort) is None]
        return out

    if not tree:
        return [r for r in order(rows) if matches(r, text)]
    by_pid = {r.pid: r for r in rows}
    children: dict[int | None, list[ProcRow]] = {}
    for r in rows:
        parent = r.ppid if r.ppid in by_pid and r.ppid != r.pid else None
        children.setdefault(parent, []).append(r)
    keep: set[int] = set()
    if text.strip():
        for r in rows:
            if matches(r, text):
                p: ProcRow | None = r
                while p is not None and p.pid not in keep:
                    keep.add(p.pid)
                    p = by_pid.get(p.ppid) if p.ppid is not None and p.ppid != p.pid else None
    else:
        keep = set(by_pid)
    out: list[ProcRow] = []

    def walk(parent: int | None, depth: int, lead: str) -> None:
        kids = [r for r in order(children.get(parent, [])) if r.pid in keep]
        for i, r in enumerate(kids):
            last = i == len(kids) - 1
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            out.append(replace(r, depth=depth, prefix=lead + branch))
            nxt = lead + ("" if parent is None else ("   " if last else "│  "))
            walk(r.pid, depth + 1, nxt)

    walk(None, 0, "")
    return out
