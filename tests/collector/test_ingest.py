"""The ingest socket: several SDK streams at once, run numbers remapped, vanished producers
ended, garbage closing only its own connection. Real Unix sockets, real asyncio server."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio
from edgescope_collector.ingest import IngestServer
from edgescope_tracing import (
    Event,
    Keyframe,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    StreamEncoder,
    SystemSample,
)

pytestmark = pytest.mark.asyncio
R = TypeVar("R")


def _start(run: int, name: str, pid: int = 4242) -> RunStart:
    return RunStart(run, uuid.uuid4().hex, name, "host", pid, {"lr": 0.1}, ("t",), {}, 1_000)


def _metrics(run: int, key: str, n: int, first: int = 0) -> Metrics:
    steps = tuple(range(first, first + n))
    return Metrics(run, key, steps, tuple(2_000 + s for s in steps), tuple(float(s) for s in steps))


def _stream(*records: Record, keyframe_bytes: int = 1 << 20) -> bytes:
    enc = StreamEncoder(keyframe_bytes=keyframe_bytes)
    for r in records:
        enc.add(r)
    return enc.take()


class Collected:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.starts: list[RunStart] = []
        self.ends: list[RunEnd] = []

    def sink(self, rec: Record) -> None:
        self.records.append(rec)

    def of(self, kind: type[R]) -> list[R]:
        return [r for r in self.records if isinstance(r, kind)]


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[IngestServer, Collected]]:
    got = Collected()
    srv = IngestServer(
        tmp_path / "run" / "ingest.sock",
        got.sink,
        on_run_start=got.starts.append,
        on_run_end=got.ends.append,
    )
    await srv.start()
    yield srv, got
    await srv.close()


async def _send(path: Path, data: bytes, *, close: bool = True) -> asyncio.StreamWriter:
    _, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
    return writer


async def _until(cond: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_socket_dir_is_private_and_socket_is_owner_only(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, _ = server
    assert stat.S_IMODE(os.stat(srv.path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(srv.path).st_mode)


async def test_two_producers_get_distinct_run_numbers_in_every_record(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    a = _stream(
        _start(0, "a", pid=11),
        _metrics(0, "loss", 5),
        Event("mark", "hello", run=0),
        StackSamples(0, "python", 10_000, (((StackFrame("f", "x.py", 1),), 3),)),
        RunEnd(0, 0, 7),
    )
    b = _stream(_start(0, "b", pid=22), _metrics(0, "loss", 3, first=100), RunEnd(0, 3, 0))
    await asyncio.gather(_send(srv.path, a), _send(srv.path, b))
    await _until(lambda: len(got.ends) == 2)
    assert await srv.wait_idle(5)

    starts = {r.name: r for r in got.of(RunStart)}
    assert set(starts) == {"a", "b"}
    ra, rb = starts["a"].run, starts["b"].run
    assert ra != rb
    assert starts["a"].pid == 11 and starts["a"].config == {"lr": 0.1}
    by_run: dict[int, list[Record]] = {}
    for r in got.records:
        by_run.setdefault(getattr(r, "run", -1), []).append(r)
    kinds_a = [type(r).__name__ for r in by_run[ra]]
    assert kinds_a == ["RunStart", "Metrics", "Event", "StackSamples", "RunEnd"]
    assert [type(r).__name__ for r in by_run[rb]] == ["RunStart", "Metrics", "RunEnd"]
    m = next(r for r in by_run[rb] if isinstance(r, Metrics))
    assert m.steps == (100, 101, 102)
    end_a = next(r for r in by_run[ra] if isinstance(r, RunEnd))
    assert (end_a.exit_code, end_a.dropped) == (0, 7)
    assert not got.of(Keyframe), "the producers' keyframes must be dropped"
    assert [s.run for s in got.starts] and {s.run for s in got.starts} == {ra, rb}
    assert {e.run for e in got.ends} == {ra, rb}


async def test_keyframes_in_a_long_stream_are_dropped_and_numbers_stay_mapped(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    records: list[Record] = [_start(0, "long")]
    records += [_metrics(0, "loss", 50, first=50 * i) for i in range(40)]
    records.append(RunEnd(0, 0))
    await _send(srv.path, _stream(*records, keyframe_bytes=2_000))
    await _until(lambda: len(got.ends) == 1)
    assert not got.of(Keyframe)
    assert len(got.of(RunStart)) == 1
    run = got.starts[0].run
    ms = got.of(Metrics)
    assert sum(len(m.values) for m in ms) == 2000
    assert {m.run for m in ms} == {run}


async def test_a_producer_that_vanishes_gets_an_event_and_a_run_end(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    data = _stream(_start(0, "vanishing", pid=33), _metrics(0, "loss", 4))
    # Half of a further frame, as a process killed mid-write leaves it.
    tail = _stream(_metrics(0, "loss", 4, first=4))[12:]  # frames, without the header
    await _send(srv.path, data + tail[: len(tail) // 2])
    await _until(lambda: len(got.ends) == 1)
    run = got.starts[0].run
    assert got.ends[0] == RunEnd(run, None, 0, got.ends[0].t_us)
    ev = [e for e in got.of(Event) if e.run == run]
    assert len(ev) == 1 and "vanished" in ev[0].message and "pid 33" in ev[0].message
    assert sum(len(m.values) for m in got.of(Metrics)) == 4


async def test_garbage_closes_only_that_connection(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    _, good = await asyncio.open_unix_connection(str(srv.path))
    enc = StreamEncoder()
    enc.add(_start(0, "good"))
    good.write(enc.take())
    await good.drain()
    await _until(lambda: len(got.starts) == 1)

    # Not a trace at all.
    r1, w1 = await asyncio.open_unix_connection(str(srv.path))
    w1.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await w1.drain()
    assert await asyncio.wait_for(r1.read(), 5) == b""  # the server hung up
    w1.close()

    # A valid start, then a flood of bytes that never make a frame.
    r2, w2 = await asyncio.open_unix_connection(str(srv.path))
    w2.write(_stream(_start(0, "flooder")))
    w2.write(os.urandom(200_000).replace(b"\xe5", b"\x00"))
    with pytest.raises((ConnectionError, AssertionError)):
        await w2.drain()
        assert await asyncio.wait_for(r2.read(), 5) != b""
    w2.close()

    # A frame with a bad checksum.
    r3, w3 = await asyncio.open_unix_connection(str(srv.path))
    enc3 = StreamEncoder()
    enc3.add(_start(0, "corrupt"))
    first = enc3.take()
    enc3.add(_metrics(0, "loss", 10))
    bad = bytearray(enc3.take())
    bad[-3] ^= 0xFF
    w3.write(first + bytes(bad))
    await w3.drain()
    assert await asyncio.wait_for(r3.read(), 5) == b""
    w3.close()

    await _until(lambda: len(got.ends) == 2)
    # The good connection still works.
    enc.add(_metrics(0, "loss", 3))
    enc.add(RunEnd(0, 0))
    good.write(enc.take())
    await good.drain()
    await _until(lambda: len(got.ends) == 3)
    good.close()
    names = {s.run: s.name for s in got.starts}
    assert {names[e.run] for e in got.ends} == {"good", "flooder", "corrupt"}
    good_end = next(e for e in got.ends if names[e.run] == "good")
    assert good_end.exit_code == 0
    messages = [e.message for e in got.of(Event) if e.run == -1]
    assert any("not an edgescope" in m for m in messages)
    assert any("bytes between frames" in m for m in messages)
    assert any("bad checksum" in m for m in messages)


async def test_records_without_a_run_pass_and_unknown_runs_are_dropped_and_said(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    await _send(
        srv.path,
        _stream(SystemSample(cpu_percent=5.0), _metrics(3, "loss", 2), _start(0, "x"), RunEnd(0)),
    )
    await _until(lambda: len(got.ends) == 1)
    assert [r.cpu_percent for r in got.of(SystemSample)] == [5.0]
    assert not got.of(Metrics)
    assert any("never started" in e.message for e in got.of(Event))


async def test_allocated_numbers_never_collide_with_producers(
    server: tuple[IngestServer, Collected],
) -> None:
    srv, got = server
    mine = srv.allocate_run()
    await _send(srv.path, _stream(_start(0, "p"), RunEnd(0)))
    await _until(lambda: len(got.ends) == 1)
    assert got.starts[0].run != mine


async def test_close_ends_open_runs_and_removes_the_socket(tmp_path: Path) -> None:
    got = Collected()
    srv = IngestServer(tmp_path / "ingest.sock", got.sink, on_run_end=got.ends.append)
    await srv.start()
    _, w = await asyncio.open_unix_connection(str(srv.path))
    w.write(_stream(_start(0, "still running")))
    await w.drain()
    await _until(lambda: bool(got.of(RunStart)))
    assert srv.connections == 1
    await srv.close()
    assert not srv.path.exists()
    assert len(got.ends) == 1 and got.ends[0].exit_code is None
    assert any("collector stopped" in e.message for e in got.of(Event))
    w.close()


async def test_stale_socket_is_replaced_and_a_live_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed collector leaves
    first = IngestServer(path, lambda r: None)
    await first.start()
    try:
        second = IngestServer(path, lambda r: None)
        with pytest.raises(OSError, match="another collector is listening"):
            await second.start()
    finally:
        await first.close()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        await IngestServer(path, lambda r: None).start()
    assert path.read_text() == "not a socket"


@pytest.mark.parametrize(
    ("mode", "owner", "refused"),
    [
        (0o700, None, None),
        (0o1777, None, None),  # like /tmp: sticky, nobody can replace our socket
        (0o777, None, "others may write to it"),
        (0o770, None, "others may write to it"),
        (0o700, 12345, "owned by uid 12345"),
    ],
)
async def test_a_directory_others_could_swap_the_socket_in_is_refused(
    tmp_path: Path, mode: int, owner: int | None, refused: str | None
) -> None:
    d = tmp_path / "sockdir"
    d.mkdir()
    os.chmod(d, mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(d, owner, -1)
    srv = IngestServer(d / "ingest.sock", lambda r: None)
    if refused is None:
        await srv.start()
        await srv.close()
    else:
        with pytest.raises(OSError, match=refused):
            await srv.start()
        assert not (d / "ingest.sock").exists()


async def test_what_is_stored_is_acknowledged_after_the_flush(tmp_path: Path) -> None:
    from edgescope_tracing.acks import ACK_SIZE, parse_acks

    got = Collected()
    flushed_at: list[int] = []
    srv = IngestServer(
        tmp_path / "ingest.sock", got.sink, flush=lambda: flushed_at.append(len(got.records))
    )
    await srv.start()
    try:
        enc = StreamEncoder()
        enc.add(_start(0, "acked"))
        enc.add(_metrics(0, "loss", 100))
        first = enc.take()
        enc.add(_metrics(0, "loss", 50, first=100))
        enc.add(RunEnd(0, 0, 0, 3_000))
        second = enc.take()
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        writer.write(first + second[:5])  # a frame cut short is not acknowledged
        await writer.drain()
        buf = bytearray(await asyncio.wait_for(reader.readexactly(ACK_SIZE), 5))
        assert parse_acks(buf) == len(first) and not buf
        assert flushed_at == [2], "flushed once the start and the batch were in the sink"
        writer.write(second[5:])
        await writer.drain()
        buf = bytearray(await asyncio.wait_for(reader.readexactly(ACK_SIZE), 5))
        assert parse_acks(buf) == len(first) + len(second)
        writer.close()
        await writer.wait_closed()
        assert await srv.wait_idle(5)
    finally:
        await srv.close()
    assert len(got.of(Metrics)) == 2 and got.of(RunEnd)[0].exit_code == 0


async def test_a_failed_flush_acknowledges_nothing(tmp_path: Path) -> None:
    def full() -> None:
        raise OSError(28, "No space left on device")

    srv = IngestServer(tmp_path / "ingest.sock", lambda r: None, flush=full)
    await srv.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        writer.write(_stream(_start(0, "unstored"), _metrics(0, "loss", 10)))
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        writer.close()
        await writer.wait_closed()
    finally:
        await srv.close()


async def test_a_producer_that_closes_right_after_sending_loses_nothing(tmp_path: Path) -> None:
    # Acknowledgements to a producer that has gone must not cost what it sent: 2 MB, then
    # close at once, with an acknowledgement due after every 64 KiB.
    got = Collected()
    srv = IngestServer(tmp_path / "ingest.sock", got.sink, on_run_end=got.ends.append)
    await srv.start()
    try:
        n = 400
        data = _stream(
            _start(0, "gone"),
            *(_metrics(0, "loss", 2048, first=b * 2048) for b in range(n)),
            RunEnd(0, 0, 0, 9_000),
        )
        assert len(data) > 2_000_000

        def produce() -> None:  # a blocking producer in its own thread, as a process would be
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(srv.path))
                s.sendall(data)
            # closed at once: what the kernel still holds is read after, acknowledgements fail

        await asyncio.to_thread(produce)
        assert await srv.wait_idle(10)
    finally:
        await srv.close()
    assert sum(len(m.values) for m in got.of(Metrics)) == n * 2048
    assert got.ends[0].exit_code == 0 and not got.of(Event)
