"""Compare: one metric across every run of every open source, on one chart.

By step, or (``t``) by time since each run started: devices that step at different rates line
up in time that way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from edgescope_tracing.text import escape as escape_text
from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..chartspec import PALETTE, ChartSpec, Line, fmt_number, fmt_offset
from ..feed import Feed
from ..widgets.chart import Chart

__all__ = ["CompareScreen", "compare_lines"]


def compare_keys(feeds: Sequence[Feed]) -> list[str]:
    """Metric keys found in any feed, loss-like first, then by how many runs have them."""
    count: dict[str, int] = {}
    order: list[str] = []
    for feed in feeds:
        for key in feed.state.metric_keys():
            if key not in count:
                order.append(key)
            count[key] = count.get(key, 0) + 1
    return sorted(order, key=lambda k: (0 if "loss" in k.lower() else 1, -count[k], order.index(k)))


def compare_lines(feeds: Sequence[Feed], key: str, *, by_time: bool = False) -> tuple[Line, ...]:
    """A line per (source, run) that logged ``key``, each in its own color.

    ``by_time``: each line is offset by its run's start, to compare by time since the start.
    """
    lines: list[Line] = []
    for feed in feeds:
        s = feed.state
        for (run, k), series in s.metrics.items():
            if k != key or not len(series):
                continue
            info = s.runs.get(run)
            name = info.name if info is not None else f"run {run}"
            label = f"{feed.label}:{name}" if len(feeds) > 1 else name
            start = info.start_us if info is not None and info.start_us else series.t[0]
            color = PALETTE[len(lines) % len(PALETTE)]
            shown = escape_text(label)  # names from traces: no control character drawn
            lines.append(Line(shown, series, color, offset=start if by_time else 0.0))
    return tuple(lines)


def _auto_log(lines: Sequence[Line]) -> bool:
    """Log scale when every value is positive and they span more than two decades."""
    los = [ln.series.lo for ln in lines if not math.isnan(ln.series.lo)]
    his = [ln.series.hi for ln in lines if not math.isnan(ln.series.hi)]
    return bool(los) and min(los) > 0 and max(his) / min(los) > 100


class CompareScreen(Screen[None]):
    """The same metric of every run on one chart; m/M picks the metric."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "metric(1)", "Next metric"),
        Binding("M", "metric(-1)", "Prev metric"),
        Binding("o", "log", "Log scale"),
        Binding("t", "by_time", "Step/time"),
    ]

    metric: reactive[str | None] = reactive(None)
    """The metric compared; None picks the first (loss first)."""
    by_time: reactive[bool] = reactive(False)
    """Compare by time since each run started instead of by step."""
    log_scale: reactive[bool | None] = reactive(None)
    """Log y axis; None decides by the data."""

    def __init__(self, feeds: Sequence[Feed], *, metric: str | None = None) -> None:
        super().__init__()
        self.feeds = list(feeds)
        self.set_reactive(CompareScreen.metric, metric)

    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        yield Chart(id="compare-chart")
        yield Static(id="compare-legend")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def watch_metric(self) -> None:
        self.refresh_view()

    def watch_by_time(self) -> None:
        self.refresh_view()

    def watch_log_scale(self) -> None:
        self.refresh_view()

    def current(self) -> str | None:
        keys = compare_keys(self.feeds)
        if self.metric in keys:
            return self.metric
        return keys[0] if keys else None

    def refresh_view(self) -> None:
        key = self.current()
        try:
            title = self.query_one("#compare-title", Static)
            chart = self.query_one("#compare-chart", Chart)
            legend = self.query_one("#compare-legend", Static)
        except NoMatches:  # being taken down as the App quits: nothing to draw
            return
        if key is None:
            title.update("[b]compare[/b]: no metrics yet")
            chart.spec = ChartSpec("compare", empty="no metrics logged yet")
            legend.update("")
            return
        lines = compare_lines(self.feeds, key, by_time=self.by_time)
        log = _auto_log(lines) if self.log_scale is None else self.log_scale
        keys = compare_keys(self.feeds)
        title.update(
            f"[b]compare {escape(escape_text(key))}[/b] across {len(lines)} run(s) · metric "
            f"{keys.index(key) + 1}/{len(keys)} (m/M) · {'log' if log else 'linear'} scale (o)"
            f" · by {'time since start' if self.by_time else 'step'} (t)"
        )
        if self.by_time:
            chart.spec = ChartSpec(key, lines, log=log, by_time=True, x_fmt=fmt_offset)
        else:
            chart.spec = ChartSpec(key, lines, log=log, x_fmt=lambda v: f"step {v:.0f}")
        rows = []
        for ln in lines:
            last = ln.series.last
            lo = ln.series.lo
            rows.append(
                f"[{ln.color}]■[/] {escape(ln.label)}: "
                f"last {fmt_number(last) if last is not None else '-'}"
                f" · min {fmt_number(lo) if not math.isnan(lo) else '-'}"
                f" · {len(ln.series):,} points to step {ln.series.last_x or 0:.0f}"
            )
        legend.update("\n".join(rows))

    def action_metric(self, delta: int) -> None:
        keys = compare_keys(self.feeds)
        if not keys:
            return
        cur = self.current()
        i = keys.index(cur) if cur in keys else 0
        self.metric = keys[(i + delta) % len(keys)]

    def action_log(self) -> None:
        key = self.current()
        lines = compare_lines(self.feeds, key) if key else ()
        self.log_scale = not (_auto_log(lines) if self.log_scale is None else self.log_scale)

    def action_by_time(self) -> None:
        self.by_time = not self.by_time
