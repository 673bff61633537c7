"""The fleet screen: every device on an MQTT broker, its presence and summary, live.

Rows come from :class:`~edgescope_tui.fleet.FleetModel`, kept up to date by
:func:`~edgescope_tui.sources.mqtt.watch_fleet` (retained births, deaths and summaries: one
subscription for the whole fleet). ``o`` cycles the column to sort by, ``O`` reverses it, ``/``
filters (a substring of any cell). Enter opens the device's live dashboard fed from the broker
(:class:`~edgescope_tui.sources.mqtt.MqttDeviceSource`, the same dashboard as over TCP or
SSH); space marks devices, and ``c`` opens the marked ones side by side on the compare screen,
live; ``f`` opens the Rounds view (Flower rounds) over every device on the broker. The title
line says how fresh the view is: the age of the newest summary shown.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ..fleet import FLEET_COLUMNS, SORT_KEYS, FleetModel, fleet_row

if TYPE_CHECKING:
    from ..app import EdgescopeApp
    from ..feed import Feed
    from ..sources.mqtt import MqttSettings

__all__ = ["FleetScreen"]


class FleetScreen(Screen[None]):
    """The fleet on a broker; Enter opens a device, space marks, c compares the marked."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare_marked", "Compare"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("f", "rounds", "Rounds", show=False),
    ]

    DEFAULT_CSS = """
    FleetScreen #fleet-title { height: 1; padding: 0 1; background: $boost; }
    FleetScreen #fleet-table { height: 1fr; }
    FleetScreen #fleet-filter { display: none; }
    FleetScreen #fleet-filter.shown { display: block; }
    """

    class Changed(Message):
        """The fleet (or the connection) changed; coalesced, the table redraws once."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, FleetScreen.Changed)

    def __init__(self, settings: MqttSettings, *, model: FleetModel | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.model = model or FleetModel()
        self.sort = "device"
        self.reverse = False
        self.filter = ""
        self.marked: set[str] = set()
        self._stop = asyncio.Event()

    @property
    def edgescope(self) -> EdgescopeApp:
        from ..app import EdgescopeApp

        assert isinstance(self.app, EdgescopeApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static("", id="fleet-title")
        yield Input(placeholder="filter: any text in a row (Enter to apply, empty to clear)",
                    id="fleet-filter")  # fmt: skip
        yield DataTable(id="fleet-table", cursor_type="row")
        yield Footer()

    async def on_mount(self) -> None:
        from ..sources.mqtt import watch_fleet

        table = self.query_one(DataTable)
        table.add_column(" ", key="mark")
        for name in FLEET_COLUMNS:
            table.add_column(name, key=name)
        self.refresh_rows()
        table.focus()
        self.run_worker(
            watch_fleet(self.settings, self.model, self._stop, on_change=self._on_change),
            name="fleet",
            group="fleet",
            exit_on_error=False,
        )
        self.set_interval(1.0, self.refresh_rows)  # the ages tick even when nothing comes

    async def on_unmount(self) -> None:
        self._stop.set()

    def _on_change(self, name: str | None) -> None:
        self.post_message(self.Changed())

    def on_fleet_screen_changed(self, message: Changed) -> None:
        self.refresh_rows()

    # --- drawing ------------------------------------------------------------------------

    def title_text(self) -> str:
        n = len(self.model.devices)
        online = sum(d.online for d in self.model.devices.values())
        age = self.model.newest_age()
        fresh = "no summary yet" if age is None else f"newest summary {age:.1f} s old"
        parts = [f"[b]fleet[/b] · {self.settings.url} · {online}/{n} online · {fresh}",
                 f"sort: {self.sort}{' (reversed)' if self.reverse else ''}"]  # fmt: skip
        if self.filter:
            parts.append(f"filter: {self.filter!r}")
        if self.marked:
            parts.append(f"{len(self.marked)} marked (c compares)")
        if self.model.last_error:
            parts.append(f"[yellow]{self.model.last_error}[/yellow]")
        return " · ".join(parts)

    def refresh_rows(self) -> None:
        try:
            table = self.query_one(DataTable)
            title = self.query_one("#fleet-title", Static)
        except NoMatches:
            return
        rows = self.model.rows(sort=self.sort, reverse=self.reverse, filter=self.filter)
        keep = table.cursor_row
        now = time.time_ns() // 1000
        table.clear()
        for d in rows:
            cells: list[str | Text] = list(fleet_row(d, now))
            state = Text(str(cells[1]), style="bold green" if d.online else "red")
            cells[1] = state
            table.add_row("*" if d.name in self.marked else " ", *cells, key=d.name)
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1))
        title.update(self.title_text())

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except LookupError:
            return None
        return key

    # --- actions ------------------------------------------------------------------------

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def _feed(self, name: str) -> Feed:
        from ..sources.mqtt import MqttDeviceSource

        source = MqttDeviceSource(self.settings, name)
        feed = self.edgescope.feed_for(source.label)
        return feed if feed is not None else self.edgescope.open_source(source, show=False)

    def device_feeds(self) -> list[Feed]:
        """A feed for every device on the broker (opened where none reads yet): the Rounds
        view over the fleet reads them all."""
        return [self._feed(name) for name in sorted(self.model.devices)]

    def action_rounds(self) -> None:
        """``f``: the Flower rounds of the whole fleet, live (screens/rounds.py): every device
        on the broker is read, those that appear later too."""
        from .rounds import RoundsScreen

        def feeds() -> list[Feed]:
            self.device_feeds()
            return list(self.edgescope.feeds)

        self.app.push_screen(RoundsScreen(feeds))

    def action_open(self) -> None:
        name = self.selected()
        if name is None:
            self.notify("no device on the broker yet")
            return
        self.edgescope.show_feed(self._feed(name))

    def action_mark(self) -> None:
        name = self.selected()
        if name is None:
            return
        self.marked.symmetric_difference_update({name})
        table = self.query_one(DataTable)
        table.update_cell(name, "mark", "*" if name in self.marked else " ")
        self.query_one("#fleet-title", Static).update(self.title_text())

    def action_compare_marked(self) -> None:
        from .compare import CompareScreen

        names = sorted(self.marked) or ([n] if (n := self.selected()) else [])
        if not names:
            self.notify("mark devices with space, then c compares them")
            return
        self.app.push_screen(CompareScreen([self._feed(n) for n in names]))

    def action_sort(self) -> None:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        self.refresh_rows()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.refresh_rows()

    def action_filter(self) -> None:
        box = self.query_one("#fleet-filter", Input)
        box.add_class("shown")
        box.value = self.filter
        box.focus()

    @on(Input.Submitted, "#fleet-filter")
    def _filtered(self, event: Input.Submitted) -> None:
        self.filter = event.value.strip()
        event.input.remove_class("shown")
        self.query_one(DataTable).focus()
        self.refresh_rows()
