"""A source being folded: the latest ``RunState`` of one open source, and seeking windows.

A :class:`Feed` holds the newest state of its source (states are immutable; the feed swaps
in a new one per record). :meth:`Feed.pump` reads the source to its end (or forever, live),
yielding to the event loop every few hundred records so the UI stays responsive, and calls
``notify`` at most every ``interval`` seconds so a flood of records makes a handful of redraws.
Nothing here imports Textual: the App runs ``pump`` in a worker and turns ``notify`` into a
message.

A live source keeps its newest history within ``max_points`` values (the oldest half is let go
when it is reached, and the view says so). A file is loaded from its start up to
``max_points`` values; the part after that (or any part, while
loading is still on the way) is reached by :meth:`Feed.load_window`, which folds from the
keyframe before the time asked for, so a seek costs one keyframe interval of decoding.

A live feed also folds its Flower rounds (``rounds``, an
:class:`edgescope_tracing.rounds.RoundsFold`) as the records pass, since a live stream is not
read twice: the Rounds view reads them from there; a file's are read from the file.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from edgescope_tracing import Event, Keyframe, Metrics, Record, RunEnd, RunStart
from edgescope_tracing.rounds import RoundsFold

from .sources.base import SeekableSource, Source, Status
from .state import RunState, StateBuilder

__all__ = ["Feed", "MAX_POINTS", "WINDOW_AHEAD", "WINDOW_BEFORE", "item_time"]

MAX_POINTS = 10_000_000
"""Values (metric values, samples) folded from the start of a file before the rest is left to
seeking: about 24 bytes each in memory."""
SLICE = 0.004
"""Seconds of folding between turns of the event loop."""
FIRST_VIEW = 64
"""After this many records the view is drawn at once, not at the next interval."""
WINDOW_BEFORE = 1_500
"""Records just before the time a seek asks for that are folded (the view's recent past)."""
WINDOW_AHEAD = 200
"""Records a seek folds past the time asked for, so that playing on has some to show."""


def item_time(item: Record | Status) -> int:
    """When a record happened (a metric batch: its last value); 0 for a status."""
    if isinstance(item, Status):
        return 0
    if isinstance(item, Metrics) and item.times_us:
        return item.times_us[-1]
    return item.t_us


class Feed:
    """One open source and what has been folded from it so far."""

    def __init__(self, source: Source, *, max_points: int = MAX_POINTS) -> None:
        self.source = source
        self.max_points = max_points
        self._draft = StateBuilder()
        self.window: RunState | None = None
        """State folded from a keyframe, for a time past what ``state`` holds."""
        self.window_target: int | None = None
        self.span: tuple[int, int] | None = None
        """First and last record times of the whole source when it can tell (a file)."""
        self.complete = False
        """The source was read to its end (or stopped): ``state`` will not grow any more."""
        self.truncated = False
        """Loading stopped at ``max_points``; later parts are reached by seeking."""
        self.rounds: RoundsFold | None = None if self.seekable else RoundsFold()
        """A live source's Flower rounds, folded as its records pass (None for a file)."""

    @property
    def state(self) -> RunState:
        """Everything folded from the start, frozen as it stands now."""
        return self._draft.freeze()

    @property
    def records(self) -> int:
        """Records folded so far (without freezing a state to count them)."""
        return self._draft.records

    @property
    def points(self) -> int:
        """Values folded so far (see :attr:`StateBuilder.points`)."""
        return self._draft.points

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def seekable(self) -> bool:
        return isinstance(self.source, SeekableSource)

    def time_range(self) -> tuple[int, int] | None:
        """What the timeline spans: the source's span, widened by what was folded."""
        s = self.state
        ends = [x for x in (s.stream.first_us, s.stream.last_us) if x is not None]
        if self.span is not None:
            ends += list(self.span)
        if not ends:
            return None
        return min(ends), max(ends)

    def state_at(self, cursor: int | None) -> RunState:
        """The state to draw for a cursor time: the loaded one, or the seek window's."""
        s = self.state
        if (
            cursor is None
            or s.stream.last_us is None
            or cursor <= s.stream.last_us
            or self.window is None
            or self.window.stream.first_us is None
            or self.window.stream.first_us > cursor
        ):
            return s
        return self.window

    def needs_window(self, cursor: int | None) -> bool:
        """Whether the cursor lies past what was folded and a seek window must be read."""
        if cursor is None or not self.seekable:
            return False
        s = self.state
        if s.stream.last_us is not None and cursor <= s.stream.last_us:
            return False
        w = self.window
        return (
            w is None
            or w.stream.first_us is None
            or w.stream.last_us is None
            or not (w.stream.first_us <= cursor <= w.stream.last_us)
        )

    async def pump(self, notify: Callable[[], None], *, interval: float = 0.2) -> None:
        """Fold the source into ``state`` until it ends, calling ``notify`` now and then.

        ``notify`` comes at most every ``interval`` seconds while records flow, and once more
        ``interval`` after the last of a burst, so a record or status that arrives alone (a
        disconnect) is shown at once. The event loop gets a turn every :data:`SLICE` seconds of
        folding, so keys and redraws wait at most that long however fast records come.
        """
        source = self.source
        loop = asyncio.get_running_loop()
        if isinstance(source, SeekableSource):
            self.span = await source.time_span()
            notify()
        last = 0.0
        turn = time.monotonic()
        trailing: asyncio.TimerHandle | None = None
        n = 0
        draft = self._draft
        rounds, label = self.rounds, source.label

        def flush() -> None:
            nonlocal trailing, last
            trailing = None
            last = time.monotonic()
            notify()

        try:
            async for item in source.stream():
                draft.apply(item)
                if rounds is not None and not isinstance(item, Status):
                    rounds.add(label, item)
                n += 1
                now = time.monotonic()
                if now - last >= interval or n == FIRST_VIEW:
                    if trailing is not None:
                        trailing.cancel()
                    flush()
                elif trailing is None:
                    trailing = loop.call_later(interval - (now - last), flush)
                if now - turn >= SLICE:
                    await asyncio.sleep(0)
                    turn = time.monotonic()
                if draft.points >= self.max_points and not self.seekable:
                    # A live source cannot be read again: let its oldest half go instead.
                    draft.trim(0.5)
                elif draft.points >= self.max_points:
                    self.truncated = True
                    draft.apply(
                        Status(
                            "ended",
                            f"loaded the first {draft.records:,} records; "
                            "later parts are read when you go there",
                        )
                    )
                    break
        finally:
            if trailing is not None:
                trailing.cancel()
            self.complete = True
            notify()

    async def load_window(self, t_us: int, *, ahead: int = WINDOW_AHEAD) -> RunState:
        """Fold the records just before ``t_us`` and a few after it; kept as ``window``.

        Reading starts at the keyframe at or before ``t_us`` (it restates the runs). Of the
        records between it and ``t_us`` the last :data:`WINDOW_BEFORE` are folded, and runs,
        run ends and events from further back, so the cost of a seek is bounded by the
        decoding of one keyframe interval, however densely the trace was written.
        """
        source = self.source
        if not isinstance(source, SeekableSource):
            raise TypeError(f"{self.label} cannot seek")
        draft = StateBuilder()
        before: deque[Record | Status] | None = deque()
        after = 0
        n = 0
        it = source.seek(t_us)
        try:
            async for item in it:
                n += 1
                if n % 256 == 0:
                    await asyncio.sleep(0)
                if isinstance(item, Keyframe):
                    draft.apply(item)
                    continue
                if before is not None:
                    if item_time(item) <= t_us:
                        before.append(item)
                        if len(before) > WINDOW_BEFORE:
                            old = before.popleft()
                            if isinstance(old, RunStart | RunEnd | Event | Status):
                                draft.forget_seq()
                                draft.apply(old)
                        continue
                    # Past the time asked for: fold what was kept, then go on a little.
                    draft.forget_seq()
                    for kept in before:
                        draft.apply(kept)
                    before = None
                draft.apply(item)
                after += 1
                if after >= ahead:
                    break
            if before is not None:
                draft.forget_seq()
                for kept in before:
                    draft.apply(kept)
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        s = draft.freeze()
        self.window = s
        self.window_target = t_us
        return s

    async def close(self) -> None:
        await self.source.close()
