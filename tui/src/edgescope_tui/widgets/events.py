"""The events list: anomalies, marks, log lines, gaps and throttled periods, in time order.

Enter on a row (or a click) jumps the replay cursor there, through :class:`EventsView.Jump`.
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
    """Every event of the run up to the cursor; Enter jumps there."""

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

    def on_mount(self) -> None:
        self.add_columns("time", "kind", "severity", "message")

    def show(self, rows: tuple[EventRow, ...], t0: int) -> None:
        """Replace the rows (a no-op when nothing changed, so the selection stays)."""
        if rows == self._rows and t0 == self._t0:
            return
        keep = self.cursor_row
        self._rows, self._t0 = rows, t0
        self.clear()
        for r in rows:
            name, color = SEVERITY[min(max(r.severity, 0), 2)]
            # Text, not str: a DataTable reads str cells as markup, and messages are not.
            message = Text(escape(r.message))
            height: int | None = 1
            if r.traceback.strip():
                lines = escape_block(r.traceback.rstrip()).splitlines()[-TRACEBACK_LINES:]
                message.append("\n" + "\n".join(lines), style="dim")
                height = None  # as tall as the text
            self.add_row(
                fmt_offset(r.t_us - t0),
                Text(escape(r.kind)),
                Text(name, style=color),
                message,
                height=height,
            )
        if rows:
            self.move_cursor(row=min(keep, len(rows) - 1))

    @property
    def rows_shown(self) -> tuple[EventRow, ...]:
        return self._rows

    def action_jump(self) -> None:
        if self._rows and 0 <= self.cursor_row < len(self._rows):
            self.post_message(self.Jump(self._rows[self.cursor_row].t_us))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_jump()
