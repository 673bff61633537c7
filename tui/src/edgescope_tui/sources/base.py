"""The one interface every record source offers the views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from edgescope_tracing import Record

StatusState = Literal["connecting", "live", "disconnected", "ended", "error", "gap"]


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
