"""The run dashboard: one run of one source, at the replay cursor.

Tabs: an overview (loss, step time, memory, thermal), every metric, system (throughput, clocks,
power, CPU), stacks (top functions and an icicle of the window before the cursor), events
(with jump-to), the run's processes and the run itself (config, summary, device facts). The
models live in UI-free modules (``views``, ``processes``, ``runinfo``, ``alerts``, ``save``);
this screen hands their output to its widgets. The replay bar at the bottom scrubs, plays and
pauses; a live source is the same view with the cursor at the head of the stream.
"""

from __future__ import annotations

import asyncio
import queue
import re
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from edgescope_tracing import Record
from edgescope_tracing.summary import end_state, event_traceback, exit_words
from edgescope_tracing.text import escape as escape_text
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from .. import views
from ..alerts import TOASTS, AlertTracker
from ..chartspec import ChartSpec, smoothed, zoomed
from ..feed import Feed
from ..processes import process_rows
from ..runinfo import run_overview
from ..save import SaveError, SaveRequest, SaveResult, fresh_opener, save
from ..series import EMA_WEIGHTS
from ..sources.base import RING_LOST, Status
from ..sources.file import FileSource
from ..sources.live import LiveSource, Opener
from ..state import RunState, stack_tree, top_functions
from ..widgets.chart import Chart
from ..widgets.events import EventRow, EventsView
from ..widgets.filter import FilterBar
from ..widgets.icicle import Icicle
from ..widgets.processes import ProcessTable
from ..widgets.timeline import ReplayBar, TimelineSpec, fmt_offset
from .jump import JumpScreen
from .save import SaveChoice, SaveScreen

__all__ = ["DashboardScreen", "SPEEDS", "parse_jump"]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TEXT_KEYS = ("toggle_play", "nudge", "start", "end")
"""The actions of priority keys that a filter being typed into takes as text instead."""
TABS = ("overview", "metrics", "system", "stacks", "events", "processes", "run")


def parse_jump(text: str, t0: int) -> tuple[str, int] | None:
    """``("step", n)`` for ``s600``/``step 600``/``#600``; ``("time", t_us)`` for ``12.5``,
    ``12.5s``, ``1:02.5`` or ``1:02:03`` (time since the start); None if it is neither."""
    text = text.strip().lower()
    m = re.fullmatch(r"(?:s|step|#)\s*(\d+)", text)
    if m:
        return "step", int(m.group(1))
    m = re.fullmatch(r"\+?(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)\s*s?", text)
    if not m:
        return None
    parts = [p for p in m.groups() if p is not None]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return "time", t0 + int(seconds * 1e6)


