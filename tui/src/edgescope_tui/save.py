"""Saving the run on show, or the window of it on show, from the TUI: UI-free.

A :class:`SaveRequest` names the run, the time window (None: all of the run), the format and
the path. :func:`save` reads the trace file again from the disk (the state the views draw keeps
folded figures, not records), or takes the records it is given (a live dashboard asks the
collector for its history again, see :meth:`DashboardScreen.action_save`), keeps the records of
that run and the device's own records (system, thermal, GPU samples, device events) inside the
window, and writes them:

- ``est``: an edgescope trace (a new file, keyframes and index of its own); the run's start
  is always written, whatever the window, so a saved window is a trace that opens on its own;
- ``csv`` and ``jsonl``: the rows of ``edgescope export --system --events``, through the same
  writers (:mod:`edgescope_tracing.export`).

Nothing is ever overwritten: a path that exists is refused, and a file left half-written by a
failure is removed. Errors are :class:`SaveError`, one sentence each.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgescope_tracing import (
    Event,
    Keyframe,
    Metrics,
    Record,
    RunStart,
    TraceError,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing.export import rows, write_csv, write_jsonl
from edgescope_tracing.text import escape

from .errors import TuiError
from .sources.live import Opener, TcpOpener

__all__ = [
    "FORMATS",
    "SaveError",
    "SaveRequest",
    "SaveResult",
    "default_name",
    "fresh_opener",
    "save",
    "select",
]

Format = Literal["est", "csv", "jsonl"]
FORMATS: tuple[Format, ...] = ("est", "csv", "jsonl")
"""What a run can be saved as: an edgescope trace, CSV, JSON lines."""


class SaveError(TuiError, TraceError):
    """The run could not be saved (one sentence: which path, and why)."""


@dataclass(frozen=True, slots=True)
class SaveRequest:
    """What to save, and where."""

    source: Path | None
    """The trace file the run is read from (None: the records are given to :func:`save`)."""
    run: int
    path: Path
    fmt: Format = "est"
    t0: int | None = None
    """The window's start (µs); None: from the run's start."""
    t1: int | None = None
    """The window's end; None: to the end."""


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What was written: how many records (a trace) or rows (CSV, JSON lines), and how many
    damaged spans of the source were skipped."""

    path: Path
    written: int
    damaged: int = 0


def default_name(run_name: str, run: int, fmt: Format, window: bool) -> str:
    """A file name from the run's name: ``h200-mlp-run0.est``, ``...-window.csv``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.") or "run"
    return f"{stem}-run{run}{'-window' if window else ''}.{fmt}"


def _inside(t: int, t0: int | None, t1: int | None) -> bool:
    return (t0 is None or t >= t0) and (t1 is None or t <= t1)


def select(records: Iterable[Record], run: int, t0: int | None, t1: int | None) -> Iterator[Record]:
    """The records of ``run`` and of the device as a whole within ``[t0, t1]``; the run's start
    whatever its time; a metric batch cut to its values inside. Other runs' records and the
    source's keyframes (a writer makes its own) are left out."""
    for rec in records:
        if isinstance(rec, Keyframe):
            continue
        if isinstance(rec, RunStart):
            if rec.run == run:
                yield rec
            continue
        owner = getattr(rec, "run", None)
        if owner is not None and owner != run and not (isinstance(rec, Event) and owner < 0):
            continue  # another run's (an event of run -1 is the device's: kept)
        if isinstance(rec, Metrics):
            keep = [i for i, t in enumerate(rec.times_us) if _inside(t, t0, t1)]
            if len(keep) == len(rec.values):
                yield rec
            elif keep:
                yield Metrics(
                    rec.run,
                    rec.key,
                    tuple(rec.steps[i] for i in keep),
                    tuple(rec.times_us[i] for i in keep),
                    tuple(rec.values[i] for i in keep),
                )
            continue
        if _inside(rec.t_us, t0, t1):
            yield rec


def fresh_opener(opener: Opener) -> Opener | None:
    """An opener of its own to the same collector, TCP or SSH (None for another kind): a
    save reads the collector's history again without touching the dashboard's connection,
    and closes only its own (over SSH: its own login)."""
    if isinstance(opener, TcpOpener):
        return TcpOpener(opener.host, opener.port, token=opener.token, timeout=opener.timeout)
    from .sources.ssh import SshOpener

    if isinstance(opener, SshOpener):
        return SshOpener(
            opener.target, settings=opener.settings, token=opener.token, timeout=opener.timeout
        )
    return None


def _why(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def save(req: SaveRequest, given: Iterable[Record] | None = None) -> SaveResult:
    """Write what ``req`` asks for, from its trace file or from the records ``given``;
    blocking (run it in a thread)."""
    shown = escape(str(req.path))
    reader: TraceReader | None = None
    if given is None:
        if req.source is None:
            raise SaveError("nothing to save from: no trace file and no records")
        try:
            reader = TraceReader(req.source)
        except OSError as e:
            raise SaveError(f"cannot read {escape(str(req.source))} again: {_why(e)}") from None
    made = False
    try:
        with reader if reader is not None else contextlib.nullcontext():
            records = select(reader if reader is not None else given or (), req.run, req.t0, req.t1)
            if req.fmt == "est":
                try:
                    writer = TraceWriter(req.path, exclusive=True)
                except FileExistsError:
                    raise SaveError(f"{shown} exists: choose another name") from None
                made = True
                n = 0
                with writer:
                    for rec in records:
                        writer.append(rec)
                        n += 1
            else:
                try:
                    fd = os.open(req.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    raise SaveError(f"{shown} exists: choose another name") from None
                made = True
                write = write_csv if req.fmt == "csv" else write_jsonl
                with open(fd, "w", encoding="utf-8", newline="") as out:
                    n = write(out, rows(records, system=True, events=True), events=True)
            damaged = len(reader.damage) if reader is not None else 0
    except SaveError:
        raise
    except (OSError, TraceError) as e:
        if made:
            req.path.unlink(missing_ok=True)
        why = _why(e) if isinstance(e, OSError) else str(e)
        raise SaveError(f"cannot write {shown}: {why}") from None
    return SaveResult(req.path, n, damaged)
