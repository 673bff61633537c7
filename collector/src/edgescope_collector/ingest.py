"""The ingest socket: where SDK processes (several at once) stream their runs to the collector.

Each connection carries one trace stream, exactly the bytes of a trace file (header, then
frames), decoded here with :class:`~edgescope_tracing.StreamDecoder`. Run numbers are the
producer's own (the SDK's is 0); each run gets a number that is unique in the collector's
stream, and every record of the connection is rewritten to it (``RunStart``, ``RunEnd``,
metrics, stacks, events, process samples). A run start's pid is the producer's as this
collector sees it: an SDK in a container's pid namespace says its pid there, and the socket's
peer credentials say which process that is here (:func:`_pid_here`). The producer's keyframes
are dropped: the sink's writer makes its own. Records then go to ``sink``, on the event loop.

A connection that ends (EOF, error, damaged bytes) with runs still open gets, for each, an
:class:`Event` saying the producer vanished and a ``RunEnd(exit_code=None)``. Bytes that are not
a trace (wrong magic, newer version, a damaged frame) close that connection only, with an event
that says why; the server and other connections carry on. ``close()`` ends the runs still open
in the same way.

Acknowledgements: the collector tells each producer what it has stored, so that a producer
keeps (and can replay elsewhere) exactly what the collector could still lose. After the records
of a read are handed to ``sink``, and at most ``ACK_DELAY`` seconds later (at once after
``ACK_BYTES``), the server calls ``flush`` (the store writes its open frame to the segment file:
from then on a kill -9 of the collector does not lose it) and writes a 12-byte message back:
:mod:`edgescope_tracing.acks`: the stream offset up to which every frame is stored (see
``docs/wire-protocol.md``). A flush that fails sends no acknowledgement.

The socket's directory is created ``0700`` and the socket itself is ``0600``: only the user the
collector runs as may stream to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from edgescope_tracing import (
    MAX_PAYLOAD,
    Event,
    Keyframe,
    Record,
    RunEnd,
    RunStart,
    StreamDecoder,
    TraceError,
)
from edgescope_tracing.acks import ack_message

__all__ = ["ACK_BYTES", "ACK_DELAY", "IngestServer"]

READ_CHUNK = 64 * 1024
ACK_DELAY = 0.05
"""Seconds an acknowledgement may wait for more records (one flush for many reads)."""
ACK_BYTES = 64 * 1024
"""Bytes of stream after which an acknowledgement is sent at once."""
MAX_GAP = MAX_PAYLOAD + 64
"""Bytes a producer may send without completing a frame: more is garbage, not a slow frame."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _check_dir(path: Path) -> None:
    """Refuse a socket directory that someone else could swap the socket in."""
    st = os.stat(path)
    if st.st_uid not in (os.geteuid(), 0):
        raise OSError(errno.EPERM, f"it is owned by uid {st.st_uid}, not by us", str(path))
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise OSError(errno.EPERM, "others may write to it (and replace the socket)", str(path))


def _peer_pid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    return int.from_bytes(creds[:4], "little", signed=True) or None


def _pid_here(peer_pid: int | None, sdk_pid: int) -> int:
    """The producer's pid as this collector sees it.

    An SDK in a container with its own pid namespace says its own pid there (often 1); the
    kernel gives the socket's peer pid in the collector's namespace. Where the peer's
    ``NSpid`` (its pid in each namespace, outermost first) ends with the pid the SDK said, the
    peer pid is the same process, seen from here: the one to sample. Otherwise the SDK's pid
    stands (a producer that speaks for another process, or a peer we cannot see).
    """
    if peer_pid is None or peer_pid == sdk_pid:
        return sdk_pid
    try:
        with open(f"/proc/{peer_pid}/status", "rb") as f:
            status = f.read().decode("ascii", "replace")
    except OSError:
        return sdk_pid
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ns = [int(x) for x in line.split()[1:] if x.isdigit()]
            if len(ns) > 1 and ns[0] == peer_pid and ns[-1] == sdk_pid:
                return peer_pid
            break
    return sdk_pid


