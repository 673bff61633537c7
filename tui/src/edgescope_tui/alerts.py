"""Live alerts: which warning events are new since the last look, and how many are unread.

A dashboard asks :meth:`AlertTracker.update` each time its feed grows. Events folded after
the source said it was live (``StreamState.live_from_event``: past the history read on
connecting, however many records one redraw takes in) with severity 1 or more are returned, to
be shown as toasts, and counted as unread unless the Events tab is on show;
:meth:`AlertTracker.read` clears the count when it is. History (a file, a collector's store
read on connecting) raises no alert: it did not just happen. UI-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgescope_tracing import Event

from .series import Log

__all__ = ["AlertTracker", "TOASTS"]

TOASTS = 3
"""At most this many toasts for one update; the rest are counted in one more."""


@dataclass(slots=True)
class AlertTracker:
    """The events already looked at, and the warnings not yet seen on the Events tab."""

    seen: int = 0
    """Events of the feed already looked at."""
    unread: int = 0
    """Warnings (and errors) that arrived live while the Events tab was not on show."""

    def update(self, events: Log[Event], *, live_from: int | None, viewing: bool) -> list[Event]:
        """The warnings among the events after :attr:`seen` that came live, from index
        ``live_from`` on (None: none did); ``viewing``: the Events tab is on show, so they are
        read at once."""
        n = len(events)
        start = min(self.seen, n)
        self.seen = n
        if live_from is None:
            return []
        new = [events[i] for i in range(max(start, live_from), n)]
        warnings = [e for e in new if e.severity >= 1]
        if not viewing:
            self.unread += len(warnings)
        return warnings

    def read(self) -> None:
        """The Events tab was shown."""
        self.unread = 0
