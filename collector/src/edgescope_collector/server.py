"""The stream server: clients read the collector's stream from any retained point, then live.

Each client is one task that walks a cursor (segment, offset) forward:

- *catching up*: frames are read back from the segment files (in a worker thread), whole and
  checksum-checked, and sent; at the end of a closed segment the cursor moves to the next one,
  telling the client a ``gap`` if segments in between were deleted for space;
- *live*: once the cursor reaches the end of the open segment the client subscribes to the
  store's flushes and gets each new chunk of frames as it is written.

A live client's queue is bounded (``client_buffer`` bytes). A client that falls behind loses
its subscription, not data: its cursor goes back to catching up from disk where it stopped,
so the collector and the other clients never wait for it, and it only ever misses records the
store no longer retains, which it is told about as an explicit ``gap``. A client that stops
reading altogether is closed after ``stall_timeout``.

Input from clients is only the handshake: it must arrive whole within ``handshake_timeout``,
control messages are at most 4 KiB, and anything else (garbage, a wrong version, a failed
authentication, any byte after the handshake) closes that one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

from edgescope_tracing._frames import FRAME_HEAD_SIZE, HEADER_SIZE, header_bytes
from edgescope_tracing.protocol import (
    MAX_CONTROL,
    PROTOCOL_VERSION,
    ProtocolError,
    control_frame,
    parse_control,
    parse_head,
)

from .auth import Authenticator
from .store import Segment, SegmentStore, frame_span

__all__ = ["ServerLimits", "StreamServer"]

log = logging.getLogger("edgescope.collector.server")

READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    handshake_timeout: float = 5.0
    """Seconds a client has to complete the handshake (slow-loris guard)."""
    client_buffer: int = 4 * 1024 * 1024
    """Bytes queued for one live client before it is sent back to catching up from disk."""
    beat_interval: float = 5.0
    """A heartbeat is sent after this long with nothing new."""
    stall_timeout: float = 60.0
    """A client that takes nothing for this long is closed."""
    max_clients: int = 64


class _Drop(Exception):
    """This connection ends; the message says why (logged, never raised further)."""


class _Conn:
    """One client's live subscription: queued chunks, and whether it overflowed."""

    __slots__ = ("buffered", "gone", "overflowed", "peer", "queue", "wake")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.queue: deque[tuple[Segment, int, bytes]] = deque()
        self.buffered = 0
        self.overflowed = False
        self.gone = False
        self.wake = asyncio.Event()


