"""The live source against a real collector process: drop, reconnect, resume, gaps."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Record
from edgescope_tracing.protocol import Client
from edgescope_tui.discovery import Device, SshTarget, TcpTarget
from edgescope_tui.discovery.probe import Prober, ProbeSettings
from edgescope_tui.sources import Status
from edgescope_tui.sources.live import Backoff, LiveSource, TcpOpener, live_source
from edgescope_tui.ssh import SshSettings
from sshd import Sshd, free_port
from sshd.collector import Collector
from sshd.fixtures import sshd_fixture  # noqa: F401 (registers the fixture)

pytestmark = pytest.mark.asyncio

FAST = Backoff(first=0.05, limit=0.3)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    try:
        yield c.start()
    finally:
        c.stop()


def holding_records(collector: Collector, timeout: float = 10.0) -> Collector:
    """Wait until the collector's store holds a record (it listens before it stores its first),
    so that a client connecting now has history to read before it is live."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Client.connect("127.0.0.1", collector.port) as c:
            if c.welcome.next_seq > 0:
                return collector
        time.sleep(0.05)
    raise AssertionError("the collector stored nothing")


class Reader:
    """Pulls a source's stream in the background; the test waits on what arrived."""

    def __init__(self, source: LiveSource) -> None:
        self.source = source
        self.items: list[Record | Status] = []
        self._new = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        async for item in self.source.stream():
            self.items.append(item)
            self._new.set()

    async def until(self, cond: object, timeout: float = 20.0) -> None:
        assert callable(cond)

        async def wait() -> None:
            while not cond():
                self._new.clear()
                await self._new.wait()

        await asyncio.wait_for(wait(), timeout)

    @property
    def records(self) -> list[Record]:
        return [i for i in self.items if not isinstance(i, Status)]

    def statuses(self, state: str | None = None) -> list[Status]:
        return [i for i in self.items if isinstance(i, Status) and state in (None, i.state)]

    async def close(self) -> None:
        await self.source.close()
        await asyncio.wait_for(self._task, 10)


async def test_drop_reconnect_and_resume_without_gap(collector: Collector) -> None:
    holding_records(collector)
    source = LiveSource(TcpOpener("127.0.0.1", collector.port), backoff=FAST, idle_timeout=5)
    r = Reader(source)
    try:
        await r.until(lambda: len(r.records) >= 20 and r.statuses("live"))
        assert [s.state for s in r.statuses()][:3] == ["connecting", "history", "live"]
        before = len(r.items)
        collector.kill()
        await r.until(lambda: r.statuses("disconnected"), timeout=5)
        # Said at once: the disconnect comes right after the last records, no timeout waited.
        assert all(not isinstance(i, Status) or i.state != "live" for i in r.items[before:])
        last_seq = r.records[-1].seq
        n_before = len(r.records)
        collector.start()
        await r.until(lambda: len(r.records) >= n_before + 20 and len(r.statuses("live")) == 2)
        seqs = [rec.seq for rec in r.records]
        # Resumed at last + 1: every number once, in order, none missing.
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        assert seqs[n_before] == last_seq + 1
        assert not r.statuses("gap")
    finally:
        await r.close()


async def test_history_first_then_live_at_the_head_it_had(collector: Collector) -> None:
    """What the collector held is read as ``history``; ``live`` comes once the records before
    its head (as it was on connecting) are in, so a dashboard says loading only meanwhile."""
    holding_records(collector)
    source = LiveSource(TcpOpener("127.0.0.1", collector.port), backoff=FAST)
    r = Reader(source)
    try:
        await r.until(lambda: r.statuses("live"))
        head = source.head_on_connect
        assert head is not None and head > 0
        states = [i.state if isinstance(i, Status) else "record" for i in r.items]
        assert states[:2] == ["connecting", "history"]
        at = r.items.index(r.statuses("live")[0])
        before = [i for i in r.items[:at] if not isinstance(i, Status)]
        assert before and before[-1].seq == head - 1
        assert "up to record" in r.statuses("history")[0].message
    finally:
        await r.close()


async def test_a_clean_stop_is_a_disconnect_too(collector: Collector) -> None:
    source = LiveSource(TcpOpener("127.0.0.1", collector.port), backoff=FAST)
    r = Reader(source)
    try:
        await r.until(lambda: len(r.records) >= 3)
        collector.stop()
        await r.until(lambda: r.statuses("disconnected"), timeout=10)
        assert "the collector stopped" in r.statuses("disconnected")[0].message
        # While it is away, each attempt says why, then waits longer.
        await r.until(lambda: len(r.statuses("disconnected")) >= 3, timeout=10)
        assert "connection refused" in r.statuses("disconnected")[-1].message
    finally:
        await r.close()


