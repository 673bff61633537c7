"""Who gets a slot: handshake floods over real loopback TCP, and other local users.

A flooding peer binds its own loopback address (127.0.0.2, ...) so that its connections and the
real clients' (from 127.0.0.1) are told apart as they would be on a network. Every flood here is
bounded in count and in time (about two seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from edgescope_collector.server import ServerLimits, StreamServer
from edgescope_tracing.protocol import AsyncClient, RefusedError, control_frame
from test_server_support import RUN, ThreadedServer, append_all, metric, served

TOKEN = b"0123456789abcdef-secret"


class Flood:
    """``per_source`` connections from each of ``sources`` that never say a word; each one the
    server closes is opened again at once, until :meth:`stop`."""

    def __init__(self, port: int, sources: list[str], per_source: int) -> None:
        self.port = port
        self.opened = 0
        self.cut = 0
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._hold(src)) for src in sources for _ in range(per_source)
        ]

    async def _hold(self, source: str) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0)
                )
            except OSError:
                await asyncio.sleep(0.01)
                continue
            self.opened += 1
            try:
                stop = asyncio.ensure_future(self._stop.wait())
                eof = asyncio.ensure_future(reader.read())
                await asyncio.wait({stop, eof}, return_when=asyncio.FIRST_COMPLETED)
                for f in (stop, eof):
                    f.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                        await f
                if not self._stop.is_set():
                    self.cut += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def read_one(port: int) -> None:
    client = await AsyncClient.connect("127.0.0.1", port, since=0, token=TOKEN, timeout=5)
    try:
        async for item in client:
            assert getattr(item, "seq", None) == 0
            break
    finally:
        await client.close()


async def real_clients(port: int, n: int, server: StreamServer, limits: ServerLimits) -> int:
    """Connect ``n`` real clients one after another; how many read the stream."""
    ok = 0
    for _ in range(n):
        assert server.pending <= limits.max_pending
        await read_one(port)
        ok += 1
        await asyncio.sleep(0.05)
    return ok


def refusals_logged(lines: list[str]) -> int:
    """Connections the log says were refused or cut in the handshake, one by one or counted."""
    one_by_one = [m for m in lines if m.startswith("closing connection from ")]
    counted = [int(m.split()[0]) for m in lines if "(not logged one by one)" in m]
    return len(one_by_one) + sum(counted)


@pytest.mark.asyncio
async def test_a_handshake_flood_from_one_peer_locks_out_no_real_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The case that locked out 39 % of real clients: 70 silent connections held open."""
    limits = ServerLimits(handshake_timeout=1.0)
    with caplog.at_level(logging.WARNING, "edgescope.collector.server"):
        async with served(tmp_path, token=TOKEN, limits=limits) as (store, server):
            append_all(store, [RUN])
            flood = Flood(server.port, ["127.0.0.2"], 70)
            try:
                await asyncio.sleep(0.3)
                assert await real_clients(server.port, 25, server, limits) == 25
                assert server.pending <= limits.max_pending_per_source
            finally:
                await flood.stop()
            await asyncio.sleep(0.1)
            assert server.pending == 0
        refused = server.refused
    assert flood.opened > 70 and flood.cut > 0, "the flood ran and was cut"
    # Each refusal is in the log, a few line by line and the rest as a count: none unsaid,
    # and far fewer lines than connections.
    lines = [r.getMessage() for r in caplog.records]
    assert refusals_logged(lines) == refused >= flood.cut
    assert len(lines) < refused / 4


@pytest.mark.asyncio
async def test_a_flood_from_many_addresses_keeps_pending_bounded(tmp_path: Path) -> None:
    limits = ServerLimits(handshake_timeout=1.0, max_pending=16, max_pending_per_source=4)
    sources = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 sources x 6: over both caps
    async with served(tmp_path, token=TOKEN, limits=limits) as (store, server):
        append_all(store, [RUN])
        flood = Flood(server.port, sources, 6)
        try:
            await asyncio.sleep(0.3)
            assert await real_clients(server.port, 15, server, limits) == 15
            assert server.pending <= 16
        finally:
            await flood.stop()
        assert flood.cut > 0


