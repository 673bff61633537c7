"""A gap reaches the archive only where the device's ring itself dropped records: a collector
whose broker is away for longer than its ring holds publishes, once the broker is back, a batch
that says the gap, then everything the ring still has, in order."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from broker import Broker, available, free_port

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.slow,
]
pytest.importorskip("aiomqtt", reason="aiomqtt is not installed (pip install '.[mqtt]')")

from edgescope_collector.mqtt import MqttPublisher, MqttSettings  # noqa: E402
from edgescope_collector.store import SegmentStore  # noqa: E402
from edgescope_tracing import Event, Keyframe, Metrics, RunStart, TraceReader  # noqa: E402
from edgescope_tracing.fleet import parse_broker_url  # noqa: E402

from edgescope.cli.archive import archive  # noqa: E402


@pytest.mark.asyncio
async def test_a_gap_only_where_the_ring_dropped_records(tmp_path: Path) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    # The archiver's persistent session exists before the trouble: then the broker goes away.
    broker = Broker(tmp_path, port=port).start()
    out = tmp_path / "archive"
    astop = asyncio.Event()
    atask = asyncio.ensure_future(archive(url, out, astop, retry=0.05))
    await asyncio.sleep(1.5)
    broker.stop()
    store = SegmentStore(tmp_path / "dev", max_disk=256 * 1024, segment_bytes=64 * 1024)
    store.open()
    settings = MqttSettings(parse_broker_url(url), "dev", retry_interval=0.05)
    pub = MqttPublisher(settings, store, tmp_path / "dev", first_seq=0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(pub.run(stop))
    now = time.time_ns() // 1000
    store.append(RunStart(0, "r1", "mlp", "dev", 1, t_us=now))
    step = 0
    while store.dropped_segments < 2:  # the broker is not there: the ring wraps
        steps = tuple(range(step, step + 500))
        step += 500
        values = tuple(float(s % 977) * 1.000001 for s in steps)
        store.append(Metrics(0, "loss", steps, tuple(now + s for s in steps), values))
        store.flush()
        await asyncio.sleep(0)
    kept = store.first_seq
    assert kept > 0
    broker.start()
    try:
        deadline = time.monotonic() + 30
        while pub.acked != store.next_seq or pub.sessions == 0:
            assert time.monotonic() < deadline, "the publisher did not catch up"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        while not atask.done():
            dev = out / "dev" / ".dev.cursor"
            if dev.exists():
                import msgpack

                if msgpack.unpackb(dev.read_bytes())["next"] == store.next_seq:
                    break
            assert time.monotonic() < deadline, "the archive did not catch up"
            await asyncio.sleep(0.05)
        astop.set()
        await asyncio.wait_for(atask, 10)
    finally:
        broker.stop()
    stored = []
    for seg in sorted((tmp_path / "dev").glob("seg-*.est")):
        stored += [r for r in TraceReader(seg) if not isinstance(r, Keyframe)]
    store.close()
    (f,) = sorted((out / "dev").glob("*.est"))
    got = [r for r in TraceReader(f) if not isinstance(r, Keyframe)]
    gaps = [r for r in got if isinstance(r, Event) and r.kind == "gap"]
    assert len(gaps) == 1, gaps
    assert gaps[0].detail["from_seq"] == 0 and gaps[0].detail["to_seq"] == kept - 1
    assert gaps[0].detail["reason"] == "the device's ring no longer held them"
    rest = [r for r in got if r is not gaps[0]]
    # The run (from its retained runs message: its start was in the dropped part), then all
    # the ring held, in order.
    assert isinstance(rest[0], RunStart) and rest[0].run_id == "r1"
    same = [dataclasses.replace(r, seq=0) for r in rest[1:]]
    assert same == [dataclasses.replace(r, seq=0) for r in stored if r.seq >= kept]


@pytest.mark.asyncio
async def test_a_collector_restarted_while_the_broker_was_away_publishes_what_it_had_not(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = Broker(tmp_path, port=port).start()
    out = tmp_path / "archive"
    astop = asyncio.Event()
    atask = asyncio.ensure_future(archive(url, out, astop, retry=0.05))
    settings = MqttSettings(parse_broker_url(url), "dev", retry_interval=0.05)
    now = time.time_ns() // 1000

    async def session(batches: int, then: Callable[[], None] | None = None) -> int:
        store = SegmentStore(tmp_path / "dev", max_disk=8 << 20)
        store.open()
        pub = MqttPublisher(settings, store, tmp_path / "dev", first_seq=store.next_seq)
        stop = asyncio.Event()
        task = asyncio.ensure_future(pub.run(stop))
        for b in range(batches):
            steps = (b,)
            store.append(Metrics(0, "loss", steps, (now + b,), (0.5,)))
            store.flush()
            await asyncio.sleep(0.01)
        if then is not None:
            then()
            await asyncio.sleep(0.3)
            for b in range(batches):  # these the broker never sees in this session
                store.append(Metrics(0, "loss", (100 + b,), (now + b,), (0.25,)))
                store.flush()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 15)
        end = store.next_seq
        store.close()
        return end

    try:
        await asyncio.sleep(1.0)  # the archiver's session exists
        await session(10, then=broker.stop)  # the collector stops while the broker is away
        broker.start()
        end = await session(5)  # restarted: what it had not published goes first
        deadline = time.monotonic() + 30
        import msgpack

        cur = out / "dev" / ".dev.cursor"
        while not (cur.exists() and msgpack.unpackb(cur.read_bytes())["next"] == end):
            assert time.monotonic() < deadline, "the archive did not catch up"
            await asyncio.sleep(0.05)
        astop.set()
        await asyncio.wait_for(atask, 10)
    finally:
        broker.stop()
    stored = []
    for seg in sorted((tmp_path / "dev").glob("seg-*.est")):
        stored += [r for r in TraceReader(seg) if not isinstance(r, Keyframe)]
    (f,) = sorted((out / "dev").glob("*.est"))
    got = [r for r in TraceReader(f) if not isinstance(r, Keyframe)]
    assert [dataclasses.replace(r, seq=0) for r in got] == [
        dataclasses.replace(r, seq=0) for r in stored
    ]
    assert len([r for r in got if isinstance(r, Metrics)]) == 25
