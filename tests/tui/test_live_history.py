"""A device opened mid-run shows the run from its start: a real collector, a real producer.

The collector's latest keyframe restates the active runs with the sequence numbers of their
starts; the TUI's live source reads from there, or says that the ring no longer holds it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Metrics, Record, RunStart, StreamEncoder
from edgescope_tracing.protocol import Client
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources import Status
from edgescope_tui.sources.base import RING_LOST
from edgescope_tui.sources.live import Backoff, LiveSource, TcpOpener
from edgescope_tui.state import fold_all
from edgescope_tui.widgets.timeline import ReplayBar
from sshd.collector import Collector

pytestmark = pytest.mark.asyncio

T0 = 1_795_800_000_000_000
FAST = Backoff(first=0.05, limit=0.3)
STEPS = 20_000
"""Steps logged, 500 a batch: about 200 KB of stream, several 64 KiB segments."""


def produce(collector: Collector, steps: int = STEPS) -> None:
    """A run and its loss on the collector's ingest socket; returns once the collector's head
    holds all of it."""
    enc = StreamEncoder()
    enc.add(RunStart(0, "51a7000000000000", "long-run", "pi5", 77, t_us=T0))
    for first in range(0, steps, 500):
        xs = tuple(range(first, first + 500))
        times = tuple(T0 + x * 1_000 for x in xs)
        enc.add(Metrics(0, "loss", xs, times, tuple(1 / (1 + x) for x in xs)))
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        while True:  # the collector listens on TCP a moment before its ingest socket is there
            try:
                s.connect(str(collector.ingest))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, "no ingest socket"
                time.sleep(0.05)
        s.sendall(enc.take())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _last_step(collector) == steps - 1:
                return
            time.sleep(0.1)
    raise AssertionError("the collector did not store the run")


def _last_step(collector: Collector) -> int:
    """The highest loss step in the collector's stream from its latest keyframe."""
    last = -1
    with Client.connect("127.0.0.1", collector.port, idle_timeout=2) as c:
        head = c.welcome.next_seq
        for item in c:
            if isinstance(item, Metrics):
                last = max(last, *item.steps)
            if item.seq >= head - 1:
                break
    return last


async def read_until_live(source: LiveSource, timeout: float = 20.0) -> list[Record | Status]:
    items: list[Record | Status] = []

    async def pump() -> None:
        async for item in source.stream():
            items.append(item)
            if isinstance(item, Status) and item.state == "live":
                return

    try:
        await asyncio.wait_for(pump(), timeout)
    finally:
        await source.close()
    return items


def loss_steps(items: list[Record | Status]) -> list[int]:
    return [x for i in items if isinstance(i, Metrics) and i.key == "loss" for x in i.steps]


@pytest.fixture
def segmented(tmp_path: Path) -> Iterator[Collector]:
    """Segments of 64 KiB, each opening with a keyframe: the latest is far into the run."""
    c = Collector(tmp_path / "c", interval=1.0, extra=("--segment-size", "64K"))
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def small_ring(tmp_path: Path) -> Iterator[Collector]:
    """A ring of 256 KiB: a long run's start is deleted for space."""
    c = Collector(
        tmp_path / "c", interval=1.0, extra=("--segment-size", "64K", "--max-disk", "256K")
    )
    try:
        yield c.start()
    finally:
        c.stop()


async def test_a_run_opened_mid_way_is_read_from_its_start(segmented: Collector) -> None:
    produce(segmented)
    # Joining at the latest keyframe (what a plain client does) misses the run's beginning...
    plain = loss_steps(await read_until_live(LiveSource(TcpOpener("127.0.0.1", segmented.port))))
    assert plain and plain[0] > 0
    # ...the TUI's source reads it from its first step, once, in order.
    items = await read_until_live(
        LiveSource(TcpOpener("127.0.0.1", segmented.port), backoff=FAST, from_start=True)
    )
    assert loss_steps(items) == list(range(STEPS))
    records = [i for i in items if not isinstance(i, Status)]
    assert isinstance(records[0], RunStart) and records[0].t_us == T0
    states = [i.state for i in items if isinstance(i, Status)]
    assert states[0] == "connecting" and states[-1] == "live"
    assert "connecting" not in states[1:] and "gap" not in states  # no drop, nothing lost
    s = fold_all(items)
    assert s.stream.first_us == T0  # 00:00 is the run's start
    assert not s.stream.gaps


async def test_a_run_whose_start_the_ring_lost_says_so(small_ring: Collector) -> None:
    produce(small_ring, steps=100_000)
    items = await read_until_live(
        LiveSource(TcpOpener("127.0.0.1", small_ring.port), backoff=FAST, from_start=True)
    )
    records = [i for i in items if not isinstance(i, Status)]
    # The run's start as the keyframe restated it, so the run and its time origin are known.
    assert isinstance(records[0], RunStart) and records[0].name == "long-run"
    gaps = [i for i in items if isinstance(i, Status) and i.state == "gap"]
    assert len(gaps) == 1
    steps = loss_steps(items)
    assert steps and steps[0] > 0 and steps == list(range(steps[0], 100_000))
    assert gaps[0].message == (
        f"history from step {steps[0]:,}: the collector's ring no longer holds the start"
    )
    s = fold_all(items)
    assert s.stream.first_us == T0
    assert len(s.stream.gaps) == 1
    gap = s.stream.gaps[0]
    assert gap.t_us == T0 and gap.end_us is not None and gap.end_us > T0
    assert gap.reason == gaps[0].message

    # The dashboard says so in its header, and its time axis starts at the run's start.
    app = EdgescopeApp(
        [LiveSource(TcpOpener("127.0.0.1", small_ring.port), backoff=FAST, from_start=True)]
    )
    async with app.run_test(size=(160, 30)) as pilot:
        d = app.screen
        assert isinstance(d, DashboardScreen)
        for _ in range(400):
            if "● LIVE" in d.query_one("#replay", ReplayBar).render().plain:  # type: ignore[union-attr]
                break
            await pilot.pause(0.05)
        header = str(d.query_one("#run-header").render())
        assert "history from step" in header and RING_LOST in header
        assert "gap(s)" not in header  # that gap is the one said, not counted again
        assert d.feed.time_range() is not None and d.feed.time_range()[0] == T0  # type: ignore[index]
