"""The rate limit every event passes through: held back events are counted, never lost."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from edgescope_tracing.records import Event

from .base import anomaly

__all__ = ["RateLimit"]


class RateLimit:
    """At most ``limit`` events per ``window_s`` of stream time from each detector for each run.

    An event over the limit is held back and counted, never dropped silently: the next event
    that detector raises for that run says how many were held back (``detail["suppressed"]``),
    and :meth:`summaries` gives one info event per detector and run with a count still unsaid
    (at the run's end, and at the end of the stream). A recovery whose slowdown was held back
    is held back with it, so no event answers one that was never raised.

    Defaults: 5 events a minute; a detector that has more to say than that is repeating itself.
    """

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_us = int(window_s * 1e6)
        self._raised: dict[tuple[str, int], deque[int]] = {}
        self._held: dict[tuple[str, int], tuple[int, int]] = {}
        """(detector, run) -> (events held back since the last one raised, time of the last)."""
        self._last_held: set[tuple[str, int]] = set()

    def admit(self, e: Event) -> Event | None:
        """``e`` (with the count held back before it, if any) or None if it is held back."""
        key = (str(e.detail.get("detector", "")), e.run)
        times = self._raised.setdefault(key, deque())
        while times and times[0] <= e.t_us - self.window_us:
            times.popleft()
        follows_held = e.detail.get("recovered") is True and key in self._last_held
        if len(times) >= self.limit or follows_held:
            held, _ = self._held.get(key, (0, 0))
            self._held[key] = (held + 1, e.t_us)
            self._last_held.add(key)
            return None
        times.append(e.t_us)
        self._last_held.discard(key)
        held, _ = self._held.pop(key, (0, 0))
        if not held:
            return e
        return replace(
            e,
            message=f"{e.message} ({held} similar events held back before this one: "
            f"{self._rule()})",
            detail={**e.detail, "suppressed": held},
        )

    def summaries(self, run: int | None = None) -> list[Event]:
        """One event per detector (for ``run``, or every run) that has held events unsaid."""
        out = []
        for (detector, r), (held, t_us) in sorted(self._held.items()):
            if run is not None and r != run:
                continue
            what = detector.replace("_", " ")
            out.append(
                anomaly(
                    detector,
                    f"{held} more {what} events were held back ({self._rule()})",
                    r,
                    0,
                    t_us,
                    suppressed=held,
                    summary=True,
                )
            )
        for e in out:
            del self._held[(str(e.detail["detector"]), e.run)]
        return out

    def forget(self, run: int) -> None:
        for d in (self._raised, self._held):
            for key in [k for k in d if k[1] == run]:
                del d[key]
        self._last_held = {k for k in self._last_held if k[1] != run}

    def _rule(self) -> str:
        return f"at most {self.limit} per {self.window_us / 1e6:g} s"
