"""Who may read, and what bad input does: it closes that one connection, nothing else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from edgescope_collector.auth import Authenticator, TokenError, load_token
from edgescope_collector.config import ConfigError, add_arguments, config_from_args
from edgescope_collector.server import ServerLimits
from edgescope_tracing.protocol import (
    CONTROL_SYNC,
    AsyncClient,
    AuthError,
    ProtocolError,
    RefusedError,
    auth_response,
    control_frame,
)
from test_server_support import RUN, append_all, served

TOKEN = b"0123456789abcdef-secret"
FAST = ServerLimits(handshake_timeout=0.3)


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(1 << 20), timeout) + await asyncio.wait_for(
        reader.read(), timeout
    )


async def still_serves(port: int, token: bytes | None = None) -> None:
    client = await AsyncClient.connect("127.0.0.1", port, since=0, token=token)
    async for item in client:
        assert getattr(item, "seq", None) == 0
        break
    await client.close()


def frame(payload: bytes, sync: bytes = CONTROL_SYNC) -> bytes:
    return struct.pack("<2sII", sync, len(payload), zlib.crc32(payload)) + payload


@pytest.mark.asyncio
async def test_right_token_reads_wrong_token_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(tmp_path, token=TOKEN) as (store, server):
        append_all(store, [RUN])
        await still_serves(server.port, TOKEN)
        with (
            caplog.at_level(logging.WARNING, "edgescope.collector.server"),
            pytest.raises(AuthError, match="refused the token"),
        ):
            await AsyncClient.connect("127.0.0.1", server.port, token=b"x" * 20)
        assert any("authentication failed" in r.getMessage() for r in caplog.records)
        with pytest.raises(AuthError, match="requires a token"):
            await AsyncClient.connect("127.0.0.1", server.port)
        await still_serves(server.port, TOKEN)


@pytest.mark.asyncio
async def test_the_token_never_crosses_the_wire(tmp_path: Path) -> None:
    seen: list[bytes] = []
    nonce = os.urandom(32)

    async def fake_collector(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(
            control_frame(
                {"t": "hello", "v": 1, "host": "x", "auth": "hmac-sha256", "nonce": nonce}
            )
        )
        seen.append(await r.read(4096))
        w.close()

    srv = await asyncio.start_server(fake_collector, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    with pytest.raises(ProtocolError):  # the fake ends the handshake early
        await AsyncClient.connect("127.0.0.1", port, token=TOKEN, timeout=2)
    srv.close()
    await srv.wait_closed()
    assert TOKEN not in seen[0]
    start = msgpack.unpackb(seen[0][10:])
    assert start["auth"] == auth_response(TOKEN, nonce)
    assert Authenticator(TOKEN).verify(nonce, start["auth"])
    assert not Authenticator(TOKEN).verify(os.urandom(32), start["auth"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(os.urandom(300), id="random"),
        pytest.param(struct.pack("<2sII", CONTROL_SYNC, 0x7FFF_FFFF, 0), id="huge-length"),
        pytest.param(struct.pack("<2sII", b"\xe5\x5c", 10, 0) + b"x" * 10, id="trace-frame"),
        pytest.param(frame(b"\xc1\xc1\xc1"), id="bad-msgpack"),
        pytest.param(frame(b"\x93\x01\x02\x03"), id="not-a-map"),
        pytest.param(
            control_frame({"t": "start", "v": 1, "since": 0})[:-1] + b"\x01", id="bad-crc"
        ),
        pytest.param(control_frame({"t": "subscribe", "path": "/etc/passwd"}), id="other-request"),
        pytest.param(control_frame({"t": "start", "v": 1, "since": "/etc/passwd"}), id="bad-since"),
        pytest.param(control_frame({"t": "start", "v": 1, "since": -5}), id="negative-since"),
    ],
)
async def test_bad_input_closes_only_that_connection(tmp_path: Path, payload: bytes) -> None:
    async with served(tmp_path, limits=FAST) as (store, server):
        append_all(store, [RUN])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        data = await read_to_eof(reader)
        # The hello, maybe an error message, and the close: never a trace.
        assert b"\x89EDGSCP" not in data
        writer.close()
        await writer.wait_closed()
        await still_serves(server.port)


@pytest.mark.asyncio
async def test_slow_loris_and_half_open_connections_time_out(tmp_path: Path) -> None:
    async with served(tmp_path, limits=FAST) as (store, server):
        append_all(store, [RUN])
        conns = []
        start = control_frame({"t": "start", "v": 1, "since": 0, "auth": None})
        for part in (b"", start[:3], start[:-1]):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(part)
            conns.append((reader, writer))
        # A client that vanishes without a word.
        _, gone = await asyncio.open_connection("127.0.0.1", server.port)
        gone.transport.abort()
        await still_serves(server.port)
        for reader, writer in conns:
            data = await read_to_eof(reader, timeout=3)
            assert b"\x89EDGSCP" not in data
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.05)
        assert server.clients == 0


@pytest.mark.asyncio
async def test_bytes_after_the_handshake_close_the_connection(tmp_path: Path) -> None:
    async with served(tmp_path) as (store, server):
        append_all(store, [RUN])
        client = await AsyncClient.connect("127.0.0.1", server.port, since=0)
        client.writer.write(control_frame({"t": "start", "v": 1, "since": 0}))
        items = []
        with pytest.raises(ProtocolError, match="closed the connection"):
            async for item in client:
                items.append(item)
        await client.close()
        await still_serves(server.port)


@pytest.mark.asyncio
async def test_other_protocol_versions_are_refused_with_a_sentence(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await reader.readexactly(10)
        writer.write(control_frame({"t": "start", "v": 99, "since": None, "auth": None}))
        data = await read_to_eof(reader)
        assert b"protocol version 99 is not supported" in data
        writer.close()
        await writer.wait_closed()
    assert issubclass(RefusedError, Exception)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without --token-file"):
        config_from_args(_args("--listen", "0.0.0.0:7313"))
    cfg = config_from_args(_args("--listen", "0.0.0.0:7313", "--token-file", "t"))
    assert cfg.mdns, "on the network it advertises by default"
    assert not config_from_args(_args()).mdns
    assert config_from_args(_args()).host == "127.0.0.1"


def test_token_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_bytes(TOKEN + b"\n")
    good.chmod(0o600)
    assert load_token(good) == (TOKEN, None)
    good.chmod(0o644)
    assert "readable by other users" in (load_token(good)[1] or "")
    short = tmp_path / "short"
    short.write_text("abc")
    for path, text in (
        (tmp_path / "missing", "does not exist"),
        (short, "use at least 16"),
        (tmp_path, "not a regular file"),
    ):
        with pytest.raises(TokenError, match=text):
            load_token(path)
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(TokenError, match="is empty"):
        load_token(empty)
