"""Pilot tests: every screen and binding of the run dashboard, replay, compare and sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgescope_tracing import (
    Event,
    Metrics,
    RunStart,
    StackFrame,
    StackSamples,
    TraceWriter,
)
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.compare import CompareScreen
from edgescope_tui.screens.dashboard import SPEEDS, DashboardScreen, parse_jump
from edgescope_tui.screens.jump import JumpScreen
from edgescope_tui.screens.sources import SourcesScreen
from edgescope_tui.sources import FileSource
from edgescope_tui.widgets.chart import Chart, fmt_bytes, x_extent
from edgescope_tui.widgets.events import EventsView
from edgescope_tui.widgets.icicle import Icicle
from h200_trace import write_h200_trace
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

SIZE = (120, 36)


@pytest.fixture(scope="module")
def h200(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h200_trace(tmp_path_factory.mktemp("app") / "h200.trace", steps=2000)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs in one stream, with stack samples: what a collector's trace holds."""
    p = tmp_path_factory.mktemp("app") / "two.trace"
    main, step, fwd, bwd = (
        StackFrame(n, "train.py", i) for i, n in enumerate(("main", "step", "forward", "backward"))
    )
    with TraceWriter(p, fsync="never") as w:
        w.append(RunStart(0, "aa", "baseline", "pi4", 10, t_us=1_000_000))
        w.append(RunStart(1, "bb", "bigger-lr", "pi4", 11, t_us=1_000_000))
        for k in range(20):
            t = 1_000_000 + k * 500_000
            for run, scale in ((0, 1.0), (1, 1.5)):
                w.append(Metrics(run, "loss", (k,), (t,), (scale * 2.0 / (k + 1),), t_us=t))
                w.append(Metrics(run, "acc", (k,), (t,), (k / 20,), t_us=t))
            w.append(
                StackSamples(
                    0,
                    "python",
                    10_000,
                    (((main, step, fwd), 7), ((main, step, bwd), 3 + k % 3)),
                    t_us=t,
                )
            )
    return p


async def loaded(pilot: Pilot[None]) -> EdgescopeApp:
    app = pilot.app
    assert isinstance(app, EdgescopeApp)
    app.animation_level = "none"
    for _ in range(400):
        if all(f.complete for f in app.feeds):
            break
        await pilot.pause(0.01)
    await pilot.pause()
    return app


def dashboard(app: EdgescopeApp) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen


