"""The events list: anomalies, marks, log lines, gaps and throttled periods, in time order.

Enter on a row, or a single click, jumps the replay cursor there, through
:class:`EventsView.Jump`. Every event of the run is listed whatever the cursor; the one at the
cursor (the last at or before it) is marked ``▶`` and highlighted, those after it dimmed.
A crash's row (an event that carries a traceback: the SDK's ``exception``, the ``stderr`` tail of
a command that failed under ``edgescope record``) is as tall as the last
:data:`TRACEBACK_LINES` lines of its traceback, shown under the message. Text from the trace is
escaped (:mod:`edgescope_tracing.text`): it cannot drive the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgescope_tracing.text import escape, escape_block
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from .timeline import fmt_offset

__all__ = ["EventsView", "EventRow"]

SEVERITY = (("info", "#87d787"), ("warning", "#ffd75f"), ("error", "#ff5f5f"))
TRACEBACK_LINES = 12
"""Lines of a stored traceback shown in its event's row (the last: the exception is there)."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row: when, what kind, how bad, what it says."""

    t_us: int
    kind: str
    severity: int
    message: str
    traceback: str = ""
    """The traceback the event carries, if any."""


class EventsView(DataTable[Text | str]):
    """Every event of the run, the one at the cursor marked; Enter or a click jumps there."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "jump", "Jump to event")]

    DEFAULT_CSS = """
    EventsView {
        height: 1fr;
    }
    """

    class Jump(Message):
        """Go to the time of the selected row."""

        def __init__(self, t_us: int) -> None:
            super().__init__()
            self.t_us = t_us

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: tuple[EventRow, ...] = ()
        self._t0 = 0
        self._current: int | None = None

    def on_mount(self) -> None:
        self.add_columns("time", "kind", "severity", "message")

    def show(self, rows: tuple[EventRow, ...], t0: int, current: int | None = None) -> None:
        """Replace the rows (a no-op when nothing changed, so the selection stays); ``current``
        is the row at the cursor: marked, and the selection moves to it when it changes."""
        if rows == self._rows and t0 == self._t0 and current == self._current:
            return
        keep = self.cursor_row
        moved = current != self._current
        self._rows, self._t0, self._current = rows, t0, current
        self.clear()
        for i, r in enumerate(rows):
            name, color = SEVERITY[min(max(r.severity, 0), 2)]
            later = current is not None and i > current
            style = "bold" if i == current else "dim" if later else ""
            # Text, not str: a DataTable reads str cells as markup, and messages are not.
            message = Text(escape(r.message), style=style)
            height: int | None = 1
            if r.traceback.strip():
                lines = escape_block(r.traceback.rstrip()).splitlines()[-TRACEBACK_LINES:]
                message.append("\n" + "\n".join(lines), style="dim")
                height = None  # as tall as the text
            mark = "▶ " if i == current else "  "
            self.add_row(
                Text(mark + fmt_offset(r.t_us - t0), style=style),
                Text(escape(r.kind), style=style),
                Text(name, style=f"{color} dim" if later else color),
                message,
                height=height,
            )
        if rows:
            row = current if moved and current is not None else keep
            self.move_cursor(row=min(max(row, 0), len(rows) - 1))

    @property
    def current(self) -> int | None:
        """The row at the replay cursor (None before the first event)."""
        return self._current

    @property
    def rows_shown(self) -> tuple[EventRow, ...]:
        return self._rows

    def action_jump(self) -> None:
        if self._rows and 0 <= self.cursor_row < len(self._rows):
            self.post_message(self.Jump(self._rows[self.cursor_row].t_us))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_jump()

    async def _on_click(self, event: events.Click) -> None:
        # A DataTable selects a row on a second click (the first highlights it): here one
        # click on a row jumps there.
        row = event.style.meta.get("row")
        before = self.cursor_row
        await super()._on_click(event)
        if isinstance(row, int) and row >= 0 and row != before and row == self.cursor_row:
            self.action_jump()
