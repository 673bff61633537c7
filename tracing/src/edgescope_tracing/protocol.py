"""The collector's wire protocol: messages, and a client for headless tools (asyncio and blocking).

A connection is, after a short handshake, a trace: the 12-byte trace header, then trace frames,
with *control frames* between them. A control frame has the same layout as a trace frame but its
own sync mark (``E5 C0`` instead of ``E5 5C``) and a msgpack map as payload, so a reader can tell
the two apart from the first two bytes::

    sync (2 bytes) | payload length (u32 LE) | CRC-32 of the payload (u32 LE) | payload

Handshake (the server speaks first)::

    server: {"t": "hello", "v": 1, "host": str, "auth": "hmac-sha256" | None, "nonce": bytes}
    client: {"t": "start", "v": 1, "since": int | None, "auth": bytes | None}
    server: {"t": "ok", "first_seq": int, "next_seq": int}      then the trace header and frames
        or: {"t": "error", "message": str}                       then the server closes

After ``ok`` the server sends ``gap`` (records that will never come: ``first``..``last``),
``beat`` (nothing new for a while; ``next_seq`` is the head) and ``end`` (clean shutdown) controls.
The client sends nothing more. ``docs/wire-protocol.md`` is the full text.

The client is usable without the UI stack: :class:`AsyncClient` over any asyncio-style stream
pair (a TCP connection, or an SSH channel's streams), :class:`Client` over a blocking socket.
Both yield :class:`~edgescope_tracing.records.Record` objects and :class:`Gap` markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from ._frames import FRAME_HEAD_SIZE, HEADER_SIZE, MAX_PAYLOAD, SYNC, StreamDecoder, parse_header
from .errors import TraceError
from .records import Record

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_PORT",
    "MDNS_SERVICE_TYPE",
    "CONTROL_SYNC",
    "MAX_CONTROL",
    "AUTH_SCHEME",
    "NONCE_SIZE",
    "Gap",
    "Welcome",
    "ProtocolError",
    "ConnectError",
    "AuthError",
    "RefusedError",
    "ConnectionLost",
    "AsyncClient",
    "Client",
    "auth_response",
    "control_frame",
    "parse_control",
    "parse_port",
    "parse_target",
    "split_host_port",
]

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7313
"""The collector's TCP port unless ``--listen`` says otherwise."""
MDNS_SERVICE_TYPE = "_edgescope._tcp.local."
"""The DNS-SD service type a collector listening on the network advertises, and the TUI
browses for (``docs/devices.md``)."""
CONTROL_SYNC = b"\xe5\xc0"
"""Sync mark of a control frame (a trace frame's is ``E5 5C``)."""
MAX_CONTROL = 4096
"""The largest control payload either side accepts; anything larger closes the connection."""
AUTH_SCHEME = "hmac-sha256"
AUTH_CONTEXT = b"edgescope-auth-v1\x00"
NONCE_SIZE = 32
HANDSHAKE_TIMEOUT = 10.0
_HEAD = struct.Struct("<2sII")


class ProtocolError(TraceError):
    """The peer broke the protocol, or the connection failed. The message is one sentence.

    ProtocolError
    ├── ConnectError     could not reach the collector at all
    ├── AuthError        the collector wants a token, or refused the one given
    ├── RefusedError     the collector refused the request (e.g. protocol version)
    └── ConnectionLost   the stream ended without the collector's ``end``
    """


class ConnectError(ProtocolError):
    """Could not connect (refused, unreachable, name not found, timed out)."""


class AuthError(ProtocolError):
    """Authentication is required and no token was given, or the token was refused."""


class RefusedError(ProtocolError):
    """The collector answered the handshake with an error."""


class ConnectionLost(ProtocolError):
    """The connection ended or broke before the collector said ``end``."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records ``first``..``last`` (inclusive) will never arrive on this connection.

    ``reason`` says why: no longer retained by the collector, or damaged on its disk.
    """

    first: int
    last: int
    reason: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """What the collector said in the handshake."""

    version: int
    host: str
    auth: bool
    first_seq: int
    """The oldest sequence number the collector still holds."""
    next_seq: int
    """The sequence number the next record will get (the head of the stream)."""


# --- messages ------------------------------------------------------------------------------


def control_frame(msg: dict[str, Any]) -> bytes:
    """One control message, framed."""
    payload: bytes = msgpack.packb(msg, use_bin_type=True)
    return _HEAD.pack(CONTROL_SYNC, len(payload), zlib.crc32(payload)) + payload


