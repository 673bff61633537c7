"""The Rounds view (``f``) live: real collectors, the TUI's live sources on them (TCP, and the
fleet through a real Mosquitto), rounds arriving while the view is open.

Two devices, each with its own real collector: ``edge-a`` runs the SuperNodes of partitions 0
and 1 and the ServerApp; ``edge-b`` runs partition 2 and its collector reads a copy of a
recorded sysfs tree (x86-laptop) that heats in round 2 (96 °C, throttle counters up), while that
node's training takes five times as long. The Flower records are what the integration writes
(``flower.message`` from the client Mod, ``flower.round`` from RecordedStrategy; see
``tests/tracing/roundsgen.py``), sent to each collector's ingest socket as a training process
does; the real Flower run with its Mod is ``tests/edgescope/test_flower.py``. Checked: round 1
shows once it arrives, then round 2 joins the same view, with partition 2 as its straggler and
the throttling its own collector sampled as the cause.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Record, RunStart, StreamEncoder
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.discovery import TcpTarget
from edgescope_tui.discovery.probe import ProbeSettings
from edgescope_tui.feed import Feed
from edgescope_tui.screens.devices import DevicesScreen
from edgescope_tui.screens.rounds import RoundsScreen
from sshd.collector import Collector
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "tracing"))
sys.path.insert(0, str(TESTS / "fleet"))
from broker import Broker  # noqa: E402
from broker import available as broker_missing  # noqa: E402
from roundsgen import NODES, message_event, phase_event  # noqa: E402

TREE = TESTS / "collector" / "trees" / "x86-laptop" / "sys"
HOT_ZONES = ("thermal_zone4", "thermal_zone5")  # TCPU and x86_pkg_temp
pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def _now() -> int:
    return time.time_ns() // 1000


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")  # whole or not at all, as sysfs reads are
    tmp.write_text(text)
    os.replace(tmp, path)


class Devices:
    """The two devices' collectors, the heated tree, and a producer per run on an ingest
    socket (kept open, as a training process keeps its connection)."""

    def __init__(self, tmp: Path, extra: Callable[[str], tuple[str, ...]]) -> None:
        self.sysfs = tmp / "sysfs"
        shutil.copytree(TREE, self.sysfs, symlinks=True)
        self.a = Collector(tmp / "edge-a", interval=0.2, extra=extra("edge-a"))
        self.b = Collector(
            tmp / "edge-b",
            interval=0.2,
            extra=(*extra("edge-b"), "--sysfs", str(self.sysfs), "--sample-every", "thermal=0.2"),
        )
        self.conns: dict[str, tuple[socket.socket, StreamEncoder]] = {}

    def start(self) -> Devices:
        self.a.start()
        self.b.start()
        return self

    def stop(self) -> None:
        for s, _ in self.conns.values():
            s.close()
        self.a.stop()
        self.b.stop()

    def send(self, who: str, device: Collector, *records: Record) -> None:
        if who not in self.conns:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(device.ingest))
            enc = StreamEncoder()
            host = device.base.name
            enc.add(RunStart(0, secrets.token_hex(16), who, host, os.getpid(), t_us=_now()))
            self.conns[who] = (s, enc)
        s, enc = self.conns[who]
        for r in records:
            enc.add(r)
        s.sendall(enc.take())

    def heat(self, hot: bool) -> None:
        if hot:  # the counters first: a sample that reads the heat reads them risen
            for c in self.sysfs.glob("devices/system/cpu/cpu*/thermal_throttle/*_throttle_count"):
                _write(c, f"{int(c.read_text()) + 1}\n")
        for zone in HOT_ZONES:
            _write(self.sysfs / "class/thermal" / zone / "temp", "96000\n" if hot else "61000\n")


async def until(pilot: Pilot[None], cond: Callable[[], object], what: str, t: float = 30) -> None:
    deadline = time.monotonic() + t
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def _hot(feed: Feed) -> bool:
    th = feed.state.thermal
    z = th.zones.get("TCPU")
    return z is not None and (z.last or 0) >= 96 and any(v > 0 for v in th.counters.values())


def _complete(screen: RoundsScreen, rnd: int) -> bool:
    """The view holds round ``rnd`` whole: every client's train and the server's phase."""
    if len(screen.reports) != 1 or len(screen.reports[0].rounds) != rnd:
        return False
    row = screen.reports[0].rounds[-1]
    return row.waited_s is not None and all(c.train is not None for c in row.cells.values())


async def _play_rounds(
    pilot: Pilot[None], dev: Devices, screen: RoundsScreen, feed_b: Callable[[], Feed]
) -> None:
    """Round 1 (no straggler), then round 2 with partition 2 heated: both arrive while the
    view is open, and the view shows each as it comes."""
    table = screen.query_one("#rounds-table", DataTable)
    train = {0: 0.20, 1: 0.22, 2: 0.21}
    for rnd in (1, 2):
        sent = _now()
        starts = {p: _now() for p in train}
        if rnd == 2:
            base = dict(feed_b().state.thermal.counters)
            dev.heat(True)
            # the heat reaches partition 2's collector, and its training is five times longer
            heated = lambda b=base: _hot(feed_b()) and feed_b().state.thermal.counters != b  # noqa: E731
            await until(pilot, heated, "edge-b's collector to sample the heat")
            while _now() - starts[2] < 5 * train[2] * 1e6:
                await pilot.pause(0.05)
        ends = {p: starts[p] + round(train[p] * 1e6) for p in train}
        if rnd == 2:
            ends[2] = _now()
            dev.heat(False)
        while _now() < max(ends.values()):  # the messages are over before they are told
            await pilot.pause(0.02)
        replies = []
        for p, node in NODES.items():
            who = f"flower-node{node}-run42"
            event = message_event(node, p, rnd, "train", starts[p], ends[p])
            dev.send(who, dev.b if p == 2 else dev.a, event)
            replies.append({"node": node, "arrived_us": ends[p] + 20_000,
                            "latency_s": (ends[p] + 20_000 - sent) / 1e6,
                            "client_start_us": starts[p], "client_end_us": ends[p]})  # fmt: skip
        dev.send("flower-server-run42", dev.a, phase_event(rnd, "train", sent, replies))
        whole = lambda n=rnd: _complete(screen, n)  # noqa: E731
        await until(pilot, whole, f"all of round {rnd} in the view")
        assert table.row_count == rnd
        head = str(screen.query_one("#rounds-head", Static).render())
        assert "Flower run 42:" in head and "3 clients" in head and "live from" in head
    rows = [[str(v) for v in table.get_row_at(i)] for i in range(table.row_count)]
    assert [r[0] for r in rows] == ["1", "2"]
    assert rows[0][-1] == ""  # round 1: no straggler
    assert rows[1][3].endswith(" *") and rows[1][-1] == "p2"
    (report,) = screen.reports
    r2 = report.rounds[1]
    assert r2.straggler == NODES[2] and r2.cause is not None
    assert r2.cause.startswith("node 303 (partition 2): ")
    assert "throttled at 96.0 °C" in r2.cause, r2.cause
    assert r2.waited_for == NODES[2]
    assert {c.node: sorted(c.hosts) for c in report.clients.values()} == {
        NODES[0]: ["edge-a"],
        NODES[1]: ["edge-a"],
        NODES[2]: ["edge-b"],
    }
    await pilot.press("down")
    await until(
        pilot,
        lambda: "throttled at 96.0 °C" in str(screen.query_one("#rounds-detail", Static).render()),
        "round 2's cause under the table",
    )


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    dev = Devices(tmp_path, lambda name: ()).start()
    try:
        yield dev
    finally:
        dev.stop()


async def test_rounds_arrive_live_from_the_collectors(devices: Devices) -> None:
    # as `edgescope tui --address A --address B`: the devices screen, then f
    targets = [(TcpTarget("127.0.0.1", c.port), "address") for c in (devices.a, devices.b)]
    probe = ProbeSettings(timeout=3, listen=1)
    app = EdgescopeApp(home=lambda: DevicesScreen(targets, mdns=False, probe=probe, recheck=0))
    async with app.run_test(size=(140, 36)) as pilot:
        home = app.screen
        assert isinstance(home, DevicesScreen)
        online = lambda: [d.state for d in home.discovery.devices.values()] == ["online"] * 2  # noqa: E731
        await until(pilot, online, "both collectors found")
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, RoundsScreen)
        await until(pilot, lambda: "yet (2 live" in screen.message_text, "the view, waiting")
        b = f":{devices.b.port}"
        feed_b = lambda: next(f for f in app.feeds if f.label.endswith(b))  # noqa: E731
        await _play_rounds(pilot, devices, screen, feed_b)


@pytest.mark.skipif(broker_missing() is not None, reason=str(broker_missing()))
async def test_rounds_arrive_live_from_the_fleet(tmp_path: Path) -> None:
    pytest.importorskip("aiomqtt", reason="aiomqtt is not installed (pip install '.[mqtt]')")
    from edgescope_tui.screens.fleet import FleetScreen
    from edgescope_tui.sources.mqtt import MqttSettings

    broker = Broker(tmp_path).start()
    dev = Devices(tmp_path, lambda name: ("--mqtt", broker.url, "--device", name))
    try:
        dev.start()
        app = EdgescopeApp(home=lambda: FleetScreen(MqttSettings(broker.url)))
        async with app.run_test(size=(140, 36)) as pilot:
            fleet = app.screen
            assert isinstance(fleet, FleetScreen)
            await until(pilot, lambda: len(fleet.model.devices) == 2, "both devices' births")
            await pilot.press("f")
            screen = app.screen
            assert isinstance(screen, RoundsScreen)
            # the view opened a feed from the broker for every device of the fleet
            live = lambda: [f for f in app.feeds if f.state.stream.status is not None  # noqa: E731
                            and f.state.stream.status.state == "live"]  # fmt: skip
            await until(pilot, lambda: len(live()) == 2, "both devices live through the broker")
            assert sorted(f.label.split()[0] for f in app.feeds) == ["edge-a", "edge-b"]
            feed_b = lambda: next(f for f in app.feeds if f.label.startswith("edge-b"))  # noqa: E731
            await _play_rounds(pilot, dev, screen, feed_b)
    finally:
        dev.stop()
        broker.stop()
