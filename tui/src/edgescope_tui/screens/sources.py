"""The open sources: each with its state, Enter opens its run dashboard.

What the App shows when it starts with no source; a devices screen (discovery) adds sources
through ``EdgescopeApp.open_source``. The screen knows the App only through the two callables
it is given (the open feeds, and what opens one), so the App imports it and not the other way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from edgescope_tracing.text import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..feed import Feed


class SourcesScreen(Screen[None]):
    """Every open source and its first run; Enter opens the dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "open", "Open")]

    def __init__(self, feeds: Callable[[], Sequence[Feed]], show: Callable[[Feed], object]) -> None:
        super().__init__()
        self._feeds = feeds
        """The open feeds, in the order they opened."""
        self._show = show
        """Opens a feed's run dashboard."""

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]open sources[/b] · open a trace with [b]edgescope replay FILE[/b]",
            id="sources-title",
        )
        yield DataTable(id="sources-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("source", "run", "state", "records")
        self.refresh_view()

    def refresh_view(self) -> None:
        try:
            table = self.query_one(DataTable)
        except NoMatches:  # being taken down as the App quits: nothing to draw
            return
        table.clear()
        feeds = self._feeds()
        for feed in feeds:
            s = feed.state
            run = next(iter(s.runs.values()), None)
            state = s.stream.status.state if s.stream.status else "connecting"
            name = run.name if run else "-"
            # Text, not str: a DataTable reads str cells as markup.
            table.add_row(
                Text(escape(feed.label)), Text(escape(name)), state, f"{s.stream.records:,}"
            )
        if not feeds:
            table.add_row("no source open", "", "", "")

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        feeds = self._feeds()
        row = self.query_one(DataTable).cursor_row
        if 0 <= row < len(feeds):
            self._show(feeds[row])
