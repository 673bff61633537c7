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
authentication, any byte after the handshake) closes that one connection. Nothing a client
sends reaches the log unescaped.

Slots: connections still in the handshake (*pending*) are capped apart from the clients that
completed it, in total (``max_pending``) and per source address (``max_pending_per_source``; an
IPv6 source is its /64). A new connection over its source's cap closes that source's oldest
pending one; over the total, the oldest of the source holding the most. A real client's
handshake takes milliseconds, so the one cut is the one that waits: a peer that opens
connections and sends nothing holds at most a few pending slots, each for at most
``handshake_timeout``, and never one of the ``max_clients`` slots of those that authenticated.
Refusals are logged at most a few at a time, with a count of the rest.

Without a token the collector listens on loopback only, and serves only its own user (and
root): the client's uid is read from the kernel's socket table (:mod:`.peercred`); any other
local user is refused and told to use the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from edgescope_tracing.framing import FRAME_HEAD_SIZE, HEADER_SIZE, frame_span, header_bytes
from edgescope_tracing.protocol import (
    MAX_CONTROL,
    PROTOCOL_VERSION,
    ProtocolError,
    control_frame,
    parse_control,
    parse_head,
)

from .auth import Authenticator
from .peercred import PeerUids
from .store import Segment, SegmentStore

__all__ = ["ServerLimits", "StreamServer"]

log = logging.getLogger("edgescope.collector.server")

READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    handshake_timeout: float = 3.0
    """Seconds a client has to complete the handshake (slow-loris guard); two round trips."""
    client_buffer: int = 4 * 1024 * 1024
    """Bytes queued for one live client before it is sent back to catching up from disk."""
    beat_interval: float = 5.0
    """A heartbeat is sent after this long with nothing new."""
    stall_timeout: float = 60.0
    """A client that takes nothing for this long is closed."""
    max_clients: int = 64
    """Clients that completed the handshake."""
    max_pending: int = 32
    """Connections still in the handshake, from all sources together."""
    max_pending_per_source: int = 4
    """Connections still in the handshake from one address (an IPv6 /64)."""


class _Drop(Exception):
    """This connection ends; the message says why (logged, never raised further)."""


class _Handshake:
    """A connection in the handshake: where it comes from, and how to cut it short."""

    __slots__ = ("source", "writer")

    def __init__(self, source: str, writer: asyncio.StreamWriter) -> None:
        self.source = source
        self.writer = writer


