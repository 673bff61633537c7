"""The run dashboard on a live source: a real collector, a producer on its ingest socket.

Live is replay at the head of the stream: the same dashboard follows the newest record, says at
once when the collector drops, and carries on when it is back.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Event, Metrics, RunStart, StreamEncoder
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.discovery import TcpTarget
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources.live import Backoff, live_source
from edgescope_tui.widgets.chart import Chart
from edgescope_tui.widgets.timeline import ReplayBar
from sshd.collector import Collector
from textual.pilot import Pilot

pytestmark = pytest.mark.asyncio
T0 = 1_795_800_000_000_000


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector", interval=0.2)
    try:
        yield c.start()
    finally:
        c.stop()


def produce(ingest: Path, steps: int) -> socket.socket:
    """A training process's stream on the ingest socket: a run, its loss, a mark."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(ingest))
    enc = StreamEncoder()
    enc.add(RunStart(0, "11ve0000", "live-run", "pi5", 77, {"batch_size": 32}, t_us=T0))
    for step in range(steps):
        t = T0 + step * 10_000
        enc.add(Metrics(0, "loss", (step,), (t,), (2.0 / (1 + step),), t_us=t))
    enc.add(Event("mark", "halfway", run=0, t_us=T0 + steps * 5_000))
    s.sendall(enc.take())
    return s


async def until(pilot: Pilot[None], cond: object, timeout: float = 20.0) -> None:
    assert callable(cond)
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the dashboard")


async def test_a_long_live_session_lets_its_oldest_history_go(collector: Collector) -> None:
    source = live_source(TcpTarget("127.0.0.1", collector.port))
    app = EdgescopeApp([source], max_points=150)
    async with app.run_test(size=(120, 36)) as pilot:
        d = app.screen
        assert isinstance(d, DashboardScreen)
        producer = produce(collector.ingest, 400)
        try:
            feed = d.feed
            await until(
                pilot,
                lambda: (
                    feed.state.metrics.get((0, "loss")) is not None
                    and feed.state.metrics[(0, "loss")].last_x == 399
                ),
            )
            await pilot.pause(0.3)
            loss = feed.state.metrics[(0, "loss")]
            assert len(loss) < 150 and feed.points <= 150
            assert feed.state.stream.trimmed_us is not None
            assert "let go" in str(d.query_one("#run-header").render())
        finally:
            producer.close()


async def test_live_dashboard_follows_the_head_and_shows_a_drop(collector: Collector) -> None:
    source = live_source(
        TcpTarget("127.0.0.1", collector.port), backoff=Backoff(first=0.05, limit=0.3)
    )
    app = EdgescopeApp([source])
    async with app.run_test(size=(120, 36)) as pilot:
        app.animation_level = "none"
        d = app.screen
        assert isinstance(d, DashboardScreen)
        producer = produce(collector.ingest, 200)
        try:

            def header() -> str:
                return str(d.query_one("#run-header").render())

            def loss_points() -> int:
                spec = d.query_one("#chart-loss", Chart).spec
                return spec.lines[0].end or 0 if spec is not None and spec.lines else 0

            await until(pilot, lambda: loss_points() == 200 and "live-run on pi5" in header())
            assert "live" in header()
            bar = d.query_one("#replay", ReplayBar)
            assert bar.spec is not None and bar.spec.live and bar.spec.cursor is None
            assert "● LIVE" in bar.render().plain  # type: ignore[union-attr]
            assert "loading" not in bar.render().plain  # type: ignore[union-attr]
            # The mark is there, and stepping back in time leaves the head; l returns to it.
            await pilot.press("p")
            assert d.cursor is not None
            await pilot.press("l")
            assert d.cursor is None

            collector.kill()
            await until(pilot, lambda: "disconnected" in header() or "connecting" in header())
            assert "○ " in bar.render().plain  # type: ignore[union-attr]
            collector.start()
            await until(pilot, lambda: "live" in header().split("·")[-1])
            assert loss_points() == 200  # resumed, nothing twice
        finally:
            producer.close()