async def test_records_no_longer_retained_are_an_explicit_gap(tmp_path: Path) -> None:
    c = Collector(tmp_path / "c", extra=("--segment-age", "1"))
    c.start()
    try:
        await asyncio.sleep(2.3)
    finally:
        c.stop()
    segments = sorted(c.data_dir.glob("seg-*.est"))
    assert len(segments) >= 2
    first_kept = int(segments[1].name[4:24])
    segments[0].unlink()
    c.start()
    try:
        source = LiveSource(TcpOpener("127.0.0.1", c.port), since=0, backoff=FAST)
        r = Reader(source)
        try:
            await r.until(lambda: len(r.records) >= 5)
            gaps = r.statuses("gap")
            assert [g.gap for g in gaps] == [(0, first_kept - 1)]
            assert "no longer retained" in gaps[0].message
            first = r.records[0].seq
            assert first >= first_kept
        finally:
            await r.close()
    finally:
        c.stop()


async def test_unreachable_collector_keeps_trying_and_says_why() -> None:
    port = free_port()
    source = live_source(TcpTarget("127.0.0.1", port), backoff=FAST)
    r = Reader(source)
    try:
        await r.until(lambda: len(r.statuses("disconnected")) >= 2, timeout=5)
        msg = r.statuses("disconnected")[0].message
        assert msg.startswith(f"cannot connect to 127.0.0.1:{port}: connection refused")
        assert "retrying in 0.05 s" in msg
    finally:
        await r.close()


async def test_live_through_ssh(sshd: Sshd, collector: Collector, tmp_path: Path) -> None:
    empty = tmp_path / "ssh_config"
    empty.touch()
    settings = SshSettings(
        known_hosts=str(sshd.known_hosts),
        identities=(str(sshd.user_key),),
        agent=False,
        config=str(empty),
    )
    target = SshTarget("127.0.0.1", "root", sshd.port, collector_port=collector.port)
    r = Reader(live_source(target, ssh_settings=settings, backoff=FAST, idle_timeout=5))
    try:
        await r.until(lambda: len(r.records) >= 10)
        assert r.statuses("live")[0].message.startswith(
            f"live from ssh://root@127.0.0.1:{sshd.port}"
        )
        collector.kill()
        await r.until(lambda: r.statuses("disconnected"), timeout=5)
        n = len(r.records)
        last = r.records[-1].seq
        collector.start()
        await r.until(lambda: len(r.records) >= n + 5)
        assert r.records[n].seq == last + 1
    finally:
        await r.close()
    assert f"target 127.0.0.1 port {collector.port}" in sshd.log.read_text()


async def test_refused_host_key_ends_the_stream(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    settings = SshSettings(
        known_hosts=str(empty), identities=(str(sshd.user_key),), agent=False, config=str(empty)
    )
    target = SshTarget("127.0.0.1", "root", sshd.port)
    r = Reader(live_source(target, ssh_settings=settings, backoff=FAST))
    try:
        await r.until(lambda: r.statuses("error"), timeout=10)
        await asyncio.wait_for(r._task, 5)
        assert "REFUSED: the host key is not known" in r.statuses("error")[0].message
        assert not r.records
    finally:
        await r.close()


async def test_a_collector_that_wants_a_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("correct horse battery staple\n")
    c = Collector(tmp_path / "c", extra=("--token-file", str(token)))
    c.start()
    try:
        prober = Prober(ProbeSettings(timeout=3, listen=0.5))
        bare = TcpTarget("127.0.0.1", c.port)
        device = await prober.probe(Device(bare.key, bare.label, "address", bare))
        assert device.state == "error"
        assert device.error == f"127.0.0.1:{c.port} requires a token (--token-file)"

        wrong = live_source(bare, token=b"guess", backoff=FAST)
        r = Reader(wrong)
        await asyncio.wait_for(r._task, 10)  # a refused token ends the stream: no retrying
        assert [s.state for s in r.statuses()] == ["connecting", "error"]
        assert "refused the token" in r.statuses("error")[0].message

        with_token = TcpTarget("127.0.0.1", c.port, token="correct horse battery staple")
        device = await prober.probe(Device(with_token.key, with_token.label, "address", with_token))
        assert device.state == "online", device.error
        assert device.auth_required is True
        r = Reader(live_source(with_token, backoff=FAST))
        try:
            await r.until(lambda: len(r.records) >= 3)
        finally:
            await r.close()
        await prober.close()
    finally:
        c.stop()


async def test_a_collector_gone_silent_counts_as_dropped(collector: Collector) -> None:
    """SIGSTOP: the connection stays open but nothing comes, as when a device loses power."""
    assert collector.proc is not None
    source = LiveSource(
        TcpOpener("127.0.0.1", collector.port, timeout=1), backoff=FAST, idle_timeout=1
    )
    r = Reader(source)
    try:
        await r.until(lambda: len(r.records) >= 5)
        os.kill(collector.proc.pid, signal.SIGSTOP)
        try:
            await r.until(lambda: r.statuses("disconnected"), timeout=5)
            assert r.statuses("disconnected")[0].message.startswith(
                f"nothing from 127.0.0.1:{collector.port} for 1 s"
            )
            n, last = len(r.records), r.records[-1].seq
        finally:
            os.kill(collector.proc.pid, signal.SIGCONT)
        await r.until(lambda: len(r.records) >= n + 5, timeout=20)
        assert r.records[n].seq == last + 1
        assert not r.statuses("gap")
    finally:
        await r.close()
