"""The edgescope terminal UI: open sources, show their runs, replay and compare them.

The App takes its sources in its constructor (``EdgescopeApp([FileSource(path)])``) and opens
more at any time through :meth:`EdgescopeApp.open_source` (a devices screen does that for a
device it found). Each source is folded by a :class:`~edgescope_tui.feed.Feed` in a worker;
screens draw the feed's state and redraw when :class:`EdgescopeApp.FeedUpdated` says it grew.

The one file the UI writes is a screenshot (the command palette's "Screenshot", or
``action_screenshot``): an SVG in the current directory, written through
:func:`edgescope_tracing.files.open_output`, so a symbolic link planted at its name is refused
rather than followed, and a FIFO or device is written through, never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from edgescope_tracing import TraceError
from edgescope_tracing.files import open_output
from edgescope_tracing.text import escape
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen

from .chartspec import fmt_offset
from .feed import MAX_POINTS, Feed
from .screens.compare import CompareScreen
from .screens.dashboard import TABS, DashboardScreen
from .screens.help import HelpScreen
from .screens.rounds import RoundsScreen
from .screens.sources import SourcesScreen
from .sources.base import Source

__all__ = ["EdgescopeApp"]


class EdgescopeApp(App[None]):
    """Shows runs from sources (trace files, live collectors), live or replayed."""

    CSS_PATH = "edgescope.tcss"
    TITLE = "edgescope"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "leave", "Back"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("c", "compare", "Compare"),
        Binding("f", "rounds", "Rounds", show=False),
        Binding("s", "sources", "Sources"),
        Binding("d", "switch_feed(1)", "Next device"),
        Binding("D", "switch_feed(-1)", "Previous device", show=False),
    ]

    class FeedUpdated(Message):
        """A feed folded more records (posted at most five times a second per feed)."""

        def __init__(self, feed: Feed) -> None:
            super().__init__()
            self.feed = feed

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EdgescopeApp.FeedUpdated) and message.feed is self.feed

    def __init__(
        self,
        sources: Sequence[Source] = (),
        *,
        compare: bool = False,
        max_points: int = MAX_POINTS,
        home: Callable[[], Screen[Any]] | None = None,
    ) -> None:
        """``compare`` starts on the compare screen (also the default for several sources);
        ``home`` makes the first screen (a devices screen) when no source is given."""
        super().__init__()
        self.feeds: list[Feed] = []
        self._initial = list(sources)
        self._compare = compare or len(sources) > 1
        self._max_points = max_points
        self._home = home

    def on_mount(self) -> None:
        if not self._initial:
            self.push_screen(self._home() if self._home is not None else self._sources_screen())
            return
        for source in self._initial:
            self.open_source(source, show=source is self._initial[0])
        if self._compare:
            self.action_compare()

    def open_source(self, source: Source, *, show: bool = True) -> Feed:
        """Start folding ``source`` and, with ``show``, open its run dashboard."""
        feed = Feed(source, max_points=self._max_points)
        # A live source of the same name that stopped (a refused token, since fixed) is
        # replaced by this one, not listed beside it.
        self.feeds = [
            f for f in self.feeds if not (f.label == source.label and f.complete and not f.seekable)
        ]
        self.feeds.append(feed)

        def notify() -> None:
            self.post_message(self.FeedUpdated(feed))

        self.run_worker(
            feed.pump(notify),
            name=f"feed {source.label}",
            group="feeds",
            exit_on_error=False,
        )
        if show:
            self.show_feed(feed)
        return feed

    def close_feed(self, feed: Feed) -> None:
        """Stop reading ``feed``'s source and forget it (a device edited to a new address or
        token: its next dashboard reads a new stream)."""
        if feed in self.feeds:
            self.feeds.remove(feed)
        self.run_worker(feed.close(), name=f"close {feed.label}", exit_on_error=False)

    def _sources_screen(self) -> SourcesScreen:
        return SourcesScreen(lambda: self.feeds, self._show_listed)

    def _show_listed(self, feed: Feed) -> None:
        """Enter on the sources list: over a dashboard (``s`` from there), that feed's
        dashboard takes the place of the one under the list, as ``d`` does; elsewhere it opens
        on top."""
        stack = self.screen_stack
        under = stack[-2] if len(stack) > 2 else None
        if isinstance(under, DashboardScreen):
            self.pop_screen()
            if under.feed is not feed:
                self.switch_screen(DashboardScreen(feed))
            return
        self.show_feed(feed)

    def feed_for(self, label: str) -> Feed | None:
        """The open feed of the source called ``label`` that still reads, if there is one: a
        device opened again is shown from the stream it kept, not connected to twice."""
        return next((f for f in self.feeds if f.label == label and not f.complete), None)

    def show_feed(self, feed: Feed, run: int | None = None) -> DashboardScreen:
        """Open the run dashboard of an open feed."""
        screen = DashboardScreen(feed, run=run)
        self.push_screen(screen)
        return screen

    def _top(self) -> Screen[Any] | None:
        """The screen on top, or None while the App is taking its screens down."""
        stack = self.screen_stack
        return stack[-1] if stack else None

    def on_edgescope_app_feed_updated(self, message: FeedUpdated) -> None:
        screen = self._top()
        if isinstance(screen, CompareScreen | SourcesScreen) or (
            isinstance(screen, DashboardScreen) and screen.feed is message.feed
        ):
            screen.refresh_view()
        elif isinstance(screen, RoundsScreen) and message.feed.rounds is not None:
            screen.refresh_view()  # live rounds: the table grows as they arrive

    async def on_unmount(self) -> None:
        for feed in self.feeds:
            await feed.close()

    # --- actions and commands ----------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_feed":  # on a dashboard, with another source open
            return isinstance(self._top(), DashboardScreen) and len(self.feeds) > 1
        if action == "leave":  # shown (and taken) only where there is somewhere to go back to
            return len(self.screen_stack) > 2 or isinstance(
                self._top(), DashboardScreen | CompareScreen
            )
        return True

    def action_leave(self) -> None:
        """Escape (or Backspace): back to the screen this one was opened from (the devices
        screen, the sources list); from a first screen that is a run, to the sources list, so
        no screen is a dead end. On the home screen itself it does nothing."""
        if isinstance(self._top(), HelpScreen):
            return  # it closes itself
        if len(self.screen_stack) > 2:
            self.pop_screen()
        elif isinstance(self._top(), DashboardScreen | CompareScreen):
            self.switch_screen(self._sources_screen())

    def action_help(self) -> None:
        top = self._top()
        if top is not None and not isinstance(top, HelpScreen):
            off = frozenset(
                b.action
                for b in type(self).BINDINGS
                if isinstance(b, Binding) and self.check_action(b.action.split("(")[0], ()) is False
            )
            leave = bool(self.check_action("leave", ()))
            self.push_screen(HelpScreen(top, can_leave=leave, off=off))

    def action_switch_feed(self, delta: int) -> None:
        """``d`` (``D``): the dashboard of the next (previous) open source, in the order they
        were opened, in place of this one: Escape still goes back to where it was opened."""
        top = self._top()
        if not isinstance(top, DashboardScreen) or len(self.feeds) < 2:
            return
        i = self.feeds.index(top.feed) if top.feed in self.feeds else 0
        feed = self.feeds[(i + delta) % len(self.feeds)]
        self.switch_screen(DashboardScreen(feed))
        n = self.feeds.index(feed) + 1
        self.notify(
            f"{escape(feed.label)}: source {n} of {len(self.feeds)} (d: next)", markup=False
        )

    def action_compare(self) -> None:
        if isinstance(self.screen, CompareScreen):
            return
        if not self.feeds:
            self.notify("no source open to compare")
            return
        self.push_screen(CompareScreen(self.feeds))

    def action_rounds(self) -> None:
        """``f``: the federated rounds in the open sources, files and live (screens/rounds.py;
        the fleet screen has its own ``f``, over every device on the broker)."""
        if not isinstance(self.screen, RoundsScreen):
            self.push_screen(RoundsScreen(lambda: list(self.feeds)))

    def action_sources(self) -> None:
        if not isinstance(self.screen, SourcesScreen):
            self.push_screen(self._sources_screen())

    def save_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str:
        """Save the screen as SVG in ``path`` (default: the current directory); returns the
        file's path. Raises :class:`~edgescope_tracing.TraceError` with one sentence where the
        name is a symbolic link, a directory or a device that cannot be written."""
        name = (
            filename
            or f"edgescope_{datetime.now().strftime(time_format or '%Y-%m-%dT%H_%M_%S')}.svg"
        )
        dst = os.path.expanduser(os.path.join(path or ".", name))
        svg = self.export_screenshot()
        with open_output(dst) as f:
            f.write(svg)
        return dst

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Save a screenshot (:meth:`save_screenshot`) and say where, or why it was not."""
        try:
            dst = self.save_screenshot(filename, path, time_format)
        except TraceError as e:
            self.notify(
                escape(str(e)), title="Screenshot not saved", severity="error", markup=False
            )
            return None
        self.notify(f"Saved to {escape(dst)}", title="Screenshot", markup=False)
        return dst

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Compare runs", "One metric of every run on one chart", self.action_compare
        )
        yield SystemCommand("Open sources", "Every open source and its state", self.action_sources)
        if not isinstance(screen, DashboardScreen):
            return
        yield SystemCommand("Play / pause", "Replay from the cursor", screen.action_toggle_play)
        yield SystemCommand("Go to time or step", "Jump the cursor", screen.action_jump)
        for tab in TABS:
            yield SystemCommand(
                f"Show {tab}", f"The {tab} tab", lambda tab=tab: screen.action_tab(tab)
            )
        s = screen.feed.state
        t0 = s.stream.first_us or 0
        for e in s.events.view()[-50:]:
            yield SystemCommand(
                f"Jump to {escape(e.kind)} at {fmt_offset(e.t_us - t0)}",
                escape(e.message),
                lambda t=e.t_us: screen.go_to(t),
            )