class StreamServer:
    """Serves ``store`` over TCP on ``host:port`` (port 0 picks a free one: see ``port``)."""

    def __init__(
        self,
        store: SegmentStore,
        auth: Authenticator,
        host: str,
        port: int,
        *,
        limits: ServerLimits | None = None,
        hostname: str | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.host = host
        self.limits = limits or ServerLimits()
        self.hostname = hostname or socket.gethostname()
        self._port = port
        self._server: asyncio.Server | None = None
        self._live: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.served = 0
        self.refused = 0

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    @property
    def clients(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, reuse_address=True
        )
        self.store.listeners.append(self._on_frames)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; live clients get what is queued and ``end``; then all are closed."""
        self._stopping = True
        if self._on_frames in self.store.listeners:
            self.store.listeners.remove(self._on_frames)
        if self._server is not None:
            self._server.close()
        for c in self._live:
            c.wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if self._server is not None:
            await self._server.wait_closed()

    # --- the store's side: new frames for live clients -----------------------------------

    def _on_frames(self, seg: Segment, offset: int, data: bytes) -> None:
        limit = self.limits.client_buffer
        for c in list(self._live):
            if c.buffered + len(data) > limit:
                # Behind: drop the subscription, never the data; it catches up from disk.
                c.queue.clear()
                c.buffered = 0
                c.overflowed = True
                self._live.discard(c)
                log.info("client %s fell behind; it catches up from disk", c.peer)
            else:
                c.queue.append((seg, offset, data))
                c.buffered += len(data)
            c.wake.set()

    # --- one connection ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = _Conn(peer)
        watcher: asyncio.Task[None] | None = None
        try:
            since = await self._handshake(reader, writer, peer)
            self.served += 1
            log.info("client %s reads from %s", peer, "the head" if since is None else since)
            watcher = asyncio.create_task(self._watch(reader, conn))
            await self._serve(writer, conn, since)
        except _Drop as e:
            log.warning("closing connection from %s: %s", peer, e)
        except (ConnectionError, OSError) as e:
            log.info("client %s went away: %s", peer, e.strerror or type(e).__name__)
        except asyncio.CancelledError:
            # Shutdown past its grace period: this task is ours and ends here.
            log.info("client %s closed at shutdown", peer)
        finally:
            self._live.discard(conn)
            self._tasks.discard(task)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> int | None:
        if self.clients > self.limits.max_clients:
            self.refused += 1
            writer.write(control_frame({"t": "error", "message": "too many clients"}))
            raise _Drop("too many clients")
        nonce = self.auth.nonce() if self.auth.required else b""
        hello: dict[str, Any] = {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "host": self.hostname,
            "auth": self.auth.scheme if self.auth.required else None,
            "nonce": nonce,
        }
        writer.write(control_frame(hello))
        try:
            msg = await asyncio.wait_for(self._read_control(reader), self.limits.handshake_timeout)
        except TimeoutError:
            self.refused += 1
            raise _Drop(f"no handshake within {self.limits.handshake_timeout:g} s") from None
        except asyncio.IncompleteReadError:
            self.refused += 1
            raise _Drop("closed during the handshake") from None
        except ProtocolError as e:
            self.refused += 1
            raise _Drop(f"bad handshake: {e}") from None
        if msg.get("t") != "start":
            self.refused += 1
            raise _Drop(f"expected a start message, got {str(msg.get('t'))[:40]!r}")
        version = msg.get("v")
        if version != PROTOCOL_VERSION:
            self.refused += 1
            text = (
                f"protocol version {str(version)[:20]} is not supported; "
                f"this collector speaks {PROTOCOL_VERSION}"
            )
            writer.write(control_frame({"t": "error", "code": "version", "message": text}))
            raise _Drop(text)
        if not self.auth.verify(nonce, msg.get("auth")):
            self.refused += 1
            writer.write(
                control_frame({"t": "error", "code": "auth", "message": "authentication failed"})
            )
            raise _Drop("authentication failed")
        since = msg.get("since")
        if since is not None and (type(since) is not int or since < 0):
            self.refused += 1
            writer.write(
                control_frame(
                    {"t": "error", "code": "since", "message": "since must be a non-negative int"}
                )
            )
            raise _Drop("malformed since")
        ok = {"t": "ok", "first_seq": self.store.first_seq, "next_seq": self.store.next_seq}
        writer.write(control_frame(ok) + header_bytes())
        return since

    @staticmethod
    async def _read_control(reader: asyncio.StreamReader) -> dict[str, Any]:
        head = await reader.readexactly(FRAME_HEAD_SIZE)
        is_control, length, crc = parse_head(head, MAX_CONTROL)
        if not is_control:
            raise ProtocolError("a trace frame where a control message belongs")
        if length > MAX_CONTROL:
            raise ProtocolError(f"control message of {length} bytes is over the limit")
        return parse_control(await reader.readexactly(length), crc)

    async def _watch(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        """Clients send nothing after the handshake: end of input or any byte ends them."""
        with contextlib.suppress(ConnectionError, OSError):
            data = await reader.read(1)
            if data:
                log.warning("closing connection from %s: data after the handshake", conn.peer)
        conn.gone = True
        conn.wake.set()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), self.limits.stall_timeout)
        except TimeoutError:
            raise _Drop(f"took nothing for {self.limits.stall_timeout:g} s") from None

    async def _serve(self, writer: asyncio.StreamWriter, conn: _Conn, since: int | None) -> None:
        store = self.store
        seg, pos, gap = store.locate(since)
        if gap is not None:
            await self._send(writer, _gap(gap, "no longer retained by the collector"))
        fd = -1
        fd_seg: Segment | None = None
        live = False
        try:
            while not conn.gone:
                if self._stopping and not (live and conn.queue):
                    await self._send(
                        writer, control_frame({"t": "end", "message": "the collector stopped"})
                    )
                    return
                if live:
                    if conn.overflowed:
                        conn.overflowed = False
                        live = False
                        continue
                    if not conn.queue:
                        conn.wake.clear()
                        try:
                            await asyncio.wait_for(conn.wake.wait(), self.limits.beat_interval)
                        except TimeoutError:
                            beat = {"t": "beat", "next_seq": store.next_seq}
                            await self._send(writer, control_frame(beat))
                        continue
                    out = []
                    while conn.queue:
                        s, off, data = conn.queue.popleft()
                        conn.buffered -= len(data)
                        if s is not seg:
                            seg, pos = s, HEADER_SIZE
                        if off + len(data) <= pos:
                            continue
                        out.append(data[pos - off :] if off < pos else data)
                        pos = off + len(data)
                    if out:
                        await self._send(writer, b"".join(out))
                    continue
                # Catching up from the segment files (or from memory, where the store keeps a
                # segment that the full disk did not take).
                if fd_seg is not seg and seg.memory is None:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    try:
                        fd = os.open(seg.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    except FileNotFoundError:
                        # Deleted for space before we got to it.
                        fd_seg = None
                        nxt = store.segments[0]
                        await self._send(
                            writer,
                            _gap((seg.first_seq, nxt.first_seq - 1), "no longer retained"),
                        )
                        seg, pos = nxt, HEADER_SIZE
                        continue
                    fd_seg = seg
                end = seg.data_end
                if pos < end:
                    n = min(READ_CHUNK, end - pos)
                    if seg.memory is not None:
                        data = bytes(seg.memory[pos : pos + n])
                    else:
                        data = await asyncio.to_thread(os.pread, fd, n, pos)
                    if not data:
                        raise _Drop(f"segment {seg.path.name} is shorter than recorded")
                    good, skip = frame_span(data)
                    if good:
                        await self._send(writer, data[:good])
                    if skip > good:
                        log.warning("skipped %d damaged bytes in %s", skip - good, seg.path.name)
                    elif good == 0:
                        # A frame cut by the end of a recovered segment: nothing more there.
                        skip = end - pos
                    pos += max(good, skip)
                    continue
                if not seg.closed and store.retained(seg):
                    # Caught up with the open segment: from here on, live.
                    conn.overflowed = False
                    conn.queue.clear()
                    conn.buffered = 0
                    self._live.add(conn)
                    live = True
                    if fd >= 0:
                        os.close(fd)
                    fd, fd_seg = -1, None
                    continue
                after, between = store.after(seg)
                if after is None:
                    if self._stopping or not store.retained(seg):
                        await asyncio.sleep(0.05)
                        continue
                    raise _Drop("the store has no segment after a closed one")
                if between is not None:
                    await self._send(writer, _gap(between, "no longer retained"))
                seg, pos = after, HEADER_SIZE
        finally:
            if fd >= 0:
                os.close(fd)


def _gap(gap: tuple[int, int], reason: str) -> bytes:
    return control_frame({"t": "gap", "first": gap[0], "last": gap[1], "reason": reason})
