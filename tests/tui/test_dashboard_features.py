"""Pilot tests of the dashboard's process table, Run tab, filters, zoom, smoothing, alerts,
events list and save dialog, on a minute of a run sampled from the recorded Pi tree
(``device_trace``) and on the real H200 run."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from device_trace import T0, write_device_trace
from edgescope_tracing import Keyframe, Metrics, RunStart, TraceReader
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.chartspec import x_extent
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.screens.save import SaveScreen
from edgescope_tui.sources import FileSource
from edgescope_tui.widgets.chart import Chart
from edgescope_tui.widgets.events import EventsView
from edgescope_tui.widgets.filter import FilterBar
from edgescope_tui.widgets.processes import ProcessTable
from sshd import Sshd
from sshd.fixtures import sshd_fixture  # noqa: F401 (registers the fixture)
from textual.pilot import Pilot
from textual.widgets import Input, Static, TabbedContent

pytestmark = pytest.mark.asyncio
SIZE = (80, 24)


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pi")
    return write_device_trace(d / "pi.est", d)


async def opened(pilot: Pilot[None]) -> DashboardScreen:
    app = pilot.app
    assert isinstance(app, EdgescopeApp)
    app.animation_level = "none"
    for _ in range(400):
        if app.feeds and all(f.complete for f in app.feeds):
            break
        await pilot.pause(0.01)
    await pilot.pause()
    assert isinstance(app.screen, DashboardScreen)
    return app.screen


async def test_processes_tab_and_run_tab(pi: Path) -> None:
    async with EdgescopeApp([FileSource(pi)]).run_test(size=SIZE) as pilot:
        d = await opened(pilot)
        # a file's warnings are history: no toast, no unread count
        assert not pilot.app._notifications
        assert d.query_one("#tabs", TabbedContent).get_tab("events").label_text == "Events"
        await pilot.press("6")
        await pilot.pause()
        table = d.query_one("#proc-table", ProcessTable)
        assert table.has_focus  # its keys work at once
        rows = table.rows_shown
        assert [(r.pid, r.state) for r in rows] == [(1234, "sleeping"), (1240, "exited")]
        assert rows[0].command == "python3 train.py --epochs 003" and rows[0].cpu == 95.0
        title = str(d.query_one("#proc-title", Static).render())
        assert "1 running, 1 exited" in title and "cpu ↓" in title
        await pilot.press("o")  # sort by the next column: RSS
        await pilot.pause()
        assert table.sort_by == "rss" and "rss ↓" in str(d.query_one("#proc-title").render())
        await pilot.press("O")
        assert not table.descending
        await pilot.press("t")
        await pilot.pause()
        assert [(r.pid, r.prefix) for r in table.rows_shown] == [(1234, ""), (1240, "└─ ")]
        await pilot.press("slash", *"worker")
        await pilot.pause()
        bar = d.query_one("#proc-filter", FilterBar)
        assert bar.has_focus and bar.value == "worker"
        assert [r.pid for r in table.rows_shown] == [1234, 1240]  # the tree keeps its parent
        await pilot.press("t")  # typed into the filter, not a key for the table
        await pilot.pause()
        assert bar.value == "workert" and table.rows_shown == ()
        await pilot.press("backspace", "enter")
        await pilot.pause()
        assert table.has_focus and bar.value == "worker"  # Enter keeps the filter
        await pilot.press("t")
        await pilot.pause()
        assert [r.pid for r in table.rows_shown] == [1240]
        # at a time before the child exited it is running and busy
        d.go_to(T0 + 20 * 1_000_000)
        await pilot.pause()
        assert [(r.pid, r.state, r.cpu) for r in table.rows_shown] == [(1240, "sleeping", 30.0)]
        await pilot.click("#proc-table", offset=(12, 0))  # the CPU % heading (column 2)
        await pilot.pause()
        assert table.sort_by == "cpu"
        # the Run tab: what the trace holds that no chart shows
        await pilot.press("7")
        await pilot.pause()
        text = str(d.query_one("#run-facts", Static).render())
        for want in (
            "pi-train",
            "exit code 0",
            "optim.lr",  # a nested config, flattened
            "val_acc",
            "4 values",
            "cgroup peak",
            "1 error, 1 warning, 2 info",
            "Raspberry Pi 4 Model B",  # the board, read by the SDK from the recorded tree
        ):
            assert want in text, want


async def test_metrics_filter_smoothing_and_threshold_colours(pi: Path) -> None:
    async with EdgescopeApp([FileSource(pi)]).run_test(size=SIZE) as pilot:
        d = await opened(pilot)
        await pilot.press("2")
        await pilot.pause()

        def shown() -> list[str]:
            return [
                c.spec.title
                for c in d.query(Chart)
                if c.display and c.has_class("metric-chart") and c.spec
            ]

        assert shown() == ["loss", "val_acc"]
        await pilot.press("slash", *"ACC")  # any case
        await pilot.pause()
        assert shown() == ["val_acc"]
        await pilot.press("left", "left", "home", *"val", "space", "end", "right")
        await pilot.pause()  # the text's keys while typing, not the replay's
        assert d.query_one("#metric-filter", FilterBar).value == "val ACC" and not d.playing
        assert shown() == ["val_acc"]
        await pilot.press("escape")  # clears it; Escape does not leave the dashboard here
        await pilot.pause()
        assert pilot.app.screen is d and shown() == ["loss", "val_acc"]
        await pilot.press("1", "slash")
        await pilot.pause()
        assert not d.query_one("#metric-filter", FilterBar).has_focus  # says where it works
        # e cycles the smoothing of step charts
        loss = d.query_one("#chart-loss", Chart)
        seen = []
        for _ in range(4):
            await pilot.press("e")
            await pilot.pause()
            assert loss.spec is not None
            seen.append((d.smoothing, loss.spec.title, len(loss.spec.lines)))
        assert seen == [
            (0.6, "loss (EMA 0.6)", 2),  # the raw values stay, faint, under the smoothed
            (0.9, "loss (EMA 0.9)", 2),
            (0.99, "loss (EMA 0.99)", 2),
            (0.0, "loss", 1),
        ]
        memory = d.query_one("#chart-memory", Chart).spec
        assert memory is not None and len(memory.lines) == 2  # RSS and cgroup: by time, raw
        # values coloured against the thresholds the detectors use
        thermal = d.query_one("#chart-thermal", Chart).spec
        assert memory is not None and thermal is not None
        # 2.82 of 3 GiB: 94 %, past the OOM share (90 %), short of the 95 % limit signal
        assert memory.alerts == (("cgroup at 94% of its limit", "#ffd75f"),)
        # 83 °C: within the 5 °C hysteresis of the 85 °C trip, where trip_point is named
        assert thermal.alerts == (("cpu-thermal 83.0°C of 85°C trip", "#ffd75f"),)
        d.go_to(T0 + 5_000_000)
        await pilot.pause()
        early = d.query_one("#chart-thermal", Chart).spec
        assert early is not None and early.alerts[0][1] == "#87d787"


async def test_zoom_and_the_events_list(pi: Path) -> None:
    async with EdgescopeApp([FileSource(pi)]).run_test(size=(120, 36)) as pilot:
        d = await opened(pilot)
        loss = d.query_one("#chart-loss", Chart)
        assert loss.spec is not None
        full = x_extent(loss.spec)
        assert full == (0, 599)
        await pilot.press("z")
        await pilot.pause()
        assert d.zoom == (0.5, 1.0)  # at the end: the newest half stays in view
        assert loss.spec is not None and x_extent(loss.spec) == (299.5, 599)
        assert "zoom 2x" in loss.spec.subtitle
        memory = d.query_one("#chart-memory", Chart).spec
        assert memory is not None and memory.by_time and memory.x0 == T0 + 30_000_000
        await pilot.press("Z")
        await pilot.pause()
        assert d.zoom is None and loss.spec is not None and x_extent(loss.spec) == full
        # a drag across the plot zooms into what it spanned, and is not a click
        cursor = d.cursor
        await pilot.mouse_down(loss, offset=(12, 5))
        await pilot.mouse_up(loss, offset=(31, 5))
        await pilot.pause()
        assert d.zoom is not None and 0.0 < d.zoom[0] < d.zoom[1] < 1.0
        assert d.cursor == cursor
        # the Events tab lists every event; one click jumps, the list marks where
        await pilot.press("5")
        await pilot.pause()
        events = d.query_one("#events-list", EventsView)
        kinds = [r.kind for r in events.rows_shown]
        assert kinds == ["log", "mark", "anomaly", "anomaly"]
        assert events.current == 3  # at the end: the last is the one at the cursor
        await pilot.click(EventsView, offset=(3, 2))  # the mark's row: one click jumps
        await pilot.pause()
        assert d.cursor == T0 + 10_000_000
        assert [r.kind for r in events.rows_shown] == kinds  # all still listed
        assert events.current == 1 and events.cursor_row == 1
        await pilot.press("n")  # the next event: the list follows
        await pilot.pause()
        assert d.cursor == T0 + 30_000_000 and events.current == 2


async def save_as(pilot: Pilot[None], keys: tuple[str, ...], path: str | None) -> SaveScreen:
    """w, then the format (``keys`` from the first), the window, and ``path`` (None: the
    name the dialog offers, which is returned on the screen for a look)."""
    await pilot.press("w")
    await pilot.pause()
    dialog = pilot.app.screen
    assert isinstance(dialog, SaveScreen)
    dialog.query_one("#save-format").focus()
    await pilot.press(*keys, "enter")
    dialog.query_one("#save-extent").focus()
    await pilot.press("down", "enter")  # the window: up to the cursor
    await pilot.pause()
    field = dialog.query_one("#save-path", Input)
    assert field.value == f"pi-train-run0-window.{dialog.fmt}"  # follows the choices
    field.value = path or field.value
    field.focus()
    await pilot.press("enter")
    return dialog


async def notified(pilot: Pilot[None], title: str) -> list[str]:
    for _ in range(200):
        said = [n.message for n in pilot.app._notifications if n.title == title]
        if said:
            return said
        await pilot.pause(0.02)
    raise AssertionError(f"no {title!r} notification")


async def test_w_saves_the_window_as_a_trace_or_csv_and_overwrites_nothing(
    pi: Path, tmp_path: Path
) -> None:
    async with EdgescopeApp([FileSource(pi)]).run_test(size=SIZE) as pilot:
        d = await opened(pilot)
        d.go_to(T0 + 30_000_000)
        await pilot.pause()
        est = tmp_path / "pi-train-run0-window.est"
        await save_as(pilot, (), str(est))
        await notified(pilot, "Saved")
        with TraceReader(est) as r:
            recs = [rec for rec in r if not isinstance(rec, Keyframe)]  # the writer's own
        assert isinstance(recs[0], RunStart) and recs[0].name == "pi-train"
        steps = [s for m in recs if isinstance(m, Metrics) and m.key == "loss" for s in m.steps]
        assert steps == list(range(301))  # the window ends at the cursor, at step 300
        pilot.app.clear_notifications()
        dialog = await save_as(pilot, ("down",), str(tmp_path / "w.csv"))
        await notified(pilot, "Saved")
        with (tmp_path / "w.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert {r["series"] for r in rows} >= {"metric", "process", "thermal", "event"}
        assert max(int(r["t_us"]) for r in rows) <= T0 + 30_000_000
        before = est.read_bytes()
        await save_as(pilot, (), str(est))  # again: refused, nothing is overwritten
        (said,) = await notified(pilot, "Not saved")
        assert "exists" in said and est.read_bytes() == before
        assert dialog.fmt == "csv"


async def until(pilot: Pilot[None], cond: Callable[[], bool]) -> None:
    for _ in range(400):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out")


def toasts(app: EdgescopeApp) -> list[Any]:
    return list(app._notifications)


def is_live(d: DashboardScreen) -> bool:
    st = d.feed.state.stream.status
    return st is not None and st.state == "live" and 0 in d.feed.state.runs


async def test_a_live_warning_toasts_and_counts_unread_on_the_events_tab(
    tmp_path: Path, sshd: Sshd
) -> None:
    """A real collector; a warning that comes while the dashboard is live is a toast and an
    unread count on the Events tab's title, cleared when the tab is shown; w saves what the
    collector holds. Opened again through a real sshd, the same warning is history (the
    collector's store, read on connecting): no alert; w saves through SSH too."""
    import json
    import socket

    from edgescope_tracing import Event, StreamEncoder
    from edgescope_tui.discovery import SshTarget, TcpTarget
    from edgescope_tui.sources.live import live_source
    from edgescope_tui.ssh import SshSettings
    from sshd.collector import Collector

    c = Collector(tmp_path / "collector", interval=0.2).start()
    producer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        producer.connect(str(c.ingest))
        enc = StreamEncoder()
        enc.add(RunStart(0, "a1e47", "live", "pi5", 77, t_us=T0))
        producer.sendall(enc.take())
        app = EdgescopeApp([live_source(TcpTarget("127.0.0.1", c.port))])
        async with app.run_test(size=SIZE) as pilot:
            d = app.screen
            assert isinstance(d, DashboardScreen)
            tab = d.query_one("#tabs", TabbedContent).get_tab("events")
            await until(pilot, lambda: is_live(d))
            enc.add(Event("anomaly", "step time up 40%", run=0, severity=1, t_us=T0 + 2))
            enc.add(Event("mark", "checkpoint", run=0, severity=0, t_us=T0 + 3))
            producer.sendall(enc.take())
            # (the collector may raise warnings of its own, so those are not counted here)
            await until(pilot, lambda: any(n.message == "step time up 40%" for n in toasts(app)))
            (toast,) = [n for n in toasts(app) if n.message == "step time up 40%"]
            assert toast.severity == "warning" and toast.title == "anomaly: warning"
            assert tab.label_text.startswith("Events (")
            await pilot.press("5")
            await pilot.pause()
            assert tab.label_text == "Events"
            # w saves it: the collector is asked for what it holds, on a connection of its own
            await pilot.press("w")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, SaveScreen)
            field = dialog.query_one("#save-path", Input)
            field.value = str(tmp_path / "live.est")
            field.focus()
            await pilot.press("enter")
            (said,) = await notified(pilot, "Saved")
            assert "live.est" in said and is_live(d)  # the dashboard's own stream goes on
            with TraceReader(tmp_path / "live.est") as r:
                saved = list(r)
            assert [x.name for x in saved if isinstance(x, RunStart)] == ["live"]
            assert "step time up 40%" in [e.message for e in saved if isinstance(e, Event)]
        (tmp_path / "ssh_config").touch()
        settings = SshSettings(
            known_hosts=str(sshd.known_hosts),
            identities=(str(sshd.user_key),),
            agent=False,
            config=str(tmp_path / "ssh_config"),
        )
        target = SshTarget("127.0.0.1", "root", sshd.port, collector_port=c.port)
        again = EdgescopeApp([live_source(target, ssh_settings=settings)])
        async with again.run_test(size=SIZE) as pilot:
            d = again.screen
            assert isinstance(d, DashboardScreen)
            tab = d.query_one("#tabs", TabbedContent).get_tab("events")
            await until(
                pilot,
                lambda: (
                    is_live(d)
                    and any(e.message == "step time up 40%" for e in d.feed.state.events.view())
                ),
            )
            await pilot.pause(0.3)
            assert not any(n.message == "step time up 40%" for n in toasts(again))
            await pilot.press("w")
            await pilot.pause()
            dialog = again.screen
            assert isinstance(dialog, SaveScreen)
            dialog.query_one("#save-format").focus()
            await pilot.press("down", "down", "enter")  # JSON lines
            field = dialog.query_one("#save-path", Input)
            field.value = str(tmp_path / "ssh.jsonl")
            field.focus()
            await pilot.press("enter")
            await notified(pilot, "Saved")
            lines = [json.loads(x) for x in (tmp_path / "ssh.jsonl").read_text().splitlines()]
            assert {"series": "event", "text": "step time up 40%"}.items() <= next(
                x for x in lines if x.get("text") == "step time up 40%"
            ).items()
    finally:
        producer.close()
        c.stop()


