"""The run dashboard: one run of one source, at the replay cursor.

Tabs: an overview (loss, step time, memory, thermal), every metric, system (throughput, clocks,
power, CPU), stacks (top functions and an icicle of the window before the cursor) and events
(with jump-to). The replay bar at the bottom scrubs, plays and pauses; a live source is the
same view with the cursor at the head of the stream.
"""

from __future__ import annotations

import re
from typing import ClassVar

from edgescope_tracing.summary import event_traceback
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
from ..feed import Feed
from ..state import RunState, stack_tree, top_functions
from ..widgets.chart import Chart
from ..widgets.events import EventRow, EventsView
from ..widgets.icicle import Icicle
from ..widgets.timeline import ReplayBar, TimelineSpec, fmt_offset
from .jump import JumpScreen

__all__ = ["DashboardScreen", "SPEEDS", "parse_jump"]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TABS = ("overview", "metrics", "system", "stacks", "events")


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
    run · [/] stack window · 1-5 tabs. Mouse: click or drag the replay bar, click a chart or
    an event.
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

    def __init__(self, feed: Feed, *, run: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.feed = feed
        self.set_reactive(DashboardScreen.run, run)
        self._play_timer: Timer | None = None
        self._metric_charts: dict[str, Chart] = {}
        self._top_rows: list[tuple[str, str, str]] = []

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
        yield ReplayBar(id="replay")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#top-functions", DataTable)
        table.add_columns("function", "self", "total")
        self._play_timer = self.set_interval(1 / 20, self._tick, pause=True)
        self.refresh_view()

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
            if tab == "overview":
                self._overview(s, run, end, t0, t_end)
            elif tab == "metrics":
                self._metrics_tab(s, run, end)
            elif tab == "system":
                for name, spec in views.system_specs(s, run, end, t0, t_end).items():
                    self.query_one(f"#chart-{name}", Chart).spec = spec
            elif tab == "stacks":
                self._stacks(s, end)
            elif tab == "events":
                self._events(s, end, t0)
        except NoMatches:
            # A feed update that arrives while the screen is being taken down (the App
            # quitting): its widgets are gone and there is nothing left to draw.
            return

    def _header(self, s: RunState, run: int) -> None:
        info = s.runs.get(run)
        parts = []
        if info is not None:
            parts.append(f"[b]{escape(info.name)}[/b] on {escape(info.host)}")
            place = views.run_place(s, run)
            if place is not None:
                parts.append(f"in {escape(place)}")
            if info.end_us is not None:
                code = "" if info.exit_code is None else f" (exit {info.exit_code})"
                parts.append(f"finished{code}")
                if info.cause is not None:
                    parts.append(f"[#ff5f5f]{escape(info.cause)}[/]")
            if info.dropped:
                parts.append(f"[#ffd75f]{info.dropped} records dropped by the producer[/]")
        else:
            parts.append("[b]no run yet[/b]")
        if info is None or self.feed.label not in (info.host, f"{info.host}.local"):
            parts.append(escape(self.feed.label))  # where it comes from, unless just the host
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
        if s.stream.gaps:
            parts.append(f"[#ff5f5f]{len(s.stream.gaps)} gap(s) or damaged span(s)[/]")
        if s.stream.trimmed_us is not None and rng:
            parts.append(
                f"[dim]history before {fmt_offset(s.stream.trimmed_us - rng[0])} let go[/]"
            )
        self.query_one("#run-header", Static).update(" · ".join(parts))

    def _overview(self, s: RunState, run: int, end: int | None, t0: int, t1: int) -> None:
        for name, spec in views.overview_specs(s, run, end, t0, t1).items():
            self.query_one(f"#chart-{name}", Chart).spec = spec

    def _metrics_tab(self, s: RunState, run: int, end: int | None) -> None:
        box = self.query_one("#metric-list", VerticalScroll)
        for key in s.metric_keys(run):
            chart = self._metric_charts.get(key)
            if chart is None:
                chart = self._metric_charts[key] = Chart(classes="metric-chart")
                box.mount(chart)
            chart.spec = views.metric_spec(s, run, key, end)

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
            (name, f"{self_n * pct:.1f}%", f"{total_n * pct:.1f}%")
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
        rows = [
            EventRow(e.t_us, e.kind, e.severity, e.message, event_traceback(e) or "")
            for e in s.events_until(end)
        ]
        for g in s.stream.gaps.view():
            if end is None or g.t_us <= end:
                rows.append(EventRow(g.t_us, "gap", 2, g.reason))
        for sp in s.spans(end):
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
        self.query_one("#events-list", EventsView).show(tuple(rows), t0)

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

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "events":  # the keys (up, down, Enter) work on the list at once
            self.query_one("#events-list", EventsView).focus()

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