@pytest.mark.asyncio
async def test_authenticated_clients_keep_their_slots_through_a_flood(tmp_path: Path) -> None:
    limits = ServerLimits(handshake_timeout=1.0, max_clients=4)
    async with served(tmp_path, token=TOKEN, limits=limits) as (store, server):
        append_all(store, [RUN])
        readers = [
            await AsyncClient.connect("127.0.0.1", server.port, since=0, token=TOKEN)
            for _ in range(4)
        ]
        flood = Flood(server.port, ["127.0.0.2", "127.0.0.3"], 40)
        try:
            await asyncio.sleep(0.5)
            append_all(store, [metric(i) for i in range(20)])
            for client in readers:
                got = []
                async for item in client:
                    got.append(getattr(item, "seq", None))
                    if len(got) == 21:
                        break
                assert got == list(range(21))
            assert server.authenticated == 4
            # The served slots are full: a fifth real client is told so, in a sentence.
            with pytest.raises(RefusedError, match="too many clients"):
                await read_one(server.port)
        finally:
            await flood.stop()
            for client in readers:
                await client.close()


@pytest.mark.asyncio
async def test_the_version_field_cannot_write_lines_into_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(tmp_path) as (_, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await reader.readexactly(10)
        forged = "1\n2026-12-03 10:00:00 INFO client 10.0.0.9 authenticated\r\x1b[2J"
        with caplog.at_level(logging.WARNING, "edgescope.collector.server"):
            writer.write(control_frame({"t": "start", "v": forged, "since": None, "auth": None}))
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
        assert b"is not supported" in data
        (line,) = [r.getMessage() for r in caplog.records if "not supported" in r.getMessage()]
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert line.startswith("closing connection from 127.0.0.1:")
        assert "protocol version '1\\n2026-12-03" in line


# --- loopback without a token: the collector's own user only ------------------------------


def _tail_as(uid: int, argv: list[str]) -> tuple[int, str]:
    """``edgescope ARGV`` in a forked child running as ``uid``: its exit code and its output.

    A fork, not a new interpreter: the test's Python may live where another user cannot read,
    so what the child needs is imported here first.
    """
    import encodings.idna  # noqa: F401 (socket.create_connection's host names)

    import edgescope_tracing.tokens  # noqa: F401

    import edgescope.cli.tail  # noqa: F401
    from edgescope.cli import main

    out_r, out_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the server's thread
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 70
        try:
            os.close(out_r)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as e:
            os.write(out_w, f"child failed: {e!r}\n".encode())
        finally:
            os._exit(code)
    os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        output = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another user needs root")
def test_without_a_token_another_local_user_is_refused(tmp_path: Path) -> None:
    s = ThreadedServer(tmp_path / "data")
    try:
        s.append([RUN])
        argv = ["tail", f"127.0.0.1:{s.port}", "--since", "0", "--count", "1"]
        other = _tail_as(65534, argv)
        mine = _tail_as(os.geteuid(), argv)
    finally:
        s.close()
    code, output = other
    assert code == 1
    assert output.splitlines() == [
        "edgescope: the collector refused: this collector has no token and serves only its own "
        "user (uid 0) on loopback, not uid 65534; run it with --token-file and use that token"
    ]
    assert mine[0] == 0, mine[1]
    assert len(mine[1].splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another user needs root")
def test_with_a_token_another_local_user_reads_by_proving_it(tmp_path: Path) -> None:
    """A token is how other users (and remote ones) are let in: it works for uid 65534 too."""
    home = Path(tempfile.mkdtemp(prefix="edgescope-other-user-"))  # tmp_path's parents are 0700
    token = home / "token"
    token.write_bytes(TOKEN + b"\n")
    os.chown(token, 65534, 65534)
    token.chmod(0o600)
    home.chmod(0o755)
    s = ThreadedServer(tmp_path / "data", token=TOKEN)
    try:
        s.append([RUN])
        argv = ["tail", f"127.0.0.1:{s.port}", "--since", "0", "--count", "1"]
        code, output = _tail_as(65534, [*argv, "--token-file", str(token)])
    finally:
        s.close()
        shutil.rmtree(home)
    assert code == 0, output
    assert len(output.splitlines()) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_the_socket_table_names_a_loopback_peers_user(host: str) -> None:
    import socket

    from edgescope_collector.peercred import loopback_peer_uid

    family = socket.AF_INET if "." in host and ":" not in host else socket.AF_INET6
    listen_on = "::" if host.startswith("::ffff:") else host
    try:
        server = socket.socket(family)
        server.bind((listen_on, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    with server:
        server.listen()
        port = server.getsockname()[1]
        with socket.socket(family) as client:
            client.connect((host, port))
            conn, peer = server.accept()
            with conn:
                ours = conn.getsockname()
                assert loopback_peer_uid((ours[0], ours[1]), (peer[0], peer[1])) == os.geteuid()
                # Not a socket of this machine: nobody to name.
                assert loopback_peer_uid((ours[0], ours[1]), (peer[0], 1)) is None