def parse_head(head: bytes, limit: int = MAX_PAYLOAD) -> tuple[bool, int, int]:
    """``(is_control, length, crc)`` of a frame head, or ProtocolError for anything else."""
    sync, length, crc = _HEAD.unpack(head)
    if sync == CONTROL_SYNC:
        if length > min(limit, MAX_CONTROL * 16):
            raise ProtocolError(f"control message of {length} bytes is over the limit")
        return True, length, crc
    if sync == SYNC:
        if length > MAX_PAYLOAD:
            raise ProtocolError(f"frame of {length} bytes is over the {MAX_PAYLOAD}-byte limit")
        return False, length, crc
    raise ProtocolError("the peer does not speak the edgescope protocol")


def parse_control(payload: bytes, crc: int) -> dict[str, Any]:
    """A control message's map, checked; ProtocolError for damage or non-maps."""
    if zlib.crc32(payload) != crc:
        raise ProtocolError("control message with a bad checksum")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise ProtocolError("control message is not valid msgpack") from None
    if type(msg) is not dict or type(msg.get("t")) is not str:
        raise ProtocolError("control message is not a map with a type")
    return msg


def auth_response(token: bytes, nonce: bytes) -> bytes:
    """The client's proof of the token: HMAC-SHA256 over the server's nonce. Never the token."""
    return hmac.new(token, AUTH_CONTEXT + nonce, hashlib.sha256).digest()