class DashboardScreen(Screen[None]):
    """One run at the cursor: curves, step time, memory, thermal, stacks and events.

    Keys: space play/pause · ←/→ 1 s, shift 10 s · ,/. previous/next step · p/n previous/next
    event · -/+ speed 0.25x-64x · home/end start, end (live) · g go to a time or step · r next
    run · [/] stack window · 1-7 tabs · / filter (Metrics, Processes) · z/Z zoom in, out · e
    smoothing (EMA 0, 0.6, 0.9, 0.99). Mouse: click or drag the replay bar, click a chart or
    an event (one click), drag across a chart to zoom into that range.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_play", "Play/pause", priority=True),
        Binding("left", "nudge(-1)", "-1s", show=False, priority=True),
        Binding("right", "nudge(1)", "+1s", show=False, priority=True),
        Binding("shift+left", "nudge(-10)", "-10s", show=False, priority=True),
        Binding("shift+right", "nudge(10)", "+10s", show=False, priority=True),
        Binding("comma", "step(-1)", "Prev step", show=False),
        Binding("full_stop", "step(1)", "Next step", show=False),
        Binding("p", "event(-1)", "Prev event"),
        Binding("n", "event(1)", "Next event"),
        Binding("minus", "speed(-1)", "Slower"),
        Binding("plus,equals_sign", "speed(1)", "Faster"),
        Binding("home", "start", "Start", show=False, priority=True),
        Binding("end", "end", "End/live", show=False, priority=True),
        Binding("l", "end", "Live/end", show=False),
        Binding("g", "jump", "Go to"),
        Binding("r", "next_run", "Next run", show=False),
        Binding("left_square_bracket", "window(0.5)", "Narrower window", show=False),
        Binding("right_square_bracket", "window(2)", "Wider window", show=False),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('metrics')", "Metrics", show=False),
        Binding("3", "tab('system')", "System", show=False),
        Binding("4", "tab('stacks')", "Stacks", show=False),
        Binding("5", "tab('events')", "Events", show=False),
        Binding("6", "tab('processes')", "Processes", show=False),
        Binding("7", "tab('run')", "Run", show=False),
        Binding("slash", "filter", "Filter (Metrics, Processes)"),
        Binding("z", "zoom(0.5)", "Zoom in"),
        Binding("Z", "zoom(2)", "Zoom out"),
        Binding("e", "smooth", "Smoothing (EMA)"),
        Binding("w", "save", "Save run"),
    ]

    cursor: reactive[int | None] = reactive(None)
    """Replay time (µs); None follows the head of the stream (or the end of a file)."""
    playing: reactive[bool] = reactive(False)
    """Whether the cursor advances by itself."""
    speed: reactive[float] = reactive(1.0)
    """Playback speed, 0.25x to 64x."""
    run: reactive[int | None] = reactive(None)
    """The run shown (its number in the stream); None picks the first."""
    stack_window_us: reactive[int] = reactive(10_000_000)
    """Width of the stack window ending at the cursor."""
    zoom: reactive[tuple[float, float] | None] = reactive(None)
    """The share of each chart's x range shown, ``(from, to)`` in [0, 1]; None: all."""
    smoothing: reactive[float] = reactive(0.0)
    """The EMA weight of step charts; 0 draws the raw values."""

    def __init__(self, feed: Feed, *, run: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.feed = feed
        self.set_reactive(DashboardScreen.run, run)
        self._play_timer: Timer | None = None
        self._metric_charts: dict[str, Chart] = {}
        self._top_rows: list[tuple[str, str, str]] = []
        self._alerts = AlertTracker()

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="run-header")
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("Overview", id="overview"), Grid(id="overview-grid"):
                yield Chart(id="chart-loss")
                yield Chart(id="chart-step")
                yield Chart(id="chart-memory")
                yield Chart(id="chart-thermal")
            with TabPane("Metrics", id="metrics"):
                yield FilterBar("filter metrics by name", then="#metric-list", id="metric-filter")
                yield VerticalScroll(id="metric-list")
            with TabPane("System", id="system"), Grid(id="system-grid"):
                yield Chart(id="chart-throughput")
                yield Chart(id="chart-clocks")
                yield Chart(id="chart-power")
                yield Chart(id="chart-cpu")
            with TabPane("Stacks", id="stacks"):
                yield Static(id="stack-title")
                with Horizontal(id="stack-body"):
                    yield DataTable(id="top-functions", cursor_type="row", zebra_stripes=True)
                    yield Icicle(id="icicle")
            with TabPane("Events", id="events"):
                yield EventsView(id="events-list")
            with TabPane("Processes", id="processes"):
                yield Static(id="proc-title")
                yield FilterBar("command, state or pid", then="#proc-table", id="proc-filter")
                yield ProcessTable(id="proc-table")
            with TabPane("Run", id="run"), VerticalScroll(id="run-body"):
                yield Static(id="run-facts")
        yield ReplayBar(id="replay")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#top-functions", DataTable)
        table.add_columns("function", "self", "total")
        self._play_timer = self.set_interval(1 / 20, self._tick, pause=True)
        self.refresh_view()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Space, the arrows, Home and End are the replay's even over a list; in a filter being
        # typed they are the text's.
        return not (action in TEXT_KEYS and isinstance(self.focused, FilterBar))

    # --- what to show -------------------------------------------------------------------------

    @property
    def shown(self) -> RunState:
        """The state drawn now: the feed's, or its seek window's when the cursor is past it."""
        return self.feed.state_at(self.cursor)

    def _run(self, s: RunState) -> int:
        if self.run is not None and (self.run in s.runs or not s.runs):
            return self.run
        if s.runs:
            # the first run that logged something: `record` of an SDK script starts with its
            # wrapper run (the command's process, no metrics), then the script's own
            logged = {r for r, _ in s.metrics}
            return next((r for r in s.runs if r in logged), next(iter(s.runs)))
        keys = [r for r, _ in s.metrics]
        return keys[0] if keys else 0

    def _end(self) -> int | None:
        """The time the view ends at: the cursor, or the newest record."""
        if self.cursor is not None:
            return self.cursor
        return self.shown.stream.last_us

    def refresh_view(self) -> None:
        """Rebuild every widget's spec from the state at the cursor."""
        s = self.shown
        run = self._run(s)
        end = self.cursor
        rng = self.feed.time_range()
        t0 = s.stream.first_us or (rng[0] if rng else 0)
        t_end = end if end is not None else (s.stream.last_us or t0)
        try:
            self._header(s, run)
            self._timeline(s, run, rng)
            # Only the tab on show is rebuilt; the others are when they are shown.
            tab = self.query_one("#tabs", TabbedContent).active
            self._alert(tab)
            if tab == "overview":
                self._overview(s, run, end, t0, t_end)
            elif tab == "metrics":
                self._metrics_tab(s, run, end)
            elif tab == "system":
                for name, spec in views.system_specs(s, run, end, t0, t_end).items():
                    self._draw(self.query_one(f"#chart-{name}", Chart), spec)
            elif tab == "stacks":
                self._stacks(s, end)
            elif tab == "events":
                self._events(s, end, t0)
            elif tab == "processes":
                self._processes(s, run, end, t0)
            elif tab == "run":
                self.query_one("#run-facts", Static).update(run_overview(s, run))
        except NoMatches:
            # A feed update that arrives while the screen is being taken down (the App
            # quitting): its widgets are gone and there is nothing left to draw.
            return

    def _header(self, s: RunState, run: int) -> None:
        info = s.runs.get(run)
        parts = []
        if info is not None:
            # Names from the trace: no control character reaches the terminal (#11 item 11).
            parts.append(
                f"[b]{escape(escape_text(info.name))}[/b] on {escape(escape_text(info.host))}"
            )
            place = views.run_place(s, run)
            if place is not None:
                parts.append(f"in {escape(escape_text(place))}")
            if info.end_us is not None:
                # The words inspect and tail use: a signal named, a non-zero exit "failed".
                state = end_state(info.exit_code, cause=info.cause)
                if info.exit_code == 0:
                    parts.append("finished (exit 0)")
                elif info.exit_code is None and state != "ended":
                    parts.append(state)  # the cause that follows says why
                else:
                    parts.append(f"{state} ({exit_words(info.exit_code)})")
                if info.cause is not None:
                    parts.append(f"[#ff5f5f]{escape(escape_text(info.cause))}[/]")
            if info.dropped:
                parts.append(f"[#ffd75f]{info.dropped} items dropped by the producer[/]")
        else:
            parts.append("[b]no run yet[/b]")
        if info is None or self.feed.label not in (info.host, f"{info.host}.local"):
            parts.append(escape(escape_text(self.feed.label)))  # where from, unless the host
        if len(s.runs) > 1:
            parts.append(f"run {list(s.runs).index(run) + 1}/{len(s.runs)} (r: next)")
        st = s.stream.status
        if st is not None:
            color = {"live": "#87d787", "ended": "#87afd7"}.get(st.state, "#ffd75f")
            # "live from pi (pi)" says nothing the name, host and label have not said
            message = f": {escape(st.message)}" if st.message and st.state != "live" else ""
            parts.append(f"[{color}]{st.state}[/]{message}")
        rng = self.feed.time_range()
        if self.feed.window is not None and s is self.feed.window and s.stream.first_us and rng:
            parts.append(
                f"[#ffd75f]past what is loaded: read from the keyframe before "
                f"{fmt_offset(s.stream.first_us - rng[0])}[/]"
            )
        gaps = s.stream.gaps.view()
        if gaps and gaps[0].reason.endswith(RING_LOST):  # opened after the ring let go of it
            parts.append(f"[#ffd75f]{escape(gaps[0].reason)}[/]")
            gaps = gaps[1:]
        if gaps:
            parts.append(f"[#ff5f5f]{len(gaps)} gap(s) or damaged span(s)[/]")
        if s.stream.trimmed_us is not None and rng:
            parts.append(
                f"[dim]history before {fmt_offset(s.stream.trimmed_us - rng[0])} let go[/]"
            )
        self.query_one("#run-header", Static).update(" · ".join(parts))

    def _alert(self, tab: str) -> None:
        """Toasts for warnings that just arrived live, and the unread count on the Events
        tab's title (cleared while it is on show)."""
        full = self.feed.state
        live_from = None if self.feed.seekable else full.stream.live_from_event
        before = self._alerts.unread
        new = self._alerts.update(full.events, live_from=live_from, viewing=tab == "events")
        if tab == "events":
            self._alerts.read()
        for e in new[:TOASTS]:
            self.notify(
                escape_text(e.message),
                title=f"{e.kind}: {'error' if e.severity >= 2 else 'warning'}",
                severity="error" if e.severity >= 2 else "warning",
                markup=False,
            )
        if len(new) > TOASTS:
            self.notify(f"{len(new) - TOASTS} more warnings: 5 shows the Events tab")
        if self._alerts.unread != before or (tab == "events" and before):
            n = self._alerts.unread
            label = f"Events ({n})" if n else "Events"
            self.query_one("#tabs", TabbedContent).get_tab("events").label = label

    def _overview(self, s: RunState, run: int, end: int | None, t0: int, t1: int) -> None:
        for name, spec in views.overview_specs(s, run, end, t0, t1).items():
            self._draw(self.query_one(f"#chart-{name}", Chart), spec)

    def _draw(self, chart: Chart, spec: ChartSpec) -> None:
        """A chart's spec as the zoom and smoothing settings have it."""
        chart.spec = zoomed(smoothed(spec, self.smoothing), self.zoom)

    def _metrics_tab(self, s: RunState, run: int, end: int | None) -> None:
        box = self.query_one("#metric-list", VerticalScroll)
        text = self.query_one("#metric-filter", FilterBar).value
        keys = s.metric_keys(run)
        shown = set(views.filter_keys(keys, text))
        for key in keys:
            chart = self._metric_charts.get(key)
            if chart is None:
                chart = self._metric_charts[key] = Chart(classes="metric-chart")
                box.mount(chart)
            chart.display = key in shown
            if key in shown:
                self._draw(chart, views.metric_spec(s, run, key, end))

    def _processes(self, s: RunState, run: int, end: int | None, t0: int) -> None:
        table = self.query_one("#proc-table", ProcessTable)
        text = self.query_one("#proc-filter", FilterBar).value
        rows = process_rows(
            s,
            run,
            end,
            sort=table.sort_by,
            descending=table.descending,
            text=text,
            tree=table.as_tree,
        )
        table.show(rows)
        alive = sum(r.alive for r in rows)
        at = "" if end is None else f" at {fmt_offset(end - t0)}"
        what = f"{alive} running, {len(rows) - alive} exited" if rows else "no process samples"
        match = f" matching [b]{escape(text)}[/b]" if text else ""
        self.query_one("#proc-title", Static).update(
            f"[b]processes[/b]{at}{match}: {what} · sorted by {table.describe()} "
            "[dim](/ filters)[/dim]"
        )

    @on(ProcessTable.Changed)
    @on(FilterBar.Filtered)
    def _list_settings_changed(self) -> None:
        self.refresh_view()

    def _stacks(self, s: RunState, end: int | None) -> None:
        t1 = end if end is not None else s.stream.last_us
        t0 = None if t1 is None else t1 - self.stack_window_us
        wins = s.stack_windows(t0, t1)
        total = sum(n for w in wins for _, n in w.samples)
        backends = sorted({w.backend for w in wins}) or ["none"]
        self.query_one("#stack-title", Static).update(
            f"[b]stacks[/b] in the {self.stack_window_us / 1e6:g} s before the cursor: "
            f"{total} samples · backend {', '.join(backends)} · "
            f"{s.stacks.total} samples in all · [dim]\\[ and ] change the window[/dim]"
        )
        table = self.query_one("#top-functions", DataTable)
        pct = 100 / total if total else 0
        rows = [
            (escape_text(name), f"{self_n * pct:.1f}%", f"{total_n * pct:.1f}%")
            for name, self_n, total_n in top_functions(wins, s, limit=30)
        ]
        if rows != self._top_rows:
            self._top_rows = rows
            table.clear()
            for row in rows:
                # Text, not str: a DataTable reads str cells as markup.
                table.add_row(*(Text(cell) for cell in row))
        self.query_one("#icicle", Icicle).stack = stack_tree(wins)

    def _events(self, s: RunState, end: int | None, t0: int) -> None:
        # every event whatever the cursor; the one at the cursor is marked
        rows = [
            EventRow(e.t_us, e.kind, e.severity, e.message, event_traceback(e) or "")
            for e in s.events.view()
        ]
        for g in s.stream.gaps.view():
            rows.append(EventRow(g.t_us, "gap", 2, g.reason))
        for sp in s.spans():
            rows.append(
                EventRow(
                    sp.start_us,
                    "throttle",
                    1,
                    f"{sp.source} throttled for {(sp.end_us - sp.start_us) / 1e6:.1f} s: "
                    + ", ".join(sp.reasons),
                )
            )
        rows.sort(key=lambda r: r.t_us)
        at = len(rows) if end is None else bisect_right([r.t_us for r in rows], end)
        current = at - 1 if at else None
        self.query_one("#events-list", EventsView).show(tuple(rows), t0, current)

    def _timeline(self, s: RunState, run: int, rng: tuple[int, int] | None) -> None:
        bar = self.query_one("#replay", ReplayBar)
        if rng is None:
            bar.spec = None
            return
        full = self.feed.state
        key = next(iter(s.metric_keys(run)), None)
        step = None
        if key is not None:
            ser = s.metrics[(run, key)]
            n = ser.count_until(self.cursor)
            step = int(ser.x[n - 1]) if n else None
        status = ""
        connection = "" if full.stream.status is None else full.stream.status.state
        if (self.feed.seekable and not self.feed.complete) or connection == "history":
            # loading only while history is read: a file being loaded, a collector's store
            status = f"loading… {full.stream.records:,} records"
        bar.spec = TimelineSpec(
            t0=rng[0],
            t1=rng[1],
            cursor=self.cursor,
            loaded_until=full.stream.last_us,
            playing=self.playing,
            speed=self.speed,
            live=not self.feed.seekable,
            connection=connection,
            step=step,
            events=tuple((e.t_us, e.severity) for e in full.events.view()),
            spans=tuple((sp.start_us, sp.end_us) for sp in full.spans()),
            gaps=tuple((g.t_us, g.end_us or g.t_us) for g in full.stream.gaps.view()),
            status=status,
        )

    def on_screen_resume(self) -> None:
        self.refresh_view()

    @on(TabbedContent.TabActivated)
    def _tab_shown(self) -> None:
        self.refresh_view()

    # --- reacting -----------------------------------------------------------------------------

    def watch_cursor(self) -> None:
        if self.feed.needs_window(self.cursor):
            self._load_window()
        self.refresh_view()

    def watch_run(self) -> None:
        self.refresh_view()

    def watch_stack_window_us(self) -> None:
        self.refresh_view()

    def watch_playing(self, playing: bool) -> None:
        if self._play_timer is not None:
            if playing:
                self._play_timer.resume()
            else:
                self._play_timer.pause()
        self.refresh_view()

    def watch_speed(self) -> None:
        self.refresh_view()

    @work(exclusive=True, group="seek")
    async def _load_window(self) -> None:
        target = self.cursor
        if target is None:
            return
        await self.feed.load_window(target)
        self.refresh_view()

    def _tick(self) -> None:
        rng = self.feed.time_range()
        if rng is None or not self.playing:
            return
        cur = self.cursor if self.cursor is not None else rng[0]
        nxt = cur + int(self.speed * 1e6 / 20)
        if nxt >= rng[1]:
            self.playing = False
            self.cursor = None if not self.feed.seekable else rng[1]
        else:
            self.cursor = nxt

    def go_to(self, t_us: int) -> None:
        rng = self.feed.time_range()
        if rng is None:
            return
        self.cursor = min(max(t_us, rng[0]), rng[1])

    @on(ReplayBar.Scrubbed)
    def _scrubbed(self, event: ReplayBar.Scrubbed) -> None:
        self.go_to(event.t_us)

    @on(Chart.Clicked)
    def _chart_clicked(self, event: Chart.Clicked) -> None:
        if event.by_time:
            self.go_to(int(event.x))
            return
        # A step axis: go to the time that step was logged.
        s = self.shown
        run = self._run(s)
        spec = event.chart.spec
        key = spec.lines[0].label if spec is not None and spec.lines else None
        ser = s.metrics.get((run, key)) if key is not None else None
        if ser is None:
            ser = s.step_seconds(run)
        if ser is not None and ser.n:
            i = min(ser.index_of_x(event.x), ser.n - 1)
            self.go_to(int(ser.t[i]))

    @on(EventsView.Jump)
    def _jumped(self, event: EventsView.Jump) -> None:
        self.go_to(event.t_us)
        self.notify(f"at {fmt_offset(event.t_us - (self.feed.time_range() or (0, 0))[0])}")

    # --- actions ------------------------------------------------------------------------------

    def action_toggle_play(self) -> None:
        rng = self.feed.time_range()
        if rng is None:
            return
        if not self.playing and (self.cursor is None or self.cursor >= rng[1]):
            self.cursor = rng[0]
        self.playing = not self.playing

    def action_nudge(self, seconds: float) -> None:
        cur = self._end()
        if cur is not None:
            self.go_to(cur + int(seconds * 1e6))

    def action_step(self, delta: int) -> None:
        s = self.shown
        run = self._run(s)
        key = next(iter(s.metric_keys(run)), None)
        if key is None:
            return
        ser = s.metrics[(run, key)]
        n = ser.count_until(self._end())
        i = min(max(n - 1 + delta, 0), ser.n - 1)
        if ser.n:
            self.go_to(int(ser.t[i]))

    def action_event(self, delta: int) -> None:
        times = sorted(
            [e.t_us for e in self.feed.state.events.view()]
            + [g.t_us for g in self.feed.state.stream.gaps.view()]
            + [sp.start_us for sp in self.feed.state.spans()]
        )
        cur = self._end()
        if not times or cur is None:
            self.notify("no events in this run")
            return
        if delta > 0:
            later = [t for t in times if t > cur]
            if not later:
                self.notify("no later event")
                return
            self.go_to(later[0])
        else:
            earlier = [t for t in times if t < cur]
            if not earlier:
                self.notify("no earlier event")
                return
            self.go_to(earlier[-1])

    def action_speed(self, delta: int) -> None:
        i = min(range(len(SPEEDS)), key=lambda k: abs(SPEEDS[k] - self.speed))
        self.speed = SPEEDS[min(max(i + delta, 0), len(SPEEDS) - 1)]

    def action_start(self) -> None:
        rng = self.feed.time_range()
        if rng is not None:
            self.cursor = rng[0]

    def action_end(self) -> None:
        self.playing = False
        self.cursor = None

    def action_next_run(self) -> None:
        runs = list(self.shown.runs)
        if len(runs) < 2:
            self.notify("this source has one run")
            return
        cur = self._run(self.shown)
        self.run = runs[(runs.index(cur) + 1) % len(runs)]

    def action_window(self, factor: float) -> None:
        self.stack_window_us = int(min(max(self.stack_window_us * factor, 250_000), 3600e6))

    def watch_zoom(self) -> None:
        self.refresh_view()

    def watch_smoothing(self) -> None:
        self.refresh_view()

    def action_zoom(self, factor: float) -> None:
        """Narrow (factor < 1) or widen the x range of every chart, about the cursor (or
        keeping the newest part in view, live or at the end)."""
        f0, f1 = self.zoom or (0.0, 1.0)
        width = min(1.0, max((f1 - f0) * factor, 1 / 1024))
        if width >= 1.0:
            self.zoom = None
            return
        rng = self.feed.time_range()
        if self.cursor is None or rng is None or rng[1] <= rng[0]:
            a = max(0.0, f1 - width)  # the right edge stays: the newest values
        else:
            centre = (self.cursor - rng[0]) / (rng[1] - rng[0])
            a = min(max(centre - width / 2, 0.0), 1.0 - width)
        self.zoom = (a, a + width)

    def action_smooth(self) -> None:
        i = min(range(len(EMA_WEIGHTS)), key=lambda k: abs(EMA_WEIGHTS[k] - self.smoothing))
        self.smoothing = EMA_WEIGHTS[(i + 1) % len(EMA_WEIGHTS)]  # the titles say it

    @on(Chart.Dragged)
    def _dragged(self, event: Chart.Dragged) -> None:
        f0, f1 = self.zoom or (0.0, 1.0)
        self.zoom = (f0 + event.a * (f1 - f0), f0 + event.b * (f1 - f0))

    def _window(self) -> tuple[int, int] | None:
        """The time range the charts show, when it is less than all: the zoom, up to the
        cursor."""
        rng = self.feed.time_range()
        if rng is None or (self.zoom is None and self.cursor is None):
            return None
        f0, f1 = self.zoom or (0.0, 1.0)
        a = rng[0] + int(f0 * (rng[1] - rng[0]))
        b = rng[0] + int(f1 * (rng[1] - rng[0]))
        if self.cursor is not None:
            b = min(b, self.cursor)
        return (a, max(a, b))

    def action_save(self) -> None:
        """A trace file is read again; a collector (over TCP or SSH) is asked for what it holds
        again, on a connection of its own (from its oldest record, up to its head), since the
        view keeps folded figures, not records."""
        source = self.feed.source
        opener = fresh_opener(source.opener) if isinstance(source, LiveSource) else None
        if not isinstance(source, FileSource) and opener is None:
            self.notify(
                f"{escape_text(self.feed.label)} is not a trace file or a collector: nothing "
                "to read its records from again",
                severity="warning",
                markup=False,
            )
            return
        s = self.shown
        run = self._run(s)
        info = s.runs.get(run)
        rng = self.feed.time_range() or (0, 0)
        window = self._window()
        words = None
        if window is not None:
            words = f"{fmt_offset(window[0] - rng[0])}-{fmt_offset(window[1] - rng[0])}"

        def done(choice: SaveChoice | None) -> None:
            if choice is None:
                return
            t0, t1 = window if choice.window and window is not None else (None, None)
            path = Path(choice.path).expanduser()
            if isinstance(source, FileSource):
                self._write(SaveRequest(source.path, run, path, choice.fmt, t0, t1))
            elif opener is not None:
                self._save_live(opener, SaveRequest(None, run, path, choice.fmt, t0, t1))

        self.app.push_screen(SaveScreen(info.name if info else "run", run, words), done)

    @work(thread=True, group="save")
    def _write(self, req: SaveRequest) -> None:
        try:
            result = save(req)
        except SaveError as e:
            self.app.call_from_thread(
                self.notify, str(e), title="Not saved", severity="error", markup=False
            )
            return
        self.app.call_from_thread(self._saved, req, result, "")

    def _saved(self, req: SaveRequest, result: SaveResult, note: str) -> None:
        what = "records" if req.fmt == "est" else "rows"
        damaged = f" ({result.damaged} damaged spans skipped)" if result.damaged else ""
        self.notify(
            f"{result.written:,} {what} to {escape_text(str(result.path))}{damaged}{note}",
            title="Saved",
            markup=False,
        )

    @work(group="save")
    async def _save_live(self, opener: Opener, req: SaveRequest) -> None:
        """Read the collector's history again on a connection of its own (``opener``, from
        its oldest record up to its head as it was), handing the records to :func:`save` in a
        thread."""
        fresh = LiveSource(opener, since=0)
        batches: queue.Queue[list[Record] | None] = queue.Queue(maxsize=8)

        def given() -> Iterator[Record]:
            while (batch := batches.get()) is not None:
                yield from batch

        writing = asyncio.get_running_loop().run_in_executor(None, save, req, given())

        async def put(batch: list[Record] | None) -> bool:
            while not writing.done():  # the writer may have stopped (the path exists)
                try:
                    batches.put_nowait(batch)
                    return True
                except queue.Full:
                    await asyncio.sleep(0.01)
            return False

        notes: list[str] = []
        batch: list[Record] = []
        try:
            async for item in fresh.stream():
                if isinstance(item, Status):
                    if item.state == "live":
                        break  # all it held when this connection opened
                    if item.state == "gap":
                        notes.append(item.message or "records missing")
                    elif item.state in ("disconnected", "error"):
                        notes.append(f"stopped early: {item.message}")
                        break
                    continue
                batch.append(item)
                if len(batch) >= 1000:
                    if not await put(batch):
                        break
                    batch = []
        finally:
            await fresh.close()
            if batch:
                await put(batch)
            await put(None)
        try:
            result = await writing
        except SaveError as e:
            self.notify(str(e), title="Not saved", severity="error", markup=False)
            return
        note = "".join(f"; {escape_text(n)}" for n in notes)
        self._saved(req, result, note)

    def action_filter(self) -> None:
        tab = self.query_one("#tabs", TabbedContent).active
        if tab not in ("metrics", "processes"):
            self.notify("/ filters the Metrics (2) and Processes (6) tabs")
            return
        self.query_one("#metric-filter" if tab == "metrics" else "#proc-filter", FilterBar).open()

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "events":  # the keys (up, down, Enter) work on the list at once
            self.query_one("#events-list", EventsView).focus()
        elif tab == "processes":
            self.query_one("#proc-table", ProcessTable).focus()

    def action_jump(self) -> None:
        def done(text: str | None) -> None:
            if not text:
                return
            rng = self.feed.time_range()
            t0 = rng[0] if rng else 0
            target = parse_jump(text, t0)
            if target is None:
                self.notify(
                    f"{text!r} is not a time (12.5, 1:02.5) or a step (s600)", severity="error"
                )
                return
            what, value = target
            if what == "time":
                self.go_to(value)
                return
            s = self.shown
            run = self._run(s)
            key = next(iter(s.metric_keys(run)), None)
            ser = s.metrics.get((run, key)) if key is not None else None
            if ser is None or not ser.n:
                self.notify("no steps logged yet", severity="error")
                return
            i = min(ser.index_of_x(value), ser.n - 1)
            self.go_to(int(ser.t[i]))

        self.app.push_screen(JumpScreen(), done)
