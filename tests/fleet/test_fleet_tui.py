"""The fleet screen (``edgescope tui --mqtt``): real publishers (the collector's MqttPublisher
over real segment stores) on a real Mosquitto; sort, filter, Enter opens a device's dashboard
fed from the broker, marked devices compare live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from broker import Broker, available

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.slow,
]
pytest.importorskip("aiomqtt", reason="aiomqtt is not installed (pip install '.[mqtt]')")

from edgescope_collector.mqtt import MqttPublisher, MqttSettings  # noqa: E402
from edgescope_collector.store import SegmentStore  # noqa: E402
from edgescope_tracing import Metrics, RunStart  # noqa: E402
from edgescope_tracing.fleet import parse_broker_url  # noqa: E402
from edgescope_tui.app import EdgescopeApp  # noqa: E402
from edgescope_tui.screens.compare import CompareScreen  # noqa: E402
from edgescope_tui.screens.dashboard import DashboardScreen  # noqa: E402
from edgescope_tui.screens.fleet import FleetScreen  # noqa: E402
from edgescope_tui.sources import mqtt as tui_mqtt  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from textual.widgets import DataTable  # noqa: E402


class Device:
    """A device's store and the real publisher over it, in this event loop."""

    def __init__(self, tmp: Path, url: str, name: str, loss: float) -> None:
        self.store = SegmentStore(tmp / name, max_disk=4 << 20)
        self.store.open()
        self.loss = loss
        self.step = 0
        settings = MqttSettings(parse_broker_url(url), name, keepalive=5)
        self.publisher = MqttPublisher(settings, self.store, tmp / name, first_seq=0)
        self.stop = asyncio.Event()
        now = time.time_ns() // 1000
        self.store.append(RunStart(0, f"run-{name}", f"train-{name}", name, 1, t_us=now))
        self.log()
        self.task = asyncio.ensure_future(self.publisher.run(self.stop))

    def log(self) -> None:
        now = time.time_ns() // 1000
        steps = tuple(range(self.step, self.step + 10))
        self.step += 10
        self.store.append(Metrics(0, "loss", steps, tuple(now + s for s in steps),
                                  tuple(self.loss for _ in steps)))  # fmt: skip
        self.store.flush()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)
        self.store.close()


async def until(pilot: Pilot[None], cond: Callable[[], object], what: str, t: float = 15) -> None:
    deadline = time.monotonic() + t
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def rows(app: EdgescopeApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


@pytest.mark.asyncio
async def test_fleet_screen_sorts_filters_opens_and_compares(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    try:
        devices = [
            Device(tmp_path, broker.url, "pi-b", 0.5),
            Device(tmp_path, broker.url, "pi-a", 2.0),
        ]
        settings = tui_mqtt.MqttSettings(broker.url)
        app = EdgescopeApp(home=lambda: FleetScreen(settings))
        async with app.run_test(size=(160, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, FleetScreen)
            await until(pilot, lambda: rows(app) == ["pi-a", "pi-b"], "both devices, by name")
            summaries = lambda: all(  # noqa: E731
                d.summary.get("loss") is not None for d in screen.model.devices.values()
            )
            await until(pilot, summaries, "summaries")
            assert "2/2 online" in screen.title_text() and "newest summary" in screen.title_text()
            for _ in range(4):  # device -> state -> run -> step -> loss
                await pilot.press("o")
            assert screen.sort == "loss"
            await until(pilot, lambda: rows(app) == ["pi-b", "pi-a"], "sorted by loss")
            await pilot.press("O")
            await until(pilot, lambda: rows(app) == ["pi-a", "pi-b"], "reversed")
            await pilot.press("slash", *"pi-b", "enter")
            await until(pilot, lambda: rows(app) == ["pi-b"], "filtered")
            await pilot.press("slash", "ctrl+u", "enter")
            await until(pilot, lambda: len(rows(app)) == 2, "filter cleared")

            await pilot.press("enter")  # the first row: pi-a's live dashboard from the broker
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
            feed = app.feeds[0]
            assert "pi-a" in feed.label
            for d in devices:
                d.log()  # records logged now reach the dashboard through the broker
            await until(pilot, lambda: "loss" in feed.state.metric_keys(), "pi-a's loss", t=20)
            named = lambda: any(r.name == "train-pi-a" for r in feed.state.runs.values())  # noqa: E731
            await until(pilot, named, "the run, from the retained runs message")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, FleetScreen), "back to the fleet")
            await pilot.press("space", "down", "space", "c")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen), "compare")
            labels = sorted(f.label.split()[0] for f in app.screen.feeds)  # type: ignore[attr-defined]
            assert labels == ["pi-a", "pi-b"]
            for d in devices:
                d.log()
            pib = next(f for f in app.feeds if f.label.startswith("pi-b"))
            await until(pilot, lambda: "loss" in pib.state.metric_keys(), "pi-b live", t=20)
        for d in devices:
            await d.close()
    finally:
        broker.stop()
