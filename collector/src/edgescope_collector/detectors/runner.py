"""All detectors over one stream: :class:`Detectors` (a fold), :func:`detect` (a pure function)."""

from __future__ import annotations

from collections.abc import Iterable

from edgescope_tracing.records import Event, Record, RunEnd

from .base import Detector
from .loss import LossSpike, NonFiniteLoss
from .memory import MemoryGrowth, MemoryHigh, OomKill
from .power import PowerCap
from .ratelimit import RateLimit
from .step_time import StepTimeRegression

__all__ = ["Detectors", "detect"]


class Detectors:
    """All detectors over one stream: feed every record, collect the events (rate-limited)."""

    def __init__(self, rate_limit: RateLimit | None = None) -> None:
        self.nonfinite = NonFiniteLoss()
        self.spike = LossSpike()
        self.step_time = StepTimeRegression()
        self.memory = MemoryGrowth()
        self.oom = OomKill()
        self.power_cap = PowerCap()
        self.memory_high = MemoryHigh()
        self.limit = rate_limit or RateLimit()
        self._all: tuple[Detector, ...] = (
            self.nonfinite,
            self.spike,
            self.step_time,
            self.memory,
            self.oom,
            self.power_cap,
            self.memory_high,
        )

    def feed(self, rec: Record) -> list[Event]:
        out: list[Event] = []
        for d in self._all:
            out.extend(d.feed(rec))
        out = self._admit(out)
        if isinstance(rec, RunEnd):
            out.extend(self.limit.summaries(rec.run))
            # A collector outlives thousands of runs: what each one needed goes with it.
            for d in self._all:
                d.forget(rec.run)
            self.limit.forget(rec.run)
        return out

    def end_cause(self, end: RunEnd) -> str | None:
        """Why a run ended, where something other than the run ended it (the OOM killer), for
        its ``RunEnd.cause``: ask before the run end is fed (feeding it forgets the run)."""
        return self.oom.end_cause(end)

    def flush(self) -> list[Event]:
        """Events held back for context (a step-time regression waits up to ``grace_s`` of
        stream time for the samples that explain it), and the counts the rate limit still
        holds: call once at the end of a stream."""
        held = [e for d in self._all for e in d.flush()]
        return self._admit(held) + self.limit.summaries()

    def _admit(self, events: list[Event]) -> list[Event]:
        if not events:
            return events
        return [a for a in map(self.limit.admit, events) if a is not None]


def detect(records: Iterable[Record]) -> list[Event]:
    """The events a fresh set of detectors finds in ``records`` (a pure function)."""
    d = Detectors()
    events = [e for r in records for e in d.feed(r)]
    return events + d.flush()
