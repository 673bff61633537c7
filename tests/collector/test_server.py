"""The stream server over real sockets: history then live, resume, several clients, slow ones."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from edgescope_collector.server import ServerLimits
from edgescope_tracing import Keyframe, Metrics, Record
from edgescope_tracing.protocol import AsyncClient, ConnectionLost, Gap
from test_server_support import RUN, append_all, metric, noisy, served


async def take(client: AsyncClient, n: int, timeout: float = 10.0) -> list[Record | Gap]:
    out: list[Record | Gap] = []

    async def run() -> None:
        async for item in client:
            out.append(item)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def take_until(client: AsyncClient, last: int, timeout: float = 10.0) -> list[Record | Gap]:
    """Items until the record with sequence number ``last`` (gaps count as one item each)."""
    out: list[Record | Gap] = []

    async def run() -> None:
        async for item in client:
            out.append(item)
            if not isinstance(item, Gap) and item.seq >= last:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def seqs(items: list[Record | Gap]) -> list[int]:
    return [x.seq for x in items if not isinstance(x, Gap)]


@pytest.mark.asyncio
async def test_since_gives_history_then_live(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN] + [metric(i) for i in range(50)])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=20)
        assert client.welcome.first_seq == 0 and client.welcome.next_seq == 52
        history = await take(client, 32)
        assert seqs(history) == list(range(20, 52))
        append_all(store, [metric(i) for i in range(50, 60)])
        live = await take(client, 10)
        assert seqs(live) == list(range(52, 62))
        assert all(isinstance(x, Metrics) for x in live)
        await client.close()


@pytest.mark.asyncio
async def test_without_since_joins_at_the_latest_keyframe(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN] + [metric(i) for i in range(5)])
        client = await AsyncClient.connect("127.0.0.1", server.port)
        first = await take(client, 1)
        assert isinstance(first[0], Keyframe) and first[0].seq == 0
        await client.close()


@pytest.mark.asyncio
async def test_reconnect_with_last_plus_one_has_no_gaps(tmp_path: Path) -> None:
    async with served(tmp_path, segment_bytes=128 * 1024, max_disk=64 << 20) as (store, server):
        append_all(store, [RUN])
        got: list[int] = []
        since = 0
        for round_ in range(4):
            for i in range(25):
                store.append(noisy(round_ * 25 + i))
                store.flush()
            client = await AsyncClient.connect("127.0.0.1", server.port, since=since)
            items = await take(client, store.next_seq - since)
            await client.close()
            assert not [x for x in items if isinstance(x, Gap)]
            got.extend(seqs(items))
            since = got[-1] + 1
        assert len(store.segments) > 2, "the stream crossed segment boundaries"
        assert got == list(range(store.next_seq))


@pytest.mark.asyncio
async def test_several_clients_get_the_same_stream(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN])
        clients = [await AsyncClient.connect("127.0.0.1", server.port, since=0) for _ in range(3)]
        append_all(store, [metric(i) for i in range(30)])
        results = await asyncio.gather(*(take(c, 32) for c in clients))
        for r in results:
            assert seqs(r) == list(range(32))
        for c in clients:
            await c.close()


@pytest.mark.asyncio
async def test_since_older_than_retention_is_an_explicit_gap(tmp_path: Path) -> None:
    async with served(tmp_path, max_disk=512 * 1024, segment_bytes=128 * 1024) as (store, server):
        append_all(store, [RUN])
        for i in range(200):
            store.append(noisy(i))
            store.flush()
        first = store.first_seq
        assert first > 10
        client = await AsyncClient.connect("127.0.0.1", server.port, since=3)
        items = await take(client, 2)
        assert items[0] == Gap(3, first - 1, "no longer retained by the collector")
        assert not isinstance(items[1], Gap) and items[1].seq == first
        await client.close()


@pytest.mark.asyncio
async def test_slow_client_catches_up_from_disk_without_a_gap(tmp_path: Path) -> None:
    limits = ServerLimits(client_buffer=64 * 1024)
    async with served(tmp_path, limits=limits) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        await take(client, 2)  # live now
        # Far more than the client's live buffer, while it reads nothing.
        for i in range(100):
            store.append(noisy(i))
            store.flush()
        items = await take(client, 100)
        assert seqs(items) == list(range(2, 102))
        assert not [x for x in items if isinstance(x, Gap)]
        await client.close()


@pytest.mark.asyncio
async def test_slow_client_is_told_the_gap_when_retention_dropped_its_data(
    tmp_path: Path,
) -> None:
    limits = ServerLimits(client_buffer=64 * 1024)
    async with served(tmp_path, limits=limits, max_disk=512 * 1024, segment_bytes=128 * 1024) as (
        store,
        server,
    ):
        append_all(store, [RUN])
        # A client with a tiny receive window that stops reading after the handshake.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        client = await AsyncClient.over(reader, writer, since=0, label="slow")
        await take(client, 2)
        for i in range(600):
            store.append(noisy(i))
            store.flush()
            if i % 50 == 0:
                await asyncio.sleep(0)  # the server runs; the client still reads nothing
        assert store.dropped_segments > 0
        fresh = await AsyncClient.connect("127.0.0.1", server.port)
        assert fresh.welcome.next_seq == store.next_seq, "other clients are served meanwhile"
        await fresh.close()
        items = await take_until(client, store.next_seq - 1, timeout=20)
        gaps = [x for x in items if isinstance(x, Gap)]
        assert gaps, "a client that lost data is told so"
        got = seqs(items)
        assert got == sorted(got)
        missing = {s for g in gaps for s in range(g.first, g.last + 1)}
        assert set(range(2, store.next_seq)) == set(got) | missing
        await client.close()


@pytest.mark.asyncio
async def test_shutdown_sends_end(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        await take(client, 2)
        await server.close()
        rest = await take(client, 10)
        assert rest == []
        assert client.end_message == "the collector stopped"
        await client.close()


@pytest.mark.asyncio
async def test_heartbeat_tells_the_head(tmp_path: Path) -> None:
    async with served(tmp_path, limits=ServerLimits(beat_interval=0.1)) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        await take(client, 2)
        for _ in range(50):
            if client.head is not None:
                break
            task = asyncio.ensure_future(take(client, 1, timeout=0.3))
            with pytest.raises(TimeoutError):
                await task
        assert client.head == 2
        await client.close()


@pytest.mark.asyncio
async def test_server_gone_mid_stream_is_connection_lost(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        await take(client, 2)
        for t in list(server._tasks):
            t.cancel()
        with pytest.raises(ConnectionLost):
            await take(client, 1)
        await client.close()


@pytest.mark.asyncio
async def test_too_many_clients_are_refused_with_a_sentence(tmp_path: Path) -> None:
    from edgescope_tracing.protocol import RefusedError

    async with served(tmp_path, limits=ServerLimits(max_clients=1)) as (store, server):
        append_all(store, [RUN])
        first = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        with pytest.raises(RefusedError, match="too many clients"):
            await AsyncClient.connect("127.0.0.1", server.port)
        await first.close()
        await asyncio.sleep(0.1)
        again = await AsyncClient.connect("127.0.0.1", server.port)
        await again.close()
