"""The SDK's background side: drain the hot buffer, encode in batches, ship to a sink.

``log()`` only appends ``(step, time_ns, name, float)`` or ``(step, time_ns, {name: float})``
to a bounded deque. The shipper thread wakes every ``TICK`` seconds, moves what the deque holds
into per-metric columns, and every flush interval turns the columns into columnar
:class:`Metrics` records and hands them to the sink, which writes a frame to the trace file or
sends it to the collector.

Sinks:

- :class:`SocketSink`: a non-blocking Unix stream socket to the collector, carrying exactly the
  bytes of a trace file. Records wait unencoded while earlier bytes are still unsent, so a
  collector that is slow costs memory only up to ``MAX_BACKLOG_ITEMS`` (then the thread stops
  draining the hot buffer and ``log()`` counts what it drops).
- :class:`FileSink`: a :class:`~edgescope_tracing.TraceWriter`; a frame reaches the file (the
  page cache: it survives the death of the process) at least every flush interval.
- :class:`NullSink`: nowhere left to write; everything is counted as dropped.

Fallback: when the collector closes the connection, or takes nothing for ``stall_timeout``
seconds while bytes wait, the shipper closes the socket and writes the rest of the run to a new
file under ``EDGESCOPE_DIR``, starting with the run's ``RunStart`` and an event that says why.
Records that were encoded but not (wholly) sent are counted as dropped. When a file cannot be
written, the rest is dropped and counted. Each of these is said once on stderr.

Drops are counted in items: one per metric value (a key of one ``log()`` call), one per event,
one per stack-sample window. The total goes into the run's ``RunEnd.dropped``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgescope_tracing import (
    Event,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StackSamples,
    StreamEncoder,
    TraceError,
    TraceWriter,
)

__all__ = [
    "MAX_BACKLOG_ITEMS",
    "FileSink",
    "NullSink",
    "Shipper",
    "Sink",
    "SocketSink",
    "items_in",
    "notify",
]

TICK = 0.05
"""Seconds between the shipper's looks at the hot buffer."""
BATCH_VALUES = 16_384
"""Metric values collected in columns before they are emitted early (between flushes)."""
MAX_BACKLOG_ITEMS = 131_072
"""Items a sink may hold unsent before the shipper stops draining the hot buffer."""
SEND_CHUNK = 256 * 1024
"""Bytes of frames encoded at a time for the socket; more records wait unencoded."""

Item = tuple[int, int, dict[str, float]] | tuple[int, int, str, float] | Event | StackSamples


def items_in(rec: Record) -> int:
    """How many droppable items a record carries (the unit of ``RunEnd.dropped``)."""
    if isinstance(rec, Metrics):
        return len(rec.values)
    if isinstance(rec, RunStart | RunEnd):
        return 0
    return 1


def notify(message: str) -> None:
    """One line on stderr, written with ``os.write``: no lock that a fork could leave held."""
    with contextlib.suppress(OSError):
        os.write(2, f"edgescope: {message}\n".encode(errors="replace"))


class Sink(Protocol):
    where: str
    """The file path or socket address, for messages."""
    broken: str | None
    """Why this sink cannot take more (for a socket: the shipper falls back to a file)."""
    dropped: int
    can_fall_back: bool

    @property
    def backlog_items(self) -> int: ...

    def add(self, rec: Record) -> None: ...

    def pump(self, now: float, *, flush: bool) -> None:
        """Make progress without blocking; ``flush`` also sends or writes what is batched."""

    def close(self, deadline: float) -> None:
        """Deliver what is left (until ``deadline``, a monotonic time) and release the sink."""

    def abandon(self) -> tuple[list[Record], int]:
        """Give up: the records never encoded, and the items lost in flight (closed here)."""


class NullSink:
    """Nowhere to write: every item is counted as dropped."""

    can_fall_back = False
    backlog_items = 0

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.broken: str | None = reason
        self.dropped = 0

    def add(self, rec: Record) -> None:
        self.dropped += items_in(rec)

    def pump(self, now: float, *, flush: bool) -> None:
        pass

    def close(self, deadline: float) -> None:
        pass

    def abandon(self) -> tuple[list[Record], int]:
        return [], 0


class FileSink:
    """The run's own trace file."""

    can_fall_back = False
    backlog_items = 0

    def __init__(self, path: Path, flush_interval: float) -> None:
        self.path = path
        self.where = str(path)
        self.writer = TraceWriter(path, flush_interval=flush_interval, exclusive=True)
        self.broken: str | None = None
        self.dropped = 0

    def _fail(self, e: OSError) -> None:
        self.broken = f"cannot write {self.path}: {e.strerror or e}"

    def add(self, rec: Record) -> None:
        if self.broken is not None:
            self.dropped += items_in(rec)
            return
        try:
            self.writer.append(rec)
        except OSError as e:
            self._fail(e)
            self.dropped += items_in(rec)
        except (TraceError, TypeError, ValueError):
            # The SDK checks what it records; a record that still cannot be encoded is counted.
            self.dropped += items_in(rec)

    def pump(self, now: float, *, flush: bool) -> None:
        if flush and self.broken is None:
            try:
                self.writer.flush()
            except OSError as e:
                self._fail(e)

    def close(self, deadline: float) -> None:
        try:
            self.writer.close()
        except OSError as e:
            if self.broken is None:
                self._fail(e)

    def abandon(self) -> tuple[list[Record], int]:
        self.close(0.0)
        return [], 0


