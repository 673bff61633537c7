"""The process table of a run: one row per process, sortable by column, flat or as a tree.

The rows come from :func:`edgescope_tui.processes.process_rows` (UI-free); the table keeps how
they are sorted and whether they form a tree, and says when that changes
(:class:`ProcessTable.Changed`) so the screen builds the rows again. ``o`` sorts by the next
column, ``O`` reverses the order, ``t`` shows the tree; a click on a column's header sorts by
it (again: reversed).
"""

from __future__ import annotations

from typing import ClassVar

from edgescope_tracing.text import escape
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from ..chartspec import fmt_bytes, fmt_number
from ..processes import SORTS, ProcRow

__all__ = ["ProcessTable", "COLUMNS"]

COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("PID", "pid"),
    ("CPU %", "cpu"),
    ("RSS", "rss"),
    ("peak", "peak"),
    ("GPU mem", "gpu"),
    ("threads", "threads"),
    ("state", None),
    ("command", "command"),
)
"""Each column's heading and the sort it stands for. The command comes last, as in top and
htop: a long one runs off the edge, not the figures."""


def _cell(v: float | None, fmt: str) -> Text:
    if v is None:
        return Text("-", style="dim", justify="right")
    text = fmt_bytes(v) if fmt == "bytes" else fmt_number(v) if fmt == "num" else f"{v:.0f}"
    return Text(text, justify="right")


class ProcessTable(DataTable[Text]):
    """The processes of the run at the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "next_sort", "Sort by next column"),
        Binding("O", "reverse", "Reverse the order"),
        Binding("t", "tree", "Tree / flat"),
    ]

    DEFAULT_CSS = """
    ProcessTable {
        height: 1fr;
    }
    """

    sort_by: reactive[str] = reactive("cpu")
    """The column sorted by: one of :data:`~edgescope_tui.processes.SORTS`."""
    descending: reactive[bool] = reactive(True)
    """Highest first (names: Z to A)."""
    as_tree: reactive[bool] = reactive(False)
    """Children under their parent."""

    class Changed(Message):
        """How the rows are sorted, or whether they form a tree, changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: tuple[ProcRow, ...] | None = None
        self._columns: tuple[tuple[str, str | None], ...] = ()

    def on_mount(self) -> None:
        self._set_columns(gpu=False)

    def _set_columns(self, *, gpu: bool) -> None:
        """The columns, with GPU memory only where some process has a figure for it (most
        devices have none: its column would only narrow the command's)."""
        columns = tuple(c for c in COLUMNS if gpu or c[1] != "gpu")
        if columns == self._columns:
            return
        self._columns = columns
        self.clear(columns=True)
        for heading, _ in columns:
            self.add_column(heading, key=heading)

    def show(self, rows: list[ProcRow]) -> None:
        """Replace the rows (a no-op when nothing changed, so the selection stays)."""
        new = tuple(rows)
        if new == self._rows:
            return
        keep = self.cursor_row
        self._rows = new
        gpu = any(r.gpu_mem is not None for r in new)
        self.clear()
        self._set_columns(gpu=gpu)
        for r in new:
            dim = "" if r.alive else "dim"
            cells = [
                Text(str(r.pid), style=dim, justify="right"),
                _cell(r.cpu, "num"),
                _cell(r.rss, "bytes"),
                _cell(r.rss_peak, "bytes"),
                _cell(r.gpu_mem, "bytes"),
                _cell(None if r.threads is None else float(r.threads), "int"),
                Text(r.state, style=dim),
                Text(
                    r.prefix + escape(r.command), style=dim
                ),  # Text: not markup; escaped: any name
            ]
            if not gpu:
                del cells[4]
            self.add_row(*cells)
        if new:
            self.move_cursor(row=min(keep, len(new) - 1))

    @property
    def rows_shown(self) -> tuple[ProcRow, ...]:
        return self._rows or ()

    def describe(self) -> str:
        """The order in words: ``cpu ↓``, and ``, tree`` when it is one."""
        arrow = "↓" if self.descending else "↑"
        return f"{self.sort_by} {arrow}" + (", tree" if self.as_tree else "")

    def watch_sort_by(self) -> None:
        self.post_message(self.Changed())

    def watch_descending(self) -> None:
        self.post_message(self.Changed())

    def watch_as_tree(self) -> None:
        self.post_message(self.Changed())

    def action_next_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def action_reverse(self) -> None:
        self.descending = not self.descending

    def action_tree(self) -> None:
        self.as_tree = not self.as_tree

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        sort = self._columns[event.column_index][1]
        if sort is None:
            return
        if sort == self.sort_by:
            self.descending = not self.descending
        else:
            self.sort_by = sort