class _LogBudget:
    """At most ``burst`` lines per ``period`` seconds; the rest are counted, and the count is
    logged when the period ends (or at :meth:`flush`), so none goes unsaid."""

    def __init__(self, burst: int = 5, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._start = 0.0
        self._used = 0
        self._held = 0
        self._timer: asyncio.TimerHandle | None = None

    def line(self, text: str) -> None:
        now = time.monotonic()
        if now - self._start >= self.period:
            self.flush()
            self._start, self._used = now, 0
        if self._used < self.burst:
            self._used += 1
            log.warning("%s", text)
            return
        self._held += 1
        if self._timer is None:
            delay = max(0.0, self._start + self.period - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            log.warning(
                "%d more connections were refused or closed in the handshake within %g s "
                "(not logged one by one)",
                self._held,
                self.period,
            )
            self._held = 0


def _source(peername: object) -> str:
    """The address a connection's pending cap is counted by (an IPv6 peer by its /64)."""
    if not isinstance(peername, tuple) or not peername:
        return str(peername)
    try:
        ip = ipaddress.ip_address(str(peername[0]).split("%")[0])
    except ValueError:
        return str(peername[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _shown(value: object, limit: int = 40) -> str:
    """A client-supplied value as it may appear in a log line or an error: escaped, short."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self._pending: dict[_Handshake, None] = {}
        """Connections in the handshake, oldest first."""
        self._per_source: dict[str, int] = {}
        self._authed = 0
        self._stopping = False
        self._refusals = _LogBudget()
        self.served = 0
        self.refused = 0
        self.uid = os.geteuid()
        """Loopback clients of this user (and root) need no token when none is configured."""
        self._uids = PeerUids()

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    @property
    def clients(self) -> int:
        """Open connections, in the handshake or served."""
        return len(self._tasks)

    @property
    def authenticated(self) -> int:
        """Clients that completed the handshake and are being served."""
        return self._authed

    @property
    def pending(self) -> int:
        """Connections still in the handshake."""
        return len(self._pending)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, reuse_address=True
        )
        self.store.listeners.append(self._on_frames)
        if not self.auth.required:
            log.info(
                "no token: serving loopback clients of this user (uid %d) and root only",
                self.uid,
            )

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
        self._refusals.flush()

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
        shake: _Handshake | None = None
        authed = False
        try:
            shake = self._admit(_source(peername), writer)
            since = await self._handshake(reader, writer, peer)
            self._release(shake)
            shake = None
            if self._authed >= self.limits.max_clients:
                self.refused += 1
                writer.write(control_frame({"t": "error", "message": "too many clients"}))
                raise _Drop("too many clients")
            self._authed += 1
            authed = True
            ok = {"t": "ok", "first_seq": self.store.first_seq, "next_seq": self.store.next_seq}
            writer.write(control_frame(ok) + header_bytes())
            self.served += 1
            log.info("client %s reads from %s", peer, "the head" if since is None else since)
            watcher = asyncio.create_task(self._watch(reader, conn))
            await self._serve(writer, conn, since)
        except _Drop as e:
            if authed:
                log.warning("closing connection from %s: %s", peer, e)
            else:
                self._refusals.line(f"closing connection from {peer}: {e}")
        except (ConnectionError, OSError) as e:
            log.info("client %s went away: %s", peer, e.strerror or type(e).__name__)
        except asyncio.CancelledError:
            # Shutdown past its grace period: this task is ours and ends here.
            log.info("client %s closed at shutdown", peer)
        finally:
            if shake is not None:
                self._release(shake)
            if authed:
                self._authed -= 1
            self._live.discard(conn)
            self._tasks.discard(task)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            writer.close()
            # A cancel here (the stop's grace is over) ends the handler as one above does: a
            # task that ended cancelled makes asyncio (3.11) log a traceback for it.
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def _admit(self, source: str, writer: asyncio.StreamWriter) -> _Handshake:
        """A pending slot for a new connection (_Drop when the served clients are full)."""
        limits = self.limits
        if self._authed >= limits.max_clients:
            self.refused += 1
            writer.write(control_frame({"t": "error", "message": "too many clients"}))
            raise _Drop("too many clients")
        # A real client's handshake takes milliseconds: a connection that is still pending
        # when room is needed is the one to cut. First within the source, then the source
        # that holds the most.
        if self._per_source.get(source, 0) >= limits.max_pending_per_source:
            self._evict(source)
        elif len(self._pending) >= limits.max_pending:
            most = max(self._per_source.values())
            self._evict(next(s for s, n in self._per_source.items() if n == most))
        shake = _Handshake(source, writer)
        self._pending[shake] = None
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return shake

    def _evict(self, source: str) -> None:
        """Close the oldest pending connection from ``source`` (its task logs and ends it)."""
        victim = next(h for h in self._pending if h.source == source)
        self._release(victim)
        victim.writer.transport.abort()  # its task counts and logs the refusal

    def _release(self, shake: _Handshake) -> None:
        if shake in self._pending:
            del self._pending[shake]
            left = self._per_source[shake.source] - 1
            if left:
                self._per_source[shake.source] = left
            else:
                del self._per_source[shake.source]

    async def _peer_uid(self, writer: asyncio.StreamWriter) -> int | None:
        ours, theirs = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        if isinstance(ours, tuple) and isinstance(theirs, tuple):
            return await self._uids.uid((ours[0], ours[1]), (theirs[0], theirs[1]))
        return None

    async def _local_user_check(self, writer: asyncio.StreamWriter) -> None:
        """Without a token, only this user (or root) may read: refuse any other local user."""
        uid = await self._peer_uid(writer)
        if uid is not None and uid in (self.uid, 0):
            return
        self.refused += 1
        who = f"uid {uid}" if uid is not None else "a peer whose user cannot be told"
        text = (
            f"this collector has no token and serves only its own user (uid {self.uid}) "
            f"on loopback, not {who}; run it with --token-file and use that token"
        )
        writer.write(control_frame({"t": "error", "code": "auth", "message": text}))
        raise _Drop(f"refused {who}: no token, and not the collector's user")

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> int | None:
        """The client's ``since`` once it has proved who it is; _Drop if it does not."""
        if not self.auth.required:
            await self._local_user_check(writer)
        # The deadline is the client's: it starts once our own checks are done.
        deadline = asyncio.get_running_loop().time() + self.limits.handshake_timeout
        nonce = self.auth.nonce() if self.auth.required else b""
        hello: dict[str, Any] = {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "host": self.hostname,
            "auth": self.auth.scheme if self.auth.required else None,
            "nonce": nonce,
        }
        writer.write(control_frame(hello))
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            msg = await asyncio.wait_for(self._read_control(reader), left)
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
            raise _Drop(f"expected a start message, got {_shown(msg.get('t'))}")
        version = msg.get("v")
        if version != PROTOCOL_VERSION:
            self.refused += 1
            text = (
                f"protocol version {_shown(version, 20)} is not supported; "
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