class SocketSink:
    """A trace stream to the collector over a connected Unix stream socket."""

    can_fall_back = True

    def __init__(self, sock: socket.socket, where: str, stall_timeout: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.where = where
        self.stall_timeout = stall_timeout
        self.broken: str | None = None
        self.dropped = 0
        self._enc = StreamEncoder()
        self._out = bytearray(self._enc.take())
        self._out_items = 0
        self._queue: deque[Record] = deque()
        self._queue_items = 0
        self._last_progress = time.monotonic()

    @property
    def backlog_items(self) -> int:
        return self._queue_items + self._out_items

    @property
    def idle(self) -> bool:
        """Everything handed over has been sent."""
        return not self._queue and not self._out

    def add(self, rec: Record) -> None:
        self._queue.append(rec)
        self._queue_items += items_in(rec)

    def _encode(self) -> None:
        enc = self._enc
        moved = 0
        while self._queue and enc.pending < SEND_CHUNK:
            rec = self._queue.popleft()
            n = items_in(rec)
            self._queue_items -= n
            try:
                enc.add(rec)
            except (TraceError, TypeError, ValueError):
                self.dropped += n
                continue
            moved += n
        self._out += enc.take()
        self._out_items += moved

    def pump(self, now: float, *, flush: bool) -> None:
        if self.broken is not None:
            return
        if flush and not self._out and self._queue:
            self._encode()
            self._last_progress = now
        while self._out:
            try:
                n = self.sock.send(self._out, socket.MSG_NOSIGNAL)
            except InterruptedError:
                continue
            except BlockingIOError:
                n = 0
            except OSError as e:
                self.broken = f"closed the connection ({e.strerror or e})"
                return
            if n == 0:
                if now - self._last_progress > self.stall_timeout:
                    self.broken = f"took nothing for {self.stall_timeout:g} s"
                return
            del self._out[:n]
            self._last_progress = now
            if not self._out:
                self._out_items = 0
                if flush and self._queue:
                    self._encode()
        if self._check_closed():
            self.broken = "closed the connection"

    def _check_closed(self) -> bool:
        """Whether the collector hung up (it never sends, so readable means EOF or error)."""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def close(self, deadline: float) -> None:
        while self.broken is None and not self.idle:
            now = time.monotonic()
            if now >= deadline:
                self.broken = "did not take the end of the run in time"
                return
            self.pump(now, flush=True)
            if self._out and self.broken is None:
                wait_ms = max(1, int(min(0.05, deadline - now) * 1000))
                try:
                    poller = select.poll()  # not select(): descriptors above 1023 are fine
                    poller.register(self.sock.fileno(), select.POLLOUT)
                    poller.poll(wait_ms)
                except (OSError, ValueError):
                    time.sleep(wait_ms / 1000)
        if self.broken is None:
            self.sock.close()

    def abandon(self) -> tuple[list[Record], int]:
        lost = self._out_items
        self._out.clear()
        self._out_items = 0
        rest = list(self._queue)
        self._queue.clear()
        self._queue_items = 0
        self.sock.close()
        return rest, lost


class Shipper:
    """The background thread of one run: hot buffer -> columns -> records -> sink."""

    def __init__(
        self,
        start: RunStart,
        sink: Sink,
        buf: deque[Any],
        *,
        flush_interval: float,
        fallback: Callable[[], Path] | None,
    ) -> None:
        self.start_rec = start
        self.sink = sink
        self.buf = buf
        self.flush_interval = flush_interval
        self._fallback = fallback
        self._cols: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self._col_values = 0
        self._sink_dropped = 0
        """Drops of sinks given up on (the current sink counts its own)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._waiters: deque[threading.Event] = deque()
        self._exit_code: int | None = None
        self._hot_dropped: Callable[[], int] = lambda: 0
        self._finished = threading.Event()
        self.thread = threading.Thread(target=self._main, name="edgescope-shipper", daemon=True)
        sink.add(start)

    @property
    def dropped(self) -> int:
        return self._sink_dropped + self.sink.dropped

    def start(self) -> None:
        self.thread.start()

    # --- the thread ---------------------------------------------------------------------

    def _main(self) -> None:
        try:
            next_flush = time.monotonic() + self.flush_interval
            while True:
                self._wake.wait(TICK)
                self._wake.clear()
                if self._stop.is_set():
                    break
                now = time.monotonic()
                self._drain(limited=True)
                waiting = []
                while self._waiters:
                    waiting.append(self._waiters.popleft())
                flush = bool(waiting) or now >= next_flush or self._col_values >= BATCH_VALUES
                if flush:
                    self._emit()
                    next_flush = now + self.flush_interval
                self._pump(now, flush=flush)
                for w in waiting:
                    w.set()
        except Exception as e:  # a bug here must not take the training run down with it
            notify(f"the shipper thread failed ({type(e).__name__}: {e}); recording stops here")
            self.sink = NullSink(self.sink.where, "the shipper thread failed")
            self._finished.set()
            return
        self._final()

    def sync(self, timeout: float) -> bool:
        """Have the thread drain and ship what is buffered now; False if it took too long."""
        if not self.thread.is_alive():
            return False
        done = threading.Event()
        self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def _drain(self, *, limited: bool) -> None:
        buf = self.buf
        cols = self._cols
        while buf:
            if limited and (
                self._col_values >= 4 * BATCH_VALUES or self.sink.backlog_items >= MAX_BACKLOG_ITEMS
            ):
                return
            item = buf.popleft()
            if type(item) is tuple:
                if len(item) == 4:  # one value: (step, time_ns, name, value)
                    step, t_ns, k, v = item
                    c = cols.get(k)
                    if c is None:
                        c = cols[k] = ([], [], [])
                    c[0].append(step)
                    c[1].append(t_ns // 1000)
                    c[2].append(v)
                    self._col_values += 1
                    continue
                step, t_ns, metrics = item
                t = t_ns // 1000
                for k, v in metrics.items():
                    c = cols.get(k)
                    if c is None:
                        c = cols[k] = ([], [], [])
                    c[0].append(step)
                    c[1].append(t)
                    c[2].append(v)
                self._col_values += len(metrics)
            else:
                # Keep order: metrics logged before an event or a stack window go first.
                self._emit()
                cols = self._cols  # _emit() started a new dict: values after the event go there
                self.sink.add(item)

    def _emit(self) -> None:
        if not self._cols:
            return
        for key, (steps, times, values) in self._cols.items():
            self.sink.add(Metrics(0, key, tuple(steps), tuple(times), tuple(values), times[0]))
        self._cols = {}
        self._col_values = 0

    def _pump(self, now: float, *, flush: bool) -> None:
        self.sink.pump(now, flush=flush)
        while self.sink.broken is not None and self.sink.can_fall_back:
            self._fall_back()

    def _fall_back(self) -> None:
        old = self.sink
        reason = f"the collector at {old.where} {old.broken}"
        rest, lost = old.abandon()
        self._sink_dropped += old.dropped + lost
        new: Sink
        if self._fallback is None:
            new = NullSink(old.where, reason)
            notify(f"{reason}; the rest of run {self.start_rec.name!r} is dropped (counted)")
        else:
            try:
                path = self._fallback()
                new = FileSink(path, self.flush_interval)
            except OSError as e:
                new = NullSink(str(e.filename or ""), str(e.strerror or e))
                notify(f"{reason}, and {e}; the rest of run {self.start_rec.name!r} is dropped")
            else:
                notify(f"{reason}; writing the rest of run {self.start_rec.name!r} to {path}")
        new.add(self.start_rec)
        new.add(
            Event(
                "log",
                f"{reason}; the rest of this run was written here",
                run=0,
                severity=1,
                detail={"collector": old.where, "lost_in_flight": lost},
                t_us=time.time_ns() // 1000,
            )
        )
        for rec in rest:
            if not isinstance(rec, RunEnd):
                new.add(rec)
        self.sink = new

    def _final(self) -> None:
        try:
            self._drain(limited=False)
            self._emit()
            deadline = time.monotonic() + max(2.0, self.flush_interval)
            self._pump(time.monotonic(), flush=True)
            while True:
                end = RunEnd(
                    0,
                    self._exit_code,
                    self._hot_dropped() + self.dropped,
                    time.time_ns() // 1000,
                )
                sink = self.sink
                sink.add(end)
                sink.close(deadline)
                if sink.broken is not None and sink.can_fall_back:
                    # The collector failed us at the end: the rest, with a fresh RunEnd, goes
                    # to a file.
                    self._fall_back()
                    deadline = time.monotonic() + 2.0
                    continue
                break
        finally:
            self._finished.set()

    # --- the caller's side ---------------------------------------------------------------

    def stop(self, exit_code: int | None, hot_dropped: Callable[[], int], timeout: float) -> bool:
        """End the run: drain, write ``RunEnd``, close. True if it finished within ``timeout``."""
        self._exit_code = exit_code
        self._hot_dropped = hot_dropped
        if self.thread.is_alive():
            self._stop.set()
            self._wake.set()
            self.thread.join(timeout)
        elif not self._finished.is_set():
            self._final()
        return self._finished.is_set()
