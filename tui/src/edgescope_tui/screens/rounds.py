"""Rounds: a federated (Flower) run across its clients, from the open trace files.

One row per round, one column per client (train / evaluate seconds, or how it dropped out: timed
out, failed, not selected), the straggler of each round marked, and under the table, for the
highlighted round, the critical path (how long the server waited, for whom) and the straggler's
cause from its own device's signals. The analysis is :mod:`edgescope_tracing.rounds`, the same
that ``edgescope rounds`` prints; it reads the files in a worker thread.

Open with ``f``, from a dashboard or the compare screen (``edgescope replay node0/ node1/ ...
server.est`` opens several traces). Live collectors are not read here: the rounds of a live
run are shown once its traces are files (``edgescope rounds`` on the collectors' data
directories).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from edgescope_tracing import TraceError
from edgescope_tracing.rounds import (
    RoundsReport,
    analyze_paths,
    cell_text,
    offset_text,
    round_notes,
)
from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

__all__ = ["RoundsScreen"]


class RoundsScreen(Screen[None]):
    """The rounds of the Flower runs in the given trace files; ``r`` shows the next run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "next_run", "Next Flower run"),
        Binding("R", "reload", "Reload"),
    ]

    DEFAULT_CSS = """
    RoundsScreen #rounds-head { height: auto; padding: 0 1; }
    RoundsScreen #rounds-table { height: 1fr; }
    RoundsScreen #rounds-detail { height: auto; max-height: 12; padding: 0 1;
                                  border-top: solid $accent; }
    """

    index: reactive[int] = reactive(0)
    """Which Flower run of the inputs is shown."""

    def __init__(self, paths: Callable[[], Sequence[Path]]) -> None:
        super().__init__()
        self._paths = paths
        self.reports: list[RoundsReport] = []
        self.message_text = "reading the traces..."

    def compose(self) -> ComposeResult:
        yield Static(self.message_text, id="rounds-head")
        yield DataTable(id="rounds-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="rounds-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        paths = list(self._paths())
        if not paths:
            self._show_message("no trace files are open: Rounds reads the files of a replay")
            return
        self._analyze(paths)

    @work(thread=True, exclusive=True, group="rounds")
    def _analyze(self, paths: list[Path]) -> None:
        try:
            reports = analyze_paths(paths)
        except (OSError, TraceError) as e:
            self.app.call_from_thread(self._show_message, f"cannot read the traces: {e}")
            return
        self.app.call_from_thread(self._show, reports)

    def _show_message(self, text: str) -> None:
        self.message_text = text
        self.query_one("#rounds-head", Static).update(escape(text))

    def _show(self, reports: list[RoundsReport]) -> None:
        self.reports = reports
        if not reports:
            self._show_message(
                "no Flower rounds in these traces (the client Mod and RecordedStrategy of "
                "edgescope.integrations.flower record them)"
            )
            return
        self.index = min(self.index, len(reports) - 1)
        self._draw()

    def watch_index(self) -> None:
        if self.reports:
            self._draw()

    def action_next_run(self) -> None:
        if self.reports:
            self.index = (self.index + 1) % len(self.reports)

    def _draw(self) -> None:
        report = self.reports[self.index]
        clients = list(report.clients.values())
        head = [
            f"[b]Flower run {report.flwr_run}[/b]: {len(report.rounds)} rounds, "
            f"{len(clients)} clients"
            + (
                f"  ({self.index + 1} of {len(self.reports)}, r: next)"
                if len(self.reports) > 1
                else ""
            )
            + ("" if report.server else "  [i]no server trace[/i]")
        ]
        for c in clients:
            hosts = ", ".join(sorted(c.hosts)) or "host unknown"
            head.append(
                escape(
                    f"  {c.short}: {c.label} on {hosts}, {offset_text(report.offsets.get(c.node))}"
                )
            )
        self.message_text = "\n".join(head)
        self.query_one("#rounds-head", Static).update(self.message_text)
        table = self.query_one("#rounds-table", DataTable)
        table.clear(columns=True)
        table.add_columns("round", *(c.short for c in clients), "waited", "straggler")
        for row in report.rounds:
            cells: list[str | Text] = [str(row.round)]
            for c in clients:
                cell = row.cells.get(c.node)
                text = cell_text(cell) if cell is not None else "-"
                if row.straggler == c.node:
                    cells.append(Text(text + " *", style="bold red"))
                elif cell is not None and cell.status != "ok":
                    cells.append(Text(text, style="yellow"))
                else:
                    cells.append(text)
            cells.append(f"{row.waited_s:.2f} s" if row.waited_s is not None else "-")
            cells.append(report.clients[row.straggler].short if row.straggler is not None else "")
            table.add_row(*cells, key=str(row.round))
        self._detail(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def _detail(self, i: int) -> None:
        if not self.reports:
            return
        report = self.reports[self.index]
        if not 0 <= i < len(report.rounds):
            return
        row = report.rounds[i]
        lines = [f"[b]round {row.round}[/b]"]
        lines += [escape(note) for note in round_notes(report, row)]
        self.query_one("#rounds-detail", Static).update("\n".join(lines))