class _Connection:
    """One producer's stream: its decoder and its run numbers mapped to the stream's."""

    def __init__(self, number: int, peer_pid: int | None) -> None:
        self.number = number
        self.peer_pid = peer_pid
        self.decoder = StreamDecoder(name=f"ingest connection {number}")
        self.runs: dict[int, int] = {}
        """Producer's run number -> the collector stream's."""
        self.open: dict[int, RunStart] = {}
        """Runs (by the stream's number) that started here and have not ended."""
        self.unmapped = 0
        """Records that named a run this connection never started (dropped)."""
        self.frames = 0
        self.since_frame = 0
        """Bytes received since the last whole frame."""
        self.acked = 0
        """The stream offset last acknowledged."""
        self.ack_timer: asyncio.TimerHandle | None = None
        self.ack_out = bytearray()
        """Acknowledgement bytes not yet taken by the socket."""


class IngestServer:
    """An asyncio Unix stream server that decodes SDK trace streams into one sink."""

    def __init__(
        self,
        path: Path,
        sink: Callable[[Record], None],
        *,
        on_run_start: Callable[[RunStart], None] | None = None,
        on_run_end: Callable[[RunEnd], None] | None = None,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._sink = sink
        self._flush = flush
        self._on_run_start = on_run_start
        self._on_run_end = on_run_end
        self._server: asyncio.base_events.Server | None = None
        self._next_run = 0
        self._next_conn = 0
        self._conns: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen at ``path``: the parent directory is made ``0700``; a stale socket is removed.

        Raises ``OSError`` (``EADDRINUSE``) when another process is listening there, and
        ``OSError`` when the path cannot be used, including a directory that another user owns
        or may write to (then they could put their own socket in its place; a sticky directory
        such as /tmp is fine).
        """
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(parent, 0o700)
        _check_dir(parent)
        self._remove_stale()
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(self.path), limit=READ_CHUNK
        )
        os.chmod(self.path, 0o600)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, "it exists and is not a socket", str(self.path))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError:
            pass  # e.g. a full backlog or a timeout: someone is there
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, "another collector is listening on it", str(self.path))

    async def close(self) -> None:
        """Stop listening, end the connections (their open runs get a RunEnd), remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no producer is connected; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def connections(self) -> int:
        """Producers connected now."""
        return len(self._conns)

    def runs_from(self, first: int) -> None:
        """Number the runs of this session from ``first`` on (above those a store already holds,
        so a run of the last session and one of this never share a number)."""
        self._next_run = max(self._next_run, first)

    def allocate_run(self) -> int:
        """A run number of the collector's stream that no producer's run will get."""
        n = self._next_run
        self._next_run += 1
        return n

    # --- one connection -----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Connection(self._next_conn, _peer_pid(writer))
        self._next_conn += 1
        self._conns[conn.number] = conn
        self._idle.clear()
        why = "the producer vanished without ending its run"
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    for rec in conn.decoder.close():
                        self._forward(conn, rec)
                    self._check_damage(conn, at_end=True)
                    break
                for rec in conn.decoder.feed(data):
                    self._forward(conn, rec)
                self._want_ack(conn, writer)
                if self._check_damage(conn, at_end=False):
                    why = "its producer sent damaged data and was disconnected"
                    break
                if conn.decoder.frames != conn.frames:
                    conn.frames = conn.decoder.frames
                    conn.since_frame = 0
                else:
                    conn.since_frame += len(data)
                    if conn.since_frame > MAX_GAP:
                        self._device_event(
                            f"ingest: closed connection {conn.number} (pid {conn.peer_pid}): "
                            f"{conn.since_frame} bytes without a valid frame"
                        )
                        why = "its producer sent damaged data and was disconnected"
                        break
        except TraceError as e:
            self._device_event(f"ingest: closed a connection that is not an edgescope stream: {e}")
            why = "its producer sent bytes that are not an edgescope stream"
        except (ConnectionError, OSError) as e:
            why = f"the producer's connection failed ({e.strerror or e})"
        except asyncio.CancelledError:
            why = "the collector stopped while the run was still going"
        finally:
            if conn.ack_timer is not None:
                conn.ack_timer.cancel()
            self._end_open_runs(conn, why)
            del self._conns[conn.number]
            if not self._conns:
                self._idle.set()
            writer.close()
            # The peer may already be gone; closing is all that is left to do. A stop that
            # cancels this wait ends the handler here, as a cancel in the loop above does: a
            # task that ended cancelled makes asyncio (3.11) log a traceback for it.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    def _want_ack(self, conn: _Connection, writer: asyncio.StreamWriter) -> None:
        if conn.decoder.offset <= conn.acked or conn.ack_timer is not None:
            return
        if conn.decoder.offset - conn.acked >= ACK_BYTES:
            self._ack(conn, writer)
        else:
            loop = asyncio.get_running_loop()
            conn.ack_timer = loop.call_later(ACK_DELAY, self._ack, conn, writer)

    def _ack(self, conn: _Connection, writer: asyncio.StreamWriter) -> None:
        conn.ack_timer = None
        offset = conn.decoder.offset
        if offset <= conn.acked or writer.is_closing():
            return
        if self._flush is not None:
            try:
                self._flush()
            except OSError:
                return  # not stored: the producer keeps what it sent, and tries again later
        conn.acked = offset
        conn.ack_out += ack_message(offset)
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        try:
            # Straight to the socket, never through the transport: a producer that has sent
            # its stream and closed makes a write fail (EPIPE), and a failed transport write
            # would discard what it sent and we have not read yet. An acknowledgement that
            # cannot go now waits for the next (they are cumulative); a part sent is finished
            # first, so the messages stay whole.
            n = os.write(sock.fileno(), conn.ack_out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            conn.ack_out.clear()  # the producer is gone; reading what it sent goes on
            return
        del conn.ack_out[:n]

    def _check_damage(self, conn: _Connection, *, at_end: bool) -> bool:
        dec = conn.decoder
        bad = [d for d in dec.damage if not d.truncated]
        if bad or (dec.skipping is not None and not at_end):
            what = f"at byte {bad[0].offset}: {bad[0].reason}" if bad else f"({dec.skipping})"
            self._device_event(
                f"ingest: closed connection {conn.number} (pid {conn.peer_pid}): damaged data "
                f"{what}"
            )
            return True
        if at_end and dec.damage:
            self._device_event(
                f"ingest: connection {conn.number} (pid {conn.peer_pid}) ended mid-frame; "
                "its last frame was lost",
                severity=0,
            )
        return False

    def _device_event(self, message: str, severity: int = 1) -> None:
        self._sink(Event("ingest", message, run=-1, severity=severity, t_us=_now_us()))

    def _start_run(self, conn: _Connection, rec: RunStart) -> None:
        g = self.allocate_run()
        conn.runs[rec.run] = g
        start = dataclasses.replace(rec, run=g, pid=_pid_here(conn.peer_pid, rec.pid))
        conn.open[g] = start
        self._sink(start)
        if self._on_run_start is not None:
            self._on_run_start(start)

    def _forward(self, conn: _Connection, rec: Record) -> None:
        if isinstance(rec, Keyframe):
            # Dropped: the sink's writer makes its own. A run it restates that this connection
            # never started (a stream joined mid-way) starts here.
            for r in rec.runs:
                if r.run not in conn.runs:
                    self._start_run(conn, r)
            return
        if isinstance(rec, RunStart):
            self._start_run(conn, rec)
            return
        local = getattr(rec, "run", None)
        if local is None or (isinstance(rec, Event) and local == -1):
            self._sink(rec)
            return
        g = conn.runs.get(local)
        if g is None:
            conn.unmapped += 1
            if conn.unmapped == 1:
                self._device_event(
                    f"ingest: connection {conn.number} (pid {conn.peer_pid}) sent records of a "
                    f"run it never started (run {local}); they are dropped"
                )
            return
        out: Record = dataclasses.replace(cast(Any, rec), run=g)
        if isinstance(out, RunEnd):
            conn.open.pop(g, None)
            self._sink(out)
            if self._on_run_end is not None:
                self._on_run_end(out)
            return
        self._sink(out)

    def _end_open_runs(self, conn: _Connection, why: str) -> None:
        for g, start in list(conn.open.items()):
            t = _now_us()
            self._sink(
                Event(
                    "anomaly",
                    f"run {start.name!r} (pid {start.pid}) ended without a RunEnd: {why}",
                    run=g,
                    severity=2,
                    detail={"pid": start.pid, "reason": why},
                    t_us=t,
                )
            )
            end = RunEnd(g, None, 0, t)
            self._sink(end)
            if self._on_run_end is not None:
                self._on_run_end(end)
        conn.open.clear()