@pytest.mark.asyncio
async def test_dashboard_shows_the_run_with_loss_first(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        header = str(d.query_one("#run-header").render())
        assert "h200-mlp on h200" in header and "ended" in header
        assert header.count("h200") == 2 + header.count("h200.trace")  # run name, host, file
        loss = d.query_one("#chart-loss", Chart).spec
        assert loss is not None and loss.title == "loss" and loss.log
        step = d.query_one("#chart-step", Chart).spec
        assert step is not None and "steps/s" in step.subtitle and "samples/s" in step.subtitle
        memory = d.query_one("#chart-memory", Chart).spec
        peak = d.feed.state.metrics[(0, "cuda_max_alloc")].hi
        assert peak > 20 * 2**30  # the 20 GB tensor of step 600
        assert memory is not None and f"CUDA peak {fmt_bytes(peak)}" in memory.subtitle
        thermal = d.query_one("#chart-thermal", Chart).spec
        assert thermal is not None and "not throttled" in thermal.subtitle
        assert d.cursor is None


@pytest.mark.asyncio
async def test_play_pause_speed_and_nudges(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        rng = d.feed.time_range()
        assert rng is not None
        await pilot.press("home")
        assert d.cursor == rng[0]
        await pilot.press("right")
        assert d.cursor == rng[0] + 1_000_000
        await pilot.press("shift+right")
        assert d.cursor == rng[0] + 11_000_000
        await pilot.press("shift+left", "left")
        assert d.cursor == rng[0]
        await pilot.press("left")
        assert d.cursor == rng[0]  # not before the start
        for _ in range(10):
            await pilot.press("plus")
        assert d.speed == SPEEDS[-1]
        for _ in range(10):
            await pilot.press("minus")
        assert d.speed == SPEEDS[0]
        await pilot.press("plus", "plus", "plus", "plus")  # 4x
        assert d.speed == 4.0
        await pilot.press("space")
        assert d.playing
        await pilot.pause(0.3)
        assert d.cursor is not None and d.cursor > rng[0]
        await pilot.press("space")
        assert not d.playing
        at = d.cursor
        await pilot.pause(0.15)
        assert d.cursor == at
        await pilot.press("end")
        assert d.cursor is None


@pytest.mark.asyncio
async def test_play_runs_to_the_end_and_stops(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        rng = d.feed.time_range()
        assert rng is not None
        d.cursor = rng[1] - 500_000
        d.speed = 64.0
        await pilot.press("space")
        await pilot.pause(0.3)
        assert not d.playing and d.cursor == rng[1]
        d.speed = 1.0
        await pilot.press("space")  # at the end, play starts over
        assert d.playing and d.cursor is not None and d.cursor < rng[0] + 5_000_000


@pytest.mark.asyncio
async def test_step_keys_and_event_keys(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        loss = d.feed.state.metrics[(0, "loss")]
        await pilot.press("comma")
        assert d.cursor == int(loss.t[loss.n - 2])
        await pilot.press("full_stop")
        assert d.cursor == int(loss.t[loss.n - 1])
        await pilot.press("p")
        mark = d.feed.state.events[0]
        assert d.cursor == mark.t_us
        await pilot.press("p")
        assert d.cursor == mark.t_us  # nothing earlier
        await pilot.press("home", "n")
        assert d.cursor == mark.t_us
        # The step shown on the timeline is the one of the mark.
        bar = d.query_one("#replay").spec  # type: ignore[attr-defined]
        assert bar.step == 600


@pytest.mark.asyncio
async def test_go_to_a_step_a_time_and_a_wrong_answer(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        rng = d.feed.time_range()
        assert rng is not None
        await pilot.press("g")
        assert isinstance(app.screen, JumpScreen)
        await pilot.press(*"s600", "enter")
        await pilot.pause()
        loss = d.feed.state.metrics[(0, "loss")]
        assert d.cursor == int(loss.t[loss.index_of_x(600)])
        await pilot.press("g", *"1:02", "enter")
        await pilot.pause()
        assert d.cursor == rng[1]  # past the end: clamped
        await pilot.press("g", *"5.5", "enter")
        await pilot.pause()
        assert d.cursor == rng[0] + 5_500_000
        await pilot.press("g", *"soon", "enter")
        await pilot.pause()
        assert d.cursor == rng[0] + 5_500_000
        assert any("is not a time" in n.message for n in app._notifications)
        await pilot.press("g", "escape")
        assert app.screen is d


def test_parse_jump() -> None:
    assert parse_jump("s600", 0) == ("step", 600)
    assert parse_jump("step 7", 0) == ("step", 7)
    assert parse_jump("#3", 0) == ("step", 3)
    assert parse_jump("12.5", 100) == ("time", 100 + 12_500_000)
    assert parse_jump("1:02.5s", 0) == ("time", 62_500_000)
    assert parse_jump("1:00:00", 0) == ("time", 3_600_000_000)
    assert parse_jump("later", 0) is None


@pytest.mark.asyncio
async def test_tabs_by_number_and_events_jump(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        tabs = d.query_one("#tabs", TabbedContent)
        for key, tab in zip(
            "23451", ("metrics", "system", "stacks", "events", "overview"), strict=True
        ):
            await pilot.press(key)
            assert tabs.active == tab
        await pilot.press("2")
        await pilot.pause()
        assert len(d.query(".metric-chart")) == 4
        await pilot.press("5")
        await pilot.pause()
        events = d.query_one("#events-list", EventsView)
        assert [r.message for r in events.rows_shown] == ["20 GB tensor allocated and freed"]
        assert events.has_focus  # 5 focuses the list: Enter goes to the event, no Tab first
        await pilot.press("enter")
        assert d.cursor == events.rows_shown[0].t_us


@pytest.mark.asyncio
async def test_the_run_shown_first_is_the_first_that_logged(tmp_path: Path) -> None:
    """``record`` of an SDK script: its wrapper run (the command, no metrics) comes first; the
    dashboard opens on the script's own run."""
    path = tmp_path / "recorded.est"
    t0 = 1_700_000_000_000_000
    with TraceWriter(path, fsync="never") as w:
        w.append(RunStart(0, "aa" * 8, "python train.py", "pi", 10, tags=("record",), t_us=t0))
        w.append(RunStart(1, "bb" * 8, "train", "pi", 10, t_us=t0 + 1))
        w.append(Metrics(1, "loss", (0, 1), (t0 + 2, t0 + 3), (1.0, 0.5), t_us=t0 + 3))
    async with EdgescopeApp([FileSource(path)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        header = str(d.query_one("#run-header").render())
        assert "train on pi" in header and "python train.py" not in header


@pytest.mark.asyncio
async def test_stacks_window_keys_and_next_run(two_runs: Path) -> None:
    async with EdgescopeApp([FileSource(two_runs)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        await pilot.press("4")
        await pilot.pause()
        table = d.query_one("#top-functions", DataTable)
        assert table.row_count == 4
        assert str(table.get_row_at(0)[0]) == "forward"
        icicle = d.query_one("#icicle", Icicle).stack
        assert icicle is not None and icicle.children[0].name == "main"
        before = icicle.count
        await pilot.press("left_square_bracket")
        assert d.stack_window_us == 5_000_000
        narrow = d.query_one("#icicle", Icicle).stack
        assert narrow is not None and narrow.count < before
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert d.stack_window_us == 20_000_000
        title = str(d.query_one("#stack-title", Static).render())
        assert "[ and ] change the window" in title  # the keys, not eaten as markup
        header = str(d.query_one("#run-header").render())
        assert "baseline" in header and "run 1/2" in header
        await pilot.press("r")
        assert d.run == 1
        assert "bigger-lr" in str(d.query_one("#run-header").render())
        await pilot.press("r")
        assert d.run == 0


@pytest.mark.asyncio
async def test_compare_screen_keys(h200: Path, two_runs: Path) -> None:
    async with EdgescopeApp([FileSource(h200), FileSource(two_runs)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        chart = screen.query_one("#compare-chart", Chart)
        assert chart.spec is not None
        assert [ln.label for ln in chart.spec.lines] == [
            "h200.trace:h200-mlp",
            "two.trace:baseline",
            "two.trace:bigger-lr",
        ]
        assert screen.current() == "loss"
        await pilot.press("m")
        assert screen.current() == "step_ns"
        await pilot.press("M", "M")
        assert screen.current() == "acc"
        log = chart.spec.log
        await pilot.press("o")
        assert chart.spec.log is not log
        await pilot.press("t")
        assert chart.spec.by_time
        # Every line starts at its run's start: the x axis is time since then.
        x0, x1 = x_extent(chart.spec) or (0.0, 0.0)
        assert x0 == 0 and x1 < 60e6
        await pilot.press("t")
        assert not chart.spec.by_time
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)


@pytest.mark.asyncio
async def test_sources_screen_and_no_source(h200: Path) -> None:
    async with EdgescopeApp().run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        assert isinstance(app.screen, SourcesScreen)
        table = app.screen.query_one(DataTable)
        assert table.get_row_at(0)[0] == "no source open"
        await pilot.press("c")
        assert isinstance(app.screen, SourcesScreen)
        feed = app.open_source(FileSource(h200), show=False)
        await loaded(pilot)
        app.screen.refresh_view()  # type: ignore[attr-defined]
        assert [str(c) for c in table.get_row_at(0)[:3]] == ["h200.trace", "h200-mlp", "ended"]
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen) and app.screen.feed is feed
        await pilot.press("s")
        assert isinstance(app.screen, SourcesScreen)


@pytest.mark.asyncio
async def test_help_lists_the_keys_of_the_screen_under_it(h200: Path) -> None:
    from edgescope_tui.screens.help import HelpScreen

    async with EdgescopeApp([FileSource(h200)]).run_test(size=(80, 24)) as pilot:
        app = await loaded(pilot)
        board = app.screen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.under is board
        rows = app.screen.rows
        for row in (("g", "Go to"), ("Esc / Backspace", "Back"), ("? / F1", "Help")):
            assert row in rows, rows
        assert ("5", "Events") in rows  # keys the footer does not show are listed too
        assert ("End / l", "End/live") in rows  # two keys of one action: one row
        await pilot.press("escape")
        assert app.screen is board
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert app.screen is board
    async with EdgescopeApp().run_test(size=(80, 24)) as pilot:
        app = await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert ("Enter", "Open") in app.screen.rows
        assert all(what != "Back" for _, what in app.screen.rows)  # nowhere back from here


@pytest.mark.asyncio
async def test_escape_and_backspace_leave_every_screen(h200: Path) -> None:
    """No screen is a dead end: Escape or Backspace goes back where a screen was opened from,
    and a dashboard the App started on goes to the sources list, where Enter opens it again."""
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        feed = dashboard(app).feed
        await pilot.press("escape")
        assert isinstance(app.screen, SourcesScreen)
        await pilot.press("escape")  # the first screen: stays
        assert isinstance(app.screen, SourcesScreen)
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen) and app.screen.feed is feed
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("backspace")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("s")
        assert isinstance(app.screen, SourcesScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("g")  # a dialog takes Escape for itself
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert app.feeds == [feed]
    async with EdgescopeApp([FileSource(h200), FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, SourcesScreen)


@pytest.mark.asyncio
async def test_mouse_scrubs_the_timeline(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        rng = d.feed.time_range()
        assert rng is not None
        width = d.query_one("#replay").content_size.width
        await pilot.click("#replay", offset=(1 + width // 2, 0))
        assert d.cursor is not None
        assert abs(d.cursor - (rng[0] + rng[1]) // 2) < (rng[1] - rng[0]) / width * 2


@pytest.mark.asyncio
async def test_clicking_a_chart_moves_the_cursor_there(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        rng = d.feed.time_range()
        assert rng is not None
        memory = d.query_one("#chart-memory", Chart)
        plot_w = memory.size.width - 9
        # Padding 1, then 9 cells of labels and axis, then the middle of the plot.
        await pilot.click("#chart-memory", offset=(1 + 9 + plot_w // 2, 5))
        assert d.cursor is not None
        assert abs(d.cursor - (rng[0] + rng[1]) / 2) < (rng[1] - rng[0]) / plot_w * 2
        loss = d.feed.state.metrics[(0, "loss")]
        await pilot.click("#chart-loss", offset=(1 + 9, 5))  # the first column: early steps
        assert d.cursor is not None
        i = loss.count_until(d.cursor) - 1
        assert loss.x[i] < 100 and d.cursor == int(loss.t[i])


@pytest.mark.asyncio
async def test_command_palette_opens_compare(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Compare runs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)


@pytest.mark.asyncio
async def test_damaged_trace_marks_the_damage(h200: Path, tmp_path: Path) -> None:
    data = bytearray(h200.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.trace"
    bad.write_bytes(bytes(data))
    async with EdgescopeApp([FileSource(bad)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        assert "1 gap(s) or damaged span(s)" in str(d.query_one("#run-header").render())
        await pilot.press("5")
        await pilot.pause()
        rows = d.query_one("#events-list", EventsView).rows_shown
        assert any(r.kind == "gap" and "damaged bytes" in r.message for r in rows)
        bar = d.query_one("#replay").spec  # type: ignore[attr-defined]
        assert len(bar.gaps) == 1


@pytest.mark.asyncio
async def test_seeking_past_what_was_loaded_reads_from_a_keyframe(h200: Path) -> None:
    app = EdgescopeApp([FileSource(h200)], max_points=2_000)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        d = dashboard(app)
        assert d.feed.truncated
        rng = d.feed.time_range()
        assert rng is not None
        await pilot.press("end", "g", *"15", "enter")
        for _ in range(200):
            await pilot.pause(0.01)
            if d.feed.window is not None:
                break
        await pilot.pause()
        assert d.shown is d.feed.window
        assert "past what is loaded: read from the keyframe" in str(
            d.query_one("#run-header").render()
        )
        spec = d.query_one("#chart-loss", Chart).spec
        assert spec is not None and spec.lines and spec.lines[0].end


@pytest.mark.asyncio
async def test_names_and_messages_are_shown_as_written_not_as_markup(tmp_path: Path) -> None:
    p = tmp_path / "brackets.trace"
    with TraceWriter(p, fsync="never") as w:
        w.append(RunStart(0, "aa", "exp[1] [b]lr", "host[2]", 1, t_us=1_000_000))
        w.append(Metrics(0, "loss[train]", (0, 1), (1_000_000, 2_000_000), (1.0, 0.5)))
        w.append(Event("log", "[red]not markup[/red] [/]", t_us=2_000_000))
    async with EdgescopeApp([FileSource(p)]).run_test(size=SIZE) as pilot:
        app = await loaded(pilot)
        d = dashboard(app)
        assert "exp[1] [b]lr on host[2]" in str(d.query_one("#run-header").render())
        await pilot.press("5")
        await pilot.pause()
        table = d.query_one("#events-list", EventsView)
        assert str(table.get_row_at(0)[3]) == "[red]not markup[/red] [/]"
        await pilot.press("c")
        await pilot.pause()
        title = str(app.screen.query_one("#compare-title").render())
        assert "compare loss[train]" in title


@pytest.mark.asyncio
async def test_quit(h200: Path) -> None:
    async with EdgescopeApp([FileSource(h200)]).run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not pilot.app.is_running
