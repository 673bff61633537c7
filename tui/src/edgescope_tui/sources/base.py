"""The one interface every record source offers the views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from edgescope_tracing import Record

from ..errors import TuiError

RING_LOST = "the collector's ring no longer holds the start"
"""How the reason of a live source's gap ends where a run started before the oldest record the
collector still holds (``history from step N: ...``)."""


class FatalSourceError(TuiError):
    """Raised by a live source's opener for a failure that retrying won't fix (one sentence)."""


StatusState = Literal["connecting", "history", "live", "disconnected", "ended", "error", "gap"]
"""``history``: connected, reading what the collector held when we connected; ``live`` once
that is read (the head as it was then), and from then on."""


@dataclass(frozen=True, slots=True)
class Status:
    """Something about the source rather than the run: connection state, an explicit gap.

    ``gap`` is ``(first_missing_seq, last_missing_seq)`` when records are known to be missing
    (no longer retained by the collector, or dropped for a slow client).
    """

    state: StatusState
    message: str = ""
    gap: tuple[int, int] | None = None


class Source(Protocol):
    """An async stream of records interleaved with status changes."""

    label: str
    """What the UI calls it: a file name, ``host:port``, ``ssh://user@host``."""

    def stream(self) -> AsyncIterator[Record | Status]:
        """Records from the start (or the resume point), then live until closed or ended."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SeekableSource(Source, Protocol):
    """A source whose past can be read from any time on: a trace file.

    Seeking starts at the last keyframe at or before the time asked for (a keyframe restates
    the active runs), so its cost does not grow with the length of the trace.
    """

    async def time_span(self) -> tuple[int, int] | None:
        """The first and last record times (µs), found without reading the whole source."""
        ...

    def seek(self, t_us: int) -> AsyncIterator[Record | Status]:
        """Records from the last keyframe at or before ``t_us`` (the keyframe first) onward."""
        ...
