"""What a trace holds, in one pass: the data behind ``edgescope inspect``.

A pure fold over records plus the reader's damage list; no printing here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._frames import Damage
from .reader import TraceReader
from .records import (
    Event,
    Keyframe,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StackSamples,
)

__all__ = [
    "MetricSummary",
    "RunSummary",
    "TraceSummary",
    "summarize",
    "summarize_file",
    "iso_time",
    "json_float",
]

KIND_NAMES: dict[type, str] = {
    RunStart: "run_start",
    RunEnd: "run_end",
    Metrics: "metrics",
    Event: "event",
    Keyframe: "keyframe",
    StackSamples: "stacks",
}


def kind_name(rec: Record) -> str:
    """The snake_case name of a record's kind, as ``inspect --json`` and ``tail --json`` use."""
    name = KIND_NAMES.get(type(rec))
    if name is None:
        name = type(rec).__name__.removesuffix("Sample").lower()
    return name


def iso_time(t_us: int | None) -> str | None:
    """ISO 8601 in UTC; None where there is no time or it is no date (before 1 or after 9999)."""
    if t_us is None:
        return None
    try:
        return datetime.fromtimestamp(t_us / 1e6, UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError, OSError):
        return None


def json_float(v: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become the strings ``"NaN"``, ``"Infinity"``."""
    if v is None or math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


@dataclass(slots=True)
class MetricSummary:
    count: int = 0
    first: float | None = None
    last: float | None = None
    min: float | None = None
    max: float | None = None
    last_step: int | None = None
    non_finite: int = 0

    def add(self, m: Metrics) -> None:
        if not m.values:
            return
        if self.first is None:
            self.first = m.values[0]
        self.last = m.values[-1]
        self.count += len(m.values)
        last_step = max(m.steps)
        self.last_step = last_step if self.last_step is None else max(self.last_step, last_step)
        finite = [v for v in m.values if math.isfinite(v)]
        self.non_finite += len(m.values) - len(finite)
        if finite:
            lo, hi = min(finite), max(finite)
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)


@dataclass(slots=True)
class RunSummary:
    run: int
    id: str
    name: str
    host: str
    pid: int
    start: int
    end: int | None = None
    exit_code: int | None = None
    dropped: int = 0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TraceSummary:
    format_version: str
    bytes: int
    records: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    runs: list[RunSummary] = field(default_factory=list)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    stack_samples: int = 0
    stack_backends: set[str] = field(default_factory=set)
    damage: list[Damage] = field(default_factory=list)
    first_t: int | None = None
    last_t: int | None = None
    indexed: bool = False

    @property
    def damaged_frames(self) -> int:
        return sum(1 for d in self.damage if not d.truncated)

    @property
    def truncated(self) -> bool:
        return any(d.truncated for d in self.damage)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "bytes": self.bytes,
            "records": self.records,
            "kinds": dict(sorted(self.kinds.items())),
            "runs": [
                {
                    "id": r.id,
                    "name": r.name,
                    "host": r.host,
                    "pid": r.pid,
                    "start": iso_time(r.start),
                    "end": iso_time(r.end),
                    "exit_code": r.exit_code,
                    "dropped": r.dropped,
                }
                for r in self.runs
            ],
            "metrics": {
                k: {
                    "count": m.count,
                    "first": json_float(m.first),
                    "last": json_float(m.last),
                    "min": json_float(m.min),
                    "max": json_float(m.max),
                    "last_step": m.last_step,
                    "non_finite": m.non_finite,
                }
                for k, m in sorted(self.metrics.items())
            },
            "events": [
                {
                    "t": iso_time(e.t_us),
                    "kind": e.kind,
                    "message": e.message,
                    "severity": e.severity,
                }
                for e in self.events
            ],
            "stacks": {"samples": self.stack_samples, "backend": sorted(self.stack_backends)},
            "damaged_frames": self.damaged_frames,
            "truncated": self.truncated,
            "damage": [
                {
                    "offset": d.offset,
                    "length": d.length,
                    "reason": d.reason,
                    "truncated": d.truncated,
                }
                for d in self.damage
            ],
            "indexed": self.indexed,
            "start": iso_time(self.first_t),
            "end": iso_time(self.last_t),
        }


def summarize_file(reader: TraceReader) -> TraceSummary:
    """Read a whole trace file and summarize it, damage and index included."""
    s = summarize(reader, format_version="{}.{}".format(*reader.version), size=reader.size)
    s.damage = list(reader.damage)
    s.indexed = reader.indexed
    return s


def summarize(records: Iterable[Record], *, format_version: str, size: int) -> TraceSummary:
    """Fold records into a summary (damage is the caller's to add)."""
    s = TraceSummary(format_version=format_version, bytes=size)
    runs: dict[str, RunSummary] = {}
    by_ref: dict[int, RunSummary] = {}
    for rec in records:
        s.records += 1
        s.kinds[kind_name(rec)] += 1
        t = rec.t_us
        if t:
            s.first_t = t if s.first_t is None else min(s.first_t, t)
            s.last_t = t if s.last_t is None else max(s.last_t, t)
        if isinstance(rec, Metrics):
            ms = s.metrics.get(rec.key)
            if ms is None:
                ms = s.metrics[rec.key] = MetricSummary()
            ms.add(rec)
            if rec.times_us:
                s.last_t = max(s.last_t or 0, rec.times_us[-1])
        elif isinstance(rec, RunStart | Keyframe):
            for r in (rec,) if isinstance(rec, RunStart) else rec.runs:
                if r.run_id not in runs:
                    runs[r.run_id] = RunSummary(
                        r.run, r.run_id, r.name, r.host, r.pid, r.t_us, config=r.config
                    )
                    s.runs.append(runs[r.run_id])
                by_ref[r.run] = runs[r.run_id]
        elif isinstance(rec, RunEnd):
            rs = by_ref.get(rec.run)
            if rs is not None:
                rs.end, rs.exit_code, rs.dropped = rec.t_us, rec.exit_code, rec.dropped
        elif isinstance(rec, Event):
            s.events.append(rec)
        elif isinstance(rec, StackSamples):
            s.stack_samples += sum(c for _, c in rec.samples)
            s.stack_backends.add(rec.backend)
    return s