def split_host_port(text: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address to ``(host, port
    text or None)``, unchecked beyond the brackets; ValueError (a phrase, without the text) if
    the brackets are wrong. The one parser of addresses: the collector's ``--listen``, ``tail``
    and the TUI's targets all go through it."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected ':PORT' after the address, not {rest!r}")
        return host, rest[1:] if rest else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    return text, None


def parse_port(port: str | int) -> int:
    """A TCP port number from its text (or an int from a file or an advert); ValueError (``port
    '0' is not a number from 1 to 65535``) otherwise. The one check of a port: targets, the
    devices file, mDNS adverts and ``ls --collector-port`` all go through it."""
    text = str(port) if type(port) is int else port
    if not isinstance(text, str) or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_target(target: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6addr]:PORT`` for IPv6) to ``(host, port)``; ValueError if malformed."""
    t = target.strip()
    if not t:
        raise ValueError("the target is empty; give HOST[:PORT]")
    try:
        host, port_s = split_host_port(t)
    except ValueError as e:
        raise ValueError(f"{target!r}: {e}") from None
    if not host:
        raise ValueError(f"{target!r} has no host")
    if not port_s:
        return host, default_port
    try:
        return host, parse_port(port_s)
    except ValueError as e:
        raise ValueError(f"{target!r}: {e}") from None


def _hello_checked(msg: dict[str, Any]) -> dict[str, Any]:
    if msg.get("t") == "error":
        raise RefusedError(f"the collector refused: {msg.get('message', 'no reason given')}")
    if msg.get("t") != "hello" or type(msg.get("v")) is not int:
        raise ProtocolError("the peer did not greet as an edgescope collector")
    return msg


def _start_message(
    hello: dict[str, Any], since: int | None, token: bytes | None, label: str
) -> dict[str, Any]:
    start: dict[str, Any] = {"t": "start", "v": PROTOCOL_VERSION, "since": since, "auth": None}
    scheme = hello.get("auth")
    if scheme is not None:
        nonce = hello.get("nonce")
        if scheme != AUTH_SCHEME or type(nonce) is not bytes or len(nonce) < 16:
            raise ProtocolError(f"{label} asks for an authentication this client does not know")
        if token is None:
            raise AuthError(f"{label} requires a token (--token-file)")
        start["auth"] = auth_response(token, nonce)
    return start


def _welcome(hello: dict[str, Any], ok: dict[str, Any], label: str) -> Welcome:
    t = ok.get("t")
    if t == "error":
        message = str(ok.get("message", "no reason given"))
        if ok.get("code") == "auth":
            raise AuthError(f"{label} refused the token: {message}")
        raise RefusedError(f"{label} refused the connection: {message}")
    if t != "ok" or type(ok.get("first_seq")) is not int or type(ok.get("next_seq")) is not int:
        raise ProtocolError(f"{label} sent an unexpected handshake answer")
    return Welcome(
        version=int(hello["v"]),
        host=str(hello.get("host", "")),
        auth=hello.get("auth") is not None,
        first_seq=ok["first_seq"],
        next_seq=ok["next_seq"],
    )


class _Fold:
    """Turns the frames after the handshake into records and gaps, filtered by ``since``."""

    def __init__(self, since: int | None, label: str) -> None:
        self.since = since
        self.decoder = StreamDecoder(header=False, name=label)
        self.expected: int | None = None
        self.ended: str | None = None
        self.head: int | None = None
        self.label = label

    def header(self, data: bytes) -> None:
        parse_header(data, self.label)

    def trace(self, frame: bytes) -> list[Record | Gap]:
        unknown = self.decoder.decoder.unknown_kinds
        records = self.decoder.feed(frame)
        out: list[Record | Gap] = []
        if self.decoder.decoder.unknown_kinds != unknown:
            # Records of kinds this version does not know take sequence numbers: no gap there.
            self.expected = None
        for rec in records:
            if self.expected is not None and rec.seq > self.expected:
                out.append(
                    Gap(
                        self.expected, rec.seq - 1, "damaged or undecodable on the collector's disk"
                    )
                )
            if self.expected is None or rec.seq >= self.expected:
                self.expected = rec.seq + 1
            if self.since is None or rec.seq >= self.since:
                out.append(rec)
        return out

    def control(self, msg: dict[str, Any]) -> list[Record | Gap]:
        t = msg.get("t")
        if t == "gap":
            first, last = msg.get("first"), msg.get("last")
            if type(first) is not int or type(last) is not int or last < first:
                raise ProtocolError(f"{self.label} sent a malformed gap")
            if self.since is not None:
                first = max(first, self.since)
            if self.expected is not None:
                first = max(first, self.expected)
            self.expected = last + 1
            if last < first:
                return []
            return [Gap(first, last, str(msg.get("reason", "")))]
        if t == "beat":
            head = msg.get("next_seq")
            self.head = head if type(head) is int else self.head
        elif t == "end":
            self.ended = str(msg.get("message", "the collector ended the stream"))
        return []


# --- asyncio client ------------------------------------------------------------------------


class AsyncReader(Protocol):
    async def readexactly(self, n: int) -> bytes: ...


class AsyncWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


class AsyncClient:
    """A stream of records from a collector, for asyncio code.

    ``await AsyncClient.connect(host, port, since=..., token=...)`` does the handshake (raising
    :class:`ConnectError`, :class:`AuthError`, :class:`RefusedError` or :class:`ProtocolError`
    with one sentence); ``async for item in client`` then yields records with ``seq >= since``
    (all of them from the keyframe where the collector started when ``since`` is None) and
    :class:`Gap` markers, until the collector ends the stream (the loop ends) or the
    connection breaks (:class:`ConnectionLost`). Resume with ``since = last seq + 1``.

    :meth:`over` runs the protocol over any stream pair, e.g. an SSH channel's.
    """

    def __init__(
        self, reader: AsyncReader, writer: AsyncWriter, welcome: Welcome, fold: _Fold
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.welcome = welcome
        self._fold = fold
        self.label = fold.label

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        since: int | None = None,
        token: bytes | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> AsyncClient:
        label = f"{host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except TimeoutError:
            raise ConnectError(f"cannot connect to {label}: timed out") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {label}: {_os_reason(e)}") from None
        try:
            return await cls.over(
                reader, writer, since=since, token=token, label=label, timeout=timeout
            )
        except BaseException:
            writer.close()
            raise

    @classmethod
    async def over(
        cls,
        reader: AsyncReader,
        writer: AsyncWriter,
        *,
        since: int | None = None,
        token: bytes | None = None,
        label: str = "the collector",
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> AsyncClient:
        """Do the handshake over an already open stream pair."""

        async def handshake() -> AsyncClient:
            hello = _hello_checked(await _read_control(reader, label))
            writer.write(control_frame(_start_message(hello, since, token, label)))
            await writer.drain()
            welcome = _welcome(hello, await _read_control(reader, label), label)
            fold = _Fold(since, label)
            fold.header(await _readexactly(reader, HEADER_SIZE, label))
            return cls(reader, writer, welcome, fold)

        try:
            return await asyncio.wait_for(handshake(), timeout)
        except TimeoutError:
            raise ProtocolError(f"{label} did not complete the handshake in time") from None

    @property
    def head(self) -> int | None:
        """The head ``next_seq`` the collector last told in a heartbeat."""
        return self._fold.head

    @property
    def end_message(self) -> str | None:
        """Why the collector ended the stream, once it has."""
        return self._fold.ended

    async def __aiter__(self) -> AsyncIterator[Record | Gap]:
        fold = self._fold
        while fold.ended is None:
            is_control, payload, head = await _read_frame(self.reader, self.label)
            if is_control:
                for item in fold.control(parse_control(payload, head[1])):
                    yield item
            else:
                for item in fold.trace(head[0] + payload):
                    yield item

    async def close(self) -> None:
        self.writer.close()
        wait_closed = getattr(self.writer, "wait_closed", None)
        if wait_closed is not None:
            # The peer may already be gone: closing is all that is left to do.
            with contextlib.suppress(OSError, ConnectionError):
                await wait_closed()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _readexactly(reader: AsyncReader, n: int, label: str) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ConnectionLost(f"{label} closed the connection mid-message") from None
        raise ConnectionLost(f"{label} closed the connection") from None
    except (ConnectionError, OSError) as e:
        raise ConnectionLost(f"connection to {label} broke: {_os_reason(e)}") from None


async def _read_frame(reader: AsyncReader, label: str) -> tuple[bool, bytes, tuple[bytes, int]]:
    head = await _readexactly(reader, FRAME_HEAD_SIZE, label)
    is_control, length, crc = parse_head(head)
    payload = await _readexactly(reader, length, label) if length else b""
    return is_control, payload, (head, crc)


async def _read_control(reader: AsyncReader, label: str) -> dict[str, Any]:
    is_control, payload, (_, crc) = await _read_frame(reader, label)
    if not is_control:
        raise ProtocolError(f"{label} sent trace data during the handshake")
    return parse_control(payload, crc)


# --- blocking client -----------------------------------------------------------------------


class Client:
    """The blocking twin of :class:`AsyncClient`, over a plain socket.

    ``Client.connect(host, port, since=..., token=...)``; iterate for records and gaps;
    ``close()`` (or use it as a context manager). ``idle_timeout`` bounds how long iteration
    waits with nothing from the collector (it sends a heartbeat every few seconds).
    """

    def __init__(self, sock: socket.socket, file: Any, welcome: Welcome, fold: _Fold) -> None:
        self.sock = sock
        self.welcome = welcome
        self._fold = fold
        self._file = file
        """The one buffered reader of the socket (the handshake's read-ahead lives in it)."""
        self.label = fold.label

    @classmethod
    def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        since: int | None = None,
        token: bytes | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = 60.0,
    ) -> Client:
        label = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ConnectError(f"cannot connect to {label}: timed out") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {label}: {_os_reason(e)}") from None
        f = sock.makefile("rb")
        try:
            hello = _hello_checked(_read_control_sync(f, label))
            sock.sendall(control_frame(_start_message(hello, since, token, label)))
            welcome = _welcome(hello, _read_control_sync(f, label), label)
            fold = _Fold(since, label)
            fold.header(_read_sync(f, HEADER_SIZE, label))
        except TimeoutError:
            f.close()
            sock.close()
            raise ProtocolError(f"{label} did not complete the handshake in time") from None
        except BaseException:
            f.close()
            sock.close()
            raise
        sock.settimeout(idle_timeout)
        return cls(sock, f, welcome, fold)

    @property
    def head(self) -> int | None:
        return self._fold.head

    @property
    def end_message(self) -> str | None:
        return self._fold.ended

    def __iter__(self) -> Iterator[Record | Gap]:
        fold = self._fold
        while fold.ended is None:
            try:
                head = _read_sync(self._file, FRAME_HEAD_SIZE, self.label)
                is_control, length, crc = parse_head(head)
                payload = _read_sync(self._file, length, self.label) if length else b""
            except TimeoutError:
                raise ConnectionLost(f"{self.label} sent nothing for too long") from None
            if is_control:
                yield from fold.control(parse_control(payload, crc))
            else:
                yield from fold.trace(head + payload)

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_sync(f: Any, n: int, label: str) -> bytes:
    try:
        data: bytes = f.read(n)
    except (ConnectionError, OSError) as e:
        if isinstance(e, TimeoutError):
            raise
        raise ConnectionLost(f"connection to {label} broke: {_os_reason(e)}") from None
    if len(data) < n:
        if data:
            raise ConnectionLost(f"{label} closed the connection mid-message")
        raise ConnectionLost(f"{label} closed the connection")
    return data


def _read_control_sync(f: Any, label: str) -> dict[str, Any]:
    head = _read_sync(f, FRAME_HEAD_SIZE, label)
    is_control, length, crc = parse_head(head)
    if not is_control:
        raise ProtocolError(f"{label} sent trace data during the handshake")
    return parse_control(_read_sync(f, length, label), crc)


def _os_reason(e: OSError) -> str:
    if isinstance(e, socket.gaierror):
        return "host name not found"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the collector running there?)"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__
