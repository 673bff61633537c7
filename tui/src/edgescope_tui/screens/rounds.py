"""Rounds: a federated (Flower) run across its clients, from the open sources, replayed or live.

One row per round, one column per client (train / evaluate seconds, or how it dropped out: timed
out, failed, not selected), the straggler of each round marked, and under the table, for the
highlighted round, the critical path (how long the server waited, for whom) and the straggler's
cause from its own device's signals. The analysis is :mod:`edgescope_tracing.rounds`, the same
that ``edgescope rounds`` prints, run in a worker thread.

It reads every open source: trace files (read again with ``R``), and live ones, a collector
(TCP or SSH) or a device on the fleet's broker, whose rounds their feeds fold as the records
pass (:attr:`edgescope_tui.feed.Feed.rounds`): the table grows as rounds arrive. Open with
``f`` from a dashboard, the compare screen (``edgescope replay node0/ node1/ ... server.est``
opens several traces; ``edgescope tui HOST:PORT ...`` several collectors) or the fleet screen,
where it reads every device on the broker, from the moment it opens (the broker keeps no
history; a device's collector does, and its rounds are read from the start over TCP or SSH).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgescope_tracing import TraceError
from edgescope_tracing.rounds import (
    RoundsInput,
    RoundsReport,
    analyze,
    cell_text,
    offset_text,
    read_traces,
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

from ..sources.file import FileSource

if TYPE_CHECKING:
    from ..feed import Feed

__all__ = ["RoundsScreen"]


class RoundsScreen(Screen[None]):
    """The rounds of the Flower runs in the open sources; ``r`` shows the next run."""

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

    def __init__(self, feeds: Callable[[], Sequence[Feed]]) -> None:
        """``feeds``: the open sources to read, asked again at each refresh (a fleet's grows
        as devices appear)."""
        super().__init__()
        self._feeds = feeds
        self.reports: list[RoundsReport] = []
        self.message_text = "reading the traces..."
        self.live_sources = 0
        """How many of the sources read are live."""
        self._files: tuple[list[Path], RoundsInput] | None = None
        """The open trace files and what was read from them."""
        self._seen: tuple[int, ...] | None = None
        """The live feeds' fold versions at the last analysis: nothing new, nothing to redo."""
        self._busy = False
        """An analysis is running: the next waits for it (a file is never read twice at once)."""
        self._again = False
        self._file_error = ""
        """Why the open trace files could not be read (until ``R``)."""

    def compose(self) -> ComposeResult:
        yield Static(self.message_text, id="rounds-head")
        yield DataTable(id="rounds-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="rounds-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Read the trace files again, and the live rounds as they stand."""
        self._files = None
        self._seen = None
        self._file_error = ""
        self.refresh_view()

    def refresh_view(self) -> None:
        """Analyze again where something came in (the App calls it when a feed grows)."""
        if self._busy:
            self._again = True
            return
        feeds = list(self._feeds())
        paths = [f.source.path for f in feeds if isinstance(f.source, FileSource)]
        folds = [f.rounds for f in feeds if f.rounds is not None]
        seen = (*(id(r) for r in folds), *(r.version for r in folds))
        files = self._files if self._files is not None and self._files[0] == paths else None
        if files is not None and seen == self._seen:
            return
        self._seen = seen
        if not paths and not folds:
            self._show_message(
                "no source is open: Rounds reads the open trace files, collectors and fleet devices"
            )
            return
        live: list[RoundsInput] = [r.snapshot() for r in folds]  # here: the loop feeds them
        self._busy = True
        self._analyze(paths, files, live)

    @work(thread=True, exclusive=True, group="rounds")
    def _analyze(
        self,
        paths: list[Path],
        files: tuple[list[Path], RoundsInput] | None,
        live: list[RoundsInput],
    ) -> None:
        error = ""
        try:
            if files is None:
                files = (paths, read_traces(paths))
        except (OSError, TraceError) as e:
            error = f"cannot read the trace files: {e}"
            files = (paths, ([], [], {}))
        messages, phases, samples = files[1][0][:], files[1][1][:], dict(files[1][2])
        for m, p, s in live:
            messages += m
            phases += p
            samples.update(s)
        reports = analyze(messages, phases, samples)
        self.app.call_from_thread(self._show, files, reports, len(live), error)

    def _show_message(self, text: str) -> None:
        self.message_text = text
        self.query_one("#rounds-head", Static).update(escape(text))

    def _show(
        self,
        files: tuple[list[Path], RoundsInput],
        reports: list[RoundsReport],
        live: int,
        error: str,
    ) -> None:
        self._busy = False
        if error:
            self._file_error = error
        self._files = files
        self.live_sources = live
        self.reports = reports
        if not reports:
            self._show_message(
                (f"{self._file_error}\n" if self._file_error else "")
                + "no Flower rounds in these sources"
                + (f" yet ({live} live: they show as rounds arrive)" if live else "")
                + " (the client Mod and RecordedStrategy of edgescope.integrations.flower "
                "record them)"
            )
        else:
            self.index = min(self.index, len(reports) - 1)
            self._draw()
        if self._again:  # something came in meanwhile
            self._again = False
            self.refresh_view()

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
            + (f"  [i]live from {self.live_sources} sources[/i]" if self.live_sources else "")
        ]
        if self._file_error:
            head.append(f"[yellow]{escape(self._file_error)}[/yellow]")
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
        cursor = table.cursor_row
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
        # a redraw as rounds arrive keeps the row the cursor is on
        cursor = min(max(cursor, 0), max(len(report.rounds) - 1, 0))
        if cursor:
            table.move_cursor(row=cursor)
        self._detail(cursor)

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
