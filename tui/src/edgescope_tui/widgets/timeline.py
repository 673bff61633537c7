"""The replay timeline: where the cursor is in the run, and what happened where.

Two lines: a bar over the whole time range with the cursor, throttled periods, gaps and
damage, events and what has been loaded; then the play state, speed, time and step. Click or
drag on the bar to scrub; the screen owns the cursor and hears of it through
:class:`ReplayBar.Scrubbed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from ..chartspec import fmt_offset

__all__ = ["ReplayBar", "TimelineSpec", "fmt_offset", "draw_timeline"]


@dataclass(frozen=True, slots=True)
class TimelineSpec:
    """What the timeline shows; times in µs."""

    t0: int
    t1: int
    cursor: int | None
    """None: following the head of the stream (live) or the end (a finished file)."""
    loaded_until: int | None = None
    playing: bool = False
    speed: float = 1.0
    live: bool = False
    step: int | None = None
    events: tuple[tuple[int, int], ...] = ()
    """``(t_us, severity)``."""
    spans: tuple[tuple[int, int], ...] = ()
    """Throttled periods."""
    gaps: tuple[tuple[int, int], ...] = ()
    status: str = ""
    connection: str = ""
    """A live source's state (``live``, ``disconnected``, ``connecting``...), "" for a file."""


def draw_timeline(spec: TimelineSpec, width: int) -> Text:
    out = Text(no_wrap=True, overflow="crop")
    if width < 10:
        return out
    t0, t1 = spec.t0, max(spec.t1, spec.t0 + 1)

    def col(t: int) -> int:
        return min(width - 1, max(0, int((t - t0) / (t1 - t0) * width)))

    cells = ["─"] * width
    colors: list[str | None] = ["#555555"] * width
    bgs: list[str | None] = [None] * width
    if spec.loaded_until is not None and spec.loaded_until < t1:
        for c in range(col(spec.loaded_until) + 1, width):
            cells[c] = "┄"
    for a, b in spec.spans:
        for c in range(col(a), col(b) + 1):
            bgs[c] = "#5f1f1f"
    for a, b in spec.gaps:
        for c in range(col(a), col(b) + 1):
            cells[c], colors[c] = "▒", "#ff5f5f"
    for t, severity in spec.events:
        c = col(t)
        cells[c] = "◆"
        colors[c] = ("#87d787", "#ffd75f", "#ff5f5f")[min(max(severity, 0), 2)]
    cur = spec.cursor if spec.cursor is not None else t1
    cc = col(cur)
    for c in range(cc):
        if cells[c] == "─":
            colors[c] = "#5fafff"
    cells[cc], colors[cc] = "●", "#ffffff"
    for ch, color, bg in zip(cells, colors, bgs, strict=True):
        out.append(ch, style=Style(color=color, bgcolor=bg))
    out.append("\n")
    if spec.live and spec.cursor is None and spec.connection not in ("live", ""):
        state = Text(f"○ {spec.connection.upper()}", style="bold #ffd75f")
    elif spec.live and spec.cursor is None:
        state = Text("● LIVE", style="bold #ff5f5f")
    elif spec.playing:
        state = Text(f"▶ {spec.speed:g}x", style="bold #87d787")
    else:
        state = Text(f"⏸ {spec.speed:g}x", style="bold")
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append_text(state)
    line.append(f"  {fmt_offset(cur - t0)} / {fmt_offset(t1 - t0)}")
    if spec.step is not None:
        line.append(f"  step {spec.step}")
    if spec.status:
        line.append(f"  {spec.status}", style="dim")
    line.truncate(width)
    out.append_text(line)
    return out


class ReplayBar(Widget, can_focus=False):
    """The run's time range as a bar to scrub, with the play state below it."""

    DEFAULT_CSS = """
    ReplayBar {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """

    spec: reactive[TimelineSpec | None] = reactive(None, always_update=True)
    """What to draw."""

    class Scrubbed(Message):
        """The user clicked or dragged on the bar: go to ``t_us``."""

        def __init__(self, t_us: int) -> None:
            super().__init__()
            self.t_us = t_us

        def can_replace(self, message: Message) -> bool:
            # A drag sends many; only where it is now matters.
            return isinstance(message, ReplayBar.Scrubbed)

    def render(self) -> Text:
        if self.spec is None:
            return Text("no records yet", style="dim")
        return draw_timeline(self.spec, self.content_size.width)

    def _time_at(self, x: int) -> int | None:
        spec = self.spec
        width = self.content_size.width
        if spec is None or width < 1:
            return None
        frac = min(1.0, max(0.0, x / max(1, width - 1)))
        return int(spec.t0 + frac * (spec.t1 - spec.t0))

    def on_click(self, event: events.Click) -> None:
        t = self._time_at(event.x - self.gutter.left)
        if t is not None:
            self.post_message(self.Scrubbed(t))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if event.button == 1:
            t = self._time_at(event.x - self.gutter.left)
            if t is not None:
                self.post_message(self.Scrubbed(t))
