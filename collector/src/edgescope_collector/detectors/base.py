"""What every detector is: the :class:`Detector` protocol, and how an event is made.

A detector is a small fold over the stream: it consumes every record (:meth:`Detector.feed`),
keeps what it needs per run, and returns the :class:`~edgescope_tracing.records.Event` records
it concludes, each with ``kind="anomaly"``, a message a person can act on, a severity (0 info,
1 warning, 2 error) and ``detail`` whose ``detector`` is the detector's :attr:`Detector.name`,
with the figures it saw (JSON-safe: non-finite numbers are written as strings). Deterministic,
no I/O, no clock: times come from the records.
"""

from __future__ import annotations

import math
from typing import Protocol

from edgescope_tracing.causes import MiB, mib
from edgescope_tracing.records import Event, Record

__all__ = ["Detector", "MiB", "anomaly", "duration", "mib"]


class Detector(Protocol):
    """One family of detection: what it consumes, what it emits.

    ``feed`` takes any record (a detector ignores the kinds it does not read) and returns the
    events it concludes from it, possibly none; ``flush`` returns events held back for context
    at the end of a stream; ``forget`` drops what is kept about a run that ended.
    """

    name: str
    """The ``detail["detector"]`` of its events (one detector may emit several names)."""

    def feed(self, rec: Record) -> list[Event]: ...

    def flush(self) -> list[Event]: ...

    def forget(self, run: int) -> None: ...


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _json_safe(v: object) -> object:
    """Non-finite floats as strings ("inf", "nan"): event details must stay JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def anomaly(
    detector: str, message: str, run: int, severity: int, t_us: int, **detail: object
) -> Event:
    return Event(
        kind="anomaly",
        message=message,
        run=run,
        severity=severity,
        detail={"detector": detector, **{k: _json_safe(v) for k, v in detail.items()}},
        t_us=t_us,
    )