async def test_help_lists_the_keys_of_the_list_in_focus(pi: Path) -> None:
    from edgescope_tui.screens.help import HelpScreen

    async with EdgescopeApp([FileSource(pi)]).run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("6", "question_mark")
        await pilot.pause()
        help_screen = pilot.app.screen
        assert isinstance(help_screen, HelpScreen)
        rows = dict(help_screen.rows)
        assert rows["o"] == "Sort by next column" and rows["t"] == "Tree / flat"
        for keys in ("6", "7", "/", "z", "Z", "e", "w"):
            assert keys in rows, keys
        assert rows["g"] == "Go to"  # the screen's own, apart from any widget's


async def test_the_gpu_memory_column_is_there_when_a_process_has_a_figure() -> None:
    from edgescope_tui.processes import ProcRow
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield ProcessTable(id="t")

    def row(pid: int, gpu: float | None) -> ProcRow:
        return ProcRow(pid, 1, "python3 train.py", 90.0, 1e9, 2e9, gpu, 8, "running", True)

    async with One().run_test(size=SIZE) as pilot:
        table = pilot.app.query_one(ProcessTable)
        table.show([row(1, None)])
        headings = [str(c.label) for c in table.ordered_columns]
        assert "GPU mem" not in headings and headings[-1] == "command"
        table.show([row(1, None), row(2, float(3 << 30))])
        await pilot.pause()
        headings = [str(c.label) for c in table.ordered_columns]
        assert headings[4] == "GPU mem" and table.get_row_at(1)[4].plain == "3 GiB"
