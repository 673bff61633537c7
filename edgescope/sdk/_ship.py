"""The SDK's shipping side: drain the hot buffer, encode columnar batches, write or send them.

``log()`` only appends ``(step, time_ns, name, float)`` or ``(step, time_ns, {name: float})``
to a deque. Two threads move what it holds into the trace, both through
:meth:`Shipper.ship`, one at a time under the shipper's lock:

- the shipper thread, every ``TICK`` seconds: it drains the deque into per-metric columns and,
  every flush interval (or once ``BATCH_VALUES`` values wait), turns them into columnar
  :class:`Metrics` records for the sink;
- the caller of ``log()`` itself, when it finds the deque full (**caller-runs**): it drains the
  whole deque, encodes it and hands it to the sink before its value goes in.

Why caller-runs: in CPython the shipper thread shares the GIL with the training loop, so a loop
that logs as fast as Python goes outruns it, and a bounded buffer must then either drop, grow
without bound, or make the caller pay. Dropping is what this SDK did before (two thirds of a
fast loss curve lost, silently); growing breaks the memory bound. So the caller pays: at an
ordinary rate the deque never fills and ``log()`` is an append; under overload each
``buffer_size``-th call does the encoding of the batch (a few ms for 32,768 values), which is
the cost the work has anyway, and nothing is lost. Memory stays bounded: the deque holds at most
``buffer_size`` calls plus one per thread that logs at the same moment.

Sinks:

- :class:`FileSink`: the run's own trace file. A write that fails (disk full, quota, file size
  limit, an I/O error) is said once on stderr; the bytes that could not be written are held in
  memory, up to ``MAX_HELD_BYTES``, and written again every ``RETRY_INTERVAL`` seconds; past
  that bound items are dropped and counted, and when the file takes bytes again a ``gap`` event
  with the count and the time range goes into the trace, then recording resumes.
- :class:`SocketSink`: a Unix stream socket to the collector, carrying exactly the bytes of a
  trace file. It keeps every record until the collector acknowledges that it has stored it
  (:mod:`edgescope_tracing.acks`), at most ``MAX_BACKLOG_ITEMS`` items; above that the shipper
  waits for the collector (the caller of ``log()`` waits with it): a collector that reads
  slowly slows the loop down rather than losing values.
- :class:`NullSink`: nowhere left to write; everything is counted as dropped.

Fallback: when the collector hangs up, or neither takes bytes nor confirms any for
``stall_timeout`` seconds while records wait, the socket is closed and the rest of the run is
written to a new file under ``EDGESCOPE_DIR``: the run's ``RunStart``, an event that says why
(its ``replayed`` counts the items the collector had been sent but had not confirmed), those
items, then the rest. So nothing is in neither place; only what the collector stored in its
last moments without confirming it may be in both. That is the longest a call of ``log()``
can wait: the stall timeout, once per run. While the run is in the file, the shipper tries the
collector again now and then; a new connection gets the run's start and takes over only once
the collector confirms storing it, so a collector that still hangs costs the loop nothing (the
tries back off to once a minute). When no file can be written either, the rest is
dropped and counted. Each of these is said once on stderr.

Drops are counted in items: one per metric value (a key of one ``log()`` call), one per event,
one per stack-sample window. The total goes into the run's ``RunEnd.dropped``.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import compress, islice, repeat
from pathlib import Path
from typing import Any, Protocol

from edgescope_tracing import (
    MAX_PAYLOAD,
    Event,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StackSamples,
    StreamEncoder,
    TraceError,
)
from edgescope_tracing.acks import parse_acks

__all__ = [
    "MAX_BACKLOG_ITEMS",
    "MAX_HELD_BYTES",
    "FileSink",
    "NullSink",
    "Shipper",
    "Sink",
    "SocketSink",
    "items_in",
    "notify",
]

TICK = 0.05
"""Seconds between the shipper thread's looks at the hot buffer."""
BATCH_VALUES = 16_384
"""Metric values collected in columns before they are emitted early (between flushes)."""
MAX_BACKLOG_ITEMS = 65_536
"""Items a socket sink may hold unconfirmed before the shipper (and the caller) waits for it."""
SOCKET_END_TIMEOUT = 12.0
"""Seconds ``finish()`` waits for a collector that still confirms to confirm the run's end
(less than the SDK's finish timeout, 15 s, so that the rest can still go to a file)."""
RECONNECT_INTERVAL = 2.0
"""Seconds between attempts to re-attach a run that fell back to a file to its collector."""
RECONNECT_MAX = 60.0
"""The longest wait between attempts, after collectors that took the connection but did not
confirm the run's start (a hung one): each such attempt doubles the wait."""
FILE_END_TIMEOUT = 2.0
"""Seconds ``finish()`` retries a file that cannot be written (a full disk)."""
SEND_CHUNK = 256 * 1024
"""Bytes of frames encoded at a time for the socket; more records wait unencoded."""
FRAME_BYTES = MAX_PAYLOAD - 16 * 1024
"""Payload after which the file sink closes its open frame (big frames cost fewer bytes)."""
MAX_HELD_BYTES = 8 * 1024 * 1024
"""Encoded bytes the file sink holds in memory while its file cannot be written."""
RETRY_INTERVAL = 1.0
"""Seconds between attempts to write to a file that failed."""
_MANY_KEYS = 8
"""One-value calls under more distinct names than this in one batch take the per-item path."""
MIN_STRETCH = 128
"""Values between two cuts of a column at pauses (:func:`pauses`): a record header's worth."""
_NARROW = 127
"""The largest time delta (microseconds) stored in one byte."""
_WINDOW = 32
"""Deltas per window in which :func:`_wide_deltas` first compares only the ends."""

Item = tuple[int, int, dict[str, float]] | tuple[int, int, str, float] | Event | StackSamples
_call = operator.call
_floordiv = operator.floordiv
_get0, _get1, _get2, _get3 = (operator.itemgetter(i) for i in range(4))


class _Mixed(Exception):
    """A batch that the column-at-a-time paths do not take (it goes item by item)."""


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


def take_all(buf: deque[Any]) -> list[Any]:
    """Pop what the deque holds now, oldest first (appends made meanwhile stay in it)."""
    return list(map(_call, repeat(buf.popleft, len(buf))))


# --- columns --------------------------------------------------------------------------------


class Columns:
    """Metric values by name, as three parallel lists, in the order they were logged."""

    __slots__ = ("cols", "values")

    def __init__(self) -> None:
        self.cols: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self.values = 0

    def _col(self, key: str) -> tuple[list[int], list[int], list[float]]:
        c = self.cols.get(key)
        if c is None:
            c = self.cols[key] = ([], [], [])
        return c

    def add_calls(self, calls: list[Any]) -> None:
        """Add ``log()`` tuples (no events): whole columns at a time where the batch allows."""
        if not calls:
            return
        try:
            if len(calls[0]) == 4:
                self._add_one_value_calls(calls)
            else:
                self._add_dict_calls(calls)
        except _Mixed:
            self._add_each(calls)

    def _add_one_value_calls(self, calls: list[Any]) -> None:
        try:
            vals = list(map(_get3, calls))
        except IndexError:  # a dict call among them
            raise _Mixed from None
        names = list(map(_get2, calls))
        steps = list(map(_get0, calls))
        us = list(map(_floordiv, map(_get1, calls), repeat(1000)))
        name = names[0]
        if names.count(name) == len(names):
            c = self._col(name)
            c[0].extend(steps)
            c[1].extend(us)
            c[2].extend(vals)
        else:
            distinct = dict.fromkeys(names)  # first seen first
            if len(distinct) > _MANY_KEYS:
                raise _Mixed
            for name in distinct:
                mask = list(map(name.__eq__, names))
                c = self._col(name)
                c[0].extend(compress(steps, mask))
                c[1].extend(compress(us, mask))
                c[2].extend(compress(vals, mask))
        self.values += len(vals)

    def _add_dict_calls(self, calls: list[Any]) -> None:
        dicts = list(map(_get2, calls))
        first = dicts[0]
        if type(first) is not dict or set(map(len, dicts)) != {len(first)}:
            raise _Mixed
        try:
            # All the same size, each with every key of the first: the same keys in each.
            columns = [(k, list(map(operator.itemgetter(k), dicts))) for k in first]
        except (KeyError, TypeError, IndexError):  # TypeError, IndexError: a one-value call
            raise _Mixed from None
        steps = list(map(_get0, calls))
        us = list(map(_floordiv, map(_get1, calls), repeat(1000)))
        for k, column in columns:
            c = self._col(k)
            c[0].extend(steps)
            c[1].extend(us)
            c[2].extend(column)
        self.values += len(dicts) * len(first)

    def _add_each(self, calls: list[Any]) -> None:
        for item in calls:
            if len(item) == 4:
                step, t_ns, k, v = item
                c = self._col(k)
                c[0].append(step)
                c[1].append(t_ns // 1000)
                c[2].append(v)
                self.values += 1
                continue
            step, t_ns, metrics = item
            t = t_ns // 1000
            for k, v in metrics.items():
                c = self._col(k)
                c[0].append(step)
                c[1].append(t)
                c[2].append(v)
            self.values += len(metrics)

    def take(self) -> list[Metrics]:
        """The columns as records (one or more per name, see :func:`pauses`), and empty again."""
        out = []
        for k, (s, t, v) in self.cols.items():
            cuts = pauses(t)
            if not cuts:
                out.append(Metrics(0, k, tuple(s), tuple(t), tuple(v), t[0]))
                continue
            ss, ts, vs = tuple(s), tuple(t), tuple(v)  # a tuple's slices are tuples: one copy
            lo = 0
            for hi in [*cuts, len(t)]:
                out.append(Metrics(0, k, ss[lo:hi], ts[lo:hi], vs[lo:hi], ts[lo]))
                lo = hi
        self.cols = {}
        self.values = 0
        return out


def pauses(times_us: list[int]) -> list[int]:
    """Where to cut a metric's column so that its time deltas fit one byte between the cuts.

    The trace format stores a batch's times as deltas of one width, the widest the batch needs
    (:func:`edgescope_tracing._codec.encode_ints`). A loop that logs as fast as it goes calls
    ``log()`` a microsecond or less apart, but it stops for milliseconds now and then (the
    shipper's turn at the GIL, the caller encoding a full buffer, the kernel's scheduler): one
    such pause made the batch's 2,048 deltas two or four bytes wide instead of one (5.3 to 5.8
    bytes a value instead of 5). A new record at the pause costs its header (~40 bytes) instead.

    A cut is made at a delta that does not fit a byte where the stretch of one-byte deltas
    before it or after it holds at least ``MIN_STRETCH`` values; a column whose deltas are all
    wide (a slow loop), or whose pauses come closer together, is not cut there.
    """
    n = len(times_us)
    if n <= MIN_STRETCH:
        return []
    wide = _wide_deltas(times_us)
    cuts: list[int] = []
    before = 0
    for j, p in enumerate(wide):
        after = wide[j + 1] if j + 1 < len(wide) else n
        if after - p >= MIN_STRETCH or p - before >= MIN_STRETCH:
            cuts.append(p)
        before = p
    return cuts


def _wide_deltas(t: list[int]) -> list[int]:
    """The positions ``i`` where ``t[i] - t[i - 1]`` does not fit one byte.

    Looked for only in windows of ``_WINDOW`` deltas whose span does not fit a byte: in a
    window that spans less, no delta can be wider (times do not go back, but for a clock that
    is set back: then a batch is only wider than it need be). A fast loop's column is read
    at a few ns a value instead of the ~50 that a look at every delta costs.
    """
    n = len(t)
    heads = t[::_WINDOW]
    spans = list(map(operator.sub, islice(heads, 1, None), heads))
    spans.append(t[-1] - heads[-1])
    out: list[int] = []
    for k in compress(range(len(spans)), map(operator.gt, spans, repeat(_NARROW))):
        lo = k * _WINDOW
        hi = min(lo + _WINDOW + 1, n)
        seg = t[lo:hi]
        deltas = map(abs, map(operator.sub, islice(seg, 1, None), seg))
        out.extend(compress(range(lo + 1, hi), map(operator.gt, deltas, repeat(_NARROW))))
    return out


def split_events(items: list[Any]) -> list[tuple[list[Any], Any]]:
    """``items`` as runs of ``log()`` tuples, each followed by the event after it (or None)."""
    types = list(map(type, items))
    if types.count(tuple) == len(items):
        return [(items, None)]
    out: list[tuple[list[Any], Any]] = []
    lo = 0
    for i, tp in enumerate(types):
        if tp is not tuple:
            out.append((items[lo:i], items[i]))
            lo = i + 1
    out.append((items[lo:], None))
    return out


# --- sinks ------------------------------------------------------------------------------------


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

    def wait(self, timeout: float) -> None:
        """Block at most ``timeout`` seconds until the sink may make progress."""

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

    def wait(self, timeout: float) -> None:
        pass

    def close(self, deadline: float) -> None:
        pass

    def abandon(self) -> tuple[list[Record], int]:
        return [], 0


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)


class FileSink:
    """The run's own trace file, written with ``os.write``; a failed write is held and retried.

    ``full`` says why the file takes no bytes now (None while it does). Meanwhile the encoded
    bytes wait in ``held`` (at most ``MAX_HELD_BYTES``); a record that would go past that bound
    is dropped and counted, and its time joins the gap that a ``gap`` event reports once the
    file takes bytes again. Bytes are written in order, so a frame cut by a full disk is
    completed when space returns; a process that dies meanwhile leaves a truncated last frame,
    which readers skip as they skip any crash's.
    """

    can_fall_back = False
    backlog_items = 0

    def __init__(self, path: Path, flush_interval: float, run_name: str = "") -> None:
        self.path = path
        self.where = str(path)
        self.run_name = run_name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, 0o644)
        self._enc = StreamEncoder()
        self.held = bytearray(self._enc.take())
        self.flush_interval = flush_interval
        self.broken: str | None = None
        self.full: str | None = None
        self.dropped = 0
        self._warned = False
        self._retry_at = 0.0
        self._gap: list[int] = []
        """Dropped while full: [items, first t_us, last t_us]."""
        self._gap_reason = ""
        self._enc_items = 0
        """Items encoded into the open frame (not yet in ``held``)."""
        self._chunks: deque[list[int]] = deque()
        """[bytes not yet written, items] of each chunk of ``held``, oldest first."""
        self._write()

    def add(self, rec: Record) -> None:
        if self._fd is None:
            self.dropped += items_in(rec)
            return
        if (
            self.full is not None
            and len(self.held) + self._enc.pending >= MAX_HELD_BYTES
            and items_in(rec)  # a RunStart or RunEnd is always kept: the run must end
        ):
            self._drop(rec)
            return
        try:
            self._enc.add(rec)
        except (TraceError, TypeError, ValueError) as e:
            # The SDK checks what it records; a record that still cannot be encoded is counted.
            self.dropped += items_in(rec)
            notify(f"a record of run {self.run_name!r} cannot be written ({e}); dropped")
            return
        self._enc_items += items_in(rec)
        if self._enc.pending >= FRAME_BYTES:
            self._take()
            if self.full is None:
                self._write()

    def _drop(self, rec: Record) -> None:
        n = items_in(rec)
        self.dropped += n
        t = rec.t_us
        t_last = rec.times_us[-1] if isinstance(rec, Metrics) and rec.times_us else t
        if self._gap:
            self._gap[0] += n
            self._gap[2] = max(self._gap[2], t_last)
        else:
            self._gap = [n, t, t_last]
            self._gap_reason = self.full or ""

    def _take(self, data: bytes | None = None) -> None:
        """Move the encoder's bytes (or ``data``, which holds them) to ``held``."""
        if data is None:
            data = self._enc.take()
        if data:
            self.held += data
            self._chunks.append([len(data), self._enc_items])
            self._enc_items = 0

    @property
    def unwritten_items(self) -> int:
        """Items whose bytes have not all reached the file (at most one chunk too many)."""
        return self._enc_items + sum(c[1] for c in self._chunks)

    def _write(self) -> bool:
        """Write what is held; on failure keep the rest and note why. True when all went."""
        fd = self._fd
        if fd is None:
            return False
        held = self.held
        while held:
            try:
                n = os.write(fd, held)
            except InterruptedError:
                continue
            except OSError as e:
                self._stall(e)
                return False
            del held[:n]
            chunks = self._chunks
            while n and chunks:
                c = chunks[0]
                k = min(n, c[0])
                c[0] -= k
                n -= k
                if not c[0]:
                    chunks.popleft()
        if self.full is not None:
            self._resume()
        return True

    def _stall(self, e: OSError) -> None:
        self.full = f"cannot write {self.path}: {_reason(e)}"
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if not self._warned:
            self._warned = True
            notify(
                f"{self.full}; run {self.run_name!r} keeps up to {MAX_HELD_BYTES / 2**20:g} MiB in "
                f"memory and retries every {RETRY_INTERVAL:g} s; beyond that, values are "
                "dropped and counted (RunEnd.dropped, and a gap event in the trace)"
            )

    def _resume(self) -> None:
        was, self.full = self.full, None
        if self._gap:
            n, t0, t1 = self._gap
            self._gap = []
            notify(
                f"{self.path} takes data again; run {self.run_name!r} goes on "
                f"({n} items were dropped meanwhile)"
            )
            self.add(
                Event(
                    "gap",
                    f"{n} items dropped over {(t1 - t0) / 1e6:.3f} s: {self._gap_reason}",
                    run=0,
                    severity=2,
                    detail={"dropped": n, "from_us": t0, "to_us": t1, "reason": was},
                    t_us=t0,
                )
            )

    def pump(self, now: float, *, flush: bool) -> None:
        if self._fd is None:
            return
        if self.full is not None:
            if now < self._retry_at:
                return
            self._retry_at = now + RETRY_INTERVAL
        if flush or self.full is not None:
            self._take()
            self._write()

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.05))

    def close(self, deadline: float) -> None:
        fd = self._fd
        if fd is None:
            return
        self._take()
        ended = False
        while True:
            if self._write():
                if ended:
                    break
                # After a resume the gap event is in the encoder: the index goes after it.
                self._take(self._enc.index_bytes())
                ended = True
                continue
            if time.monotonic() >= deadline:
                self.broken = self.full
                notify(
                    f"{self.full}; the last {len(self.held)} bytes of run {self.run_name!r} "
                    f"(up to {self.unwritten_items} items, its end among them) could not be "
                    "written"
                )
                break
            time.sleep(0.1)
        self._fd = None
        try:
            os.fsync(fd)
        except OSError as e:
            notify(f"cannot sync {self.path}: {_reason(e)}")
        finally:
            os.close(fd)

    def abandon(self) -> tuple[list[Record], int]:
        self.close(0.0)
        return [], 0


class SocketSink:
    """A trace stream to the collector over a connected Unix stream socket.

    Every record stays here until the collector acknowledges it (the stream offset up to which
    it has stored every frame, see :mod:`edgescope_tracing.acks`).
    ``backlog_items`` counts what is not yet acknowledged: waiting to be encoded, unsent, or
    sent and unconfirmed. When the connection fails, :meth:`abandon` hands all of it back, in
    order, for the fallback file: what the collector had stored but not yet confirmed (at most
    one acknowledgement's worth) is then in both places, and nothing is in neither.
    """

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
        self._queue: deque[Record] = deque()
        self._queue_items = 0
        self._sent: deque[tuple[int, int, list[Record]]] = deque()
        """(stream offset where their frames end, items, records), not yet acknowledged."""
        self._sent_items = 0
        self.acked = 0
        """The stream offset the collector last acknowledged."""
        self.unconfirmed = 0
        """Items handed back by :meth:`abandon` that had been sent (the collector may hold them)."""
        self._acks = bytearray()
        self._last_progress = time.monotonic()

    @property
    def backlog_items(self) -> int:
        return self._queue_items + self._sent_items

    @property
    def idle(self) -> bool:
        """Everything handed over has been sent and acknowledged."""
        return not self._queue and not self._out and not self._sent

    def add(self, rec: Record) -> None:
        self._queue.append(rec)
        self._queue_items += items_in(rec)

    def _encode(self) -> None:
        enc = self._enc
        moved = 0
        recs: list[Record] = []
        while self._queue and enc.pending < SEND_CHUNK:
            rec = self._queue.popleft()
            n = items_in(rec)
            self._queue_items -= n
            try:
                enc.add(rec)
            except (TraceError, TypeError, ValueError) as e:
                self.dropped += n
                notify(f"a record cannot be sent ({e}); dropped")
                continue
            moved += n
            recs.append(rec)
        self._out += enc.take()
        if recs:
            self._sent.append((enc.offset, moved, recs))
            self._sent_items += moved

    def pump(self, now: float, *, flush: bool) -> None:
        if self.broken is not None:
            return
        if not self._read_acks(now):
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
                self.broken = f"closed the connection ({_reason(e)})"
                return
            if n == 0:
                break
            del self._out[:n]
            self._last_progress = now
            if not self._out and flush and self._queue:
                self._encode()
        if (self._out or self._sent) and now - self._last_progress > self.stall_timeout:
            self.broken = f"took nothing for {self.stall_timeout:g} s"

    def _read_acks(self, now: float) -> bool:
        """Take the collector's acknowledgements; False (and ``broken``) if it hung up."""
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.broken = f"closed the connection ({_reason(e)})"
                return False
            if not data:
                self.broken = "closed the connection"
                return False
            self._acks += data
        try:
            acked = parse_acks(self._acks)
        except ValueError as e:
            self.broken = f"sent {e}"
            return False
        if acked is not None and acked > self.acked:
            self.acked = acked
            self._last_progress = now
            sent = self._sent
            while sent and sent[0][0] <= acked:
                self._sent_items -= sent.popleft()[1]
        return True

    def wait(self, timeout: float) -> None:
        wait_ms = max(1, int(min(0.05, timeout) * 1000))
        events = select.POLLIN | (select.POLLOUT if self._out else 0)
        try:
            poller = select.poll()  # not select(): descriptors above 1023 are fine
            poller.register(self.sock.fileno(), events)
            poller.poll(wait_ms)
        except (OSError, ValueError):
            time.sleep(wait_ms / 1000)

    def close(self, deadline: float) -> None:
        """Send the rest and wait until the collector has stored it (its RunEnd among it)."""
        while self.broken is None and not self.idle:
            now = time.monotonic()
            if now >= deadline:
                self.broken = "did not confirm the end of the run in time"
                return
            self.pump(now, flush=True)
            if self.broken is None and not self.idle:
                self.wait(deadline - now)
        if self.broken is None:
            self.sock.close()

    def abandon(self) -> tuple[list[Record], int]:
        """Close; everything not acknowledged, in order (sent first), and 0 lost in flight."""
        rest: list[Record] = []
        for _, _, recs in self._sent:
            rest.extend(recs)
        self.unconfirmed = self._sent_items
        rest.extend(self._queue)
        self._sent.clear()
        self._sent_items = 0
        self._out.clear()
        self._queue.clear()
        self._queue_items = 0
        self.sock.close()
        return rest, 0


# --- the shipper ------------------------------------------------------------------------------


class Shipper:
    """One run's way from the hot buffer to the sink: a thread, and the caller when it must."""

    def __init__(
        self,
        start: RunStart,
        sink: Sink,
        buf: deque[Any],
        *,
        flush_interval: float,
        fallback: Callable[[], Path] | None,
        reconnect: Callable[[], Sink | None] | None = None,
        attached: Callable[[], None] = lambda: None,
    ) -> None:
        self.start_rec = start
        self._reconnect = reconnect
        self._attached = attached
        """Told when a re-attached collector has confirmed the run (the run's sink changed)."""
        """Connects to the collector again (None: not now); only after a fallback from one."""
        self._reconnect_at: float | None = None
        """When to try it next; None while the run is not in a fallback file."""
        self._reconnect_wait = RECONNECT_INTERVAL
        """The wait before the next try; doubles (to ``RECONNECT_MAX``) each time a collector
        that took the connection did not confirm the run's start."""
        self._candidate: SocketSink | None = None
        """A new connection on probation: it has the run's ``RunStart`` and becomes the sink
        only once the collector has confirmed storing it. Until then the run goes on into the
        file, so a collector that accepts connections but never reads (hung) costs the loop
        nothing: it is dropped after the stall timeout, and tried again later."""
        self.sink = sink
        self.buf = buf
        self.flush_interval = flush_interval
        self._fallback = fallback
        self._cols = Columns()
        self.lock = threading.Lock()
        """Held while items move from the buffer to the sink (by the thread or a caller)."""
        self.shipping: set[int] = set()
        """Threads in :meth:`caller_runs`, from before they take ``lock`` until after they let
        go of it: a signal handler that interrupted one of them must not wait for the lock (it
        would wait for itself). Not the lock's holder alone: a signal that lands between the
        lock's acquisition and a note of its holder would find no note."""
        self._sink_dropped = 0
        """Drops of sinks given up on (the current sink counts its own)."""
        self.lost = 0
        """Items taken from the buffer whose move was interrupted (KeyboardInterrupt)."""
        self.deferred_signal: int | None = None
        """A SIGTERM that arrived while a caller held ``lock``: handled when it lets go."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._waiters: deque[threading.Event] = deque()
        self._exit_code: int | None = None
        self._hot_dropped: Callable[[], int] = lambda: 0
        self._finished = threading.Event()
        self._next_flush = time.monotonic() + flush_interval
        self.thread = threading.Thread(target=self._main, name="edgescope-shipper", daemon=True)
        sink.add(start)

    @property
    def dropped(self) -> int:
        return self._sink_dropped + self.sink.dropped + self.lost

    def start(self) -> None:
        self.thread.start()

    # --- moving items: always under the lock --------------------------------------------

    def _drain(self) -> None:
        """Everything in the buffer now into columns; events and stacks to the sink in order."""
        items = take_all(self.buf)
        if not items:
            return
        try:
            for calls, event in split_events(items):
                self._cols.add_calls(calls)
                if event is not None:
                    # Keep order: metrics logged before an event or a stack window go first.
                    self._emit()
                    self.sink.add(event)
        except BaseException:
            # Interrupted mid-batch (KeyboardInterrupt in the caller): what was taken but not
            # yet placed cannot be told apart from what was; the batch is counted as lost.
            self.lost += sum(
                items_in(x) if not isinstance(x, tuple) else (1 if len(x) == 4 else len(x[2]))
                for x in items
            )
            self._cols = Columns()
            raise

    def _emit(self) -> None:
        if self._cols.values:
            for rec in self._cols.take():
                self.sink.add(rec)

    def _pump(self, now: float, *, flush: bool) -> None:
        self.sink.pump(now, flush=flush)
        while self.sink.broken is not None and self.sink.can_fall_back:
            self._fall_back()

    def _make_room(self) -> None:
        """Wait (the stall timeout at most, through a fallback) until the sink has room."""
        while self.sink.backlog_items > MAX_BACKLOG_ITEMS:
            self.sink.wait(TICK)
            self._pump(time.monotonic(), flush=True)

    def ship(self, *, flush: bool) -> None:
        """Move what is buffered towards the sink; the caller holds ``lock``."""
        now = time.monotonic()
        self._drain()
        if flush or now >= self._next_flush or self._cols.values >= BATCH_VALUES:
            self._emit()
            self._next_flush = now + self.flush_interval
            flush = True
        self._pump(now, flush=flush)
        self._make_room()

    def caller_runs(self) -> None:
        """The buffer is full: the calling thread ships it (blocking only on the sink)."""
        me = threading.get_ident()
        self.shipping.add(me)
        try:
            with self.lock:
                self.ship(flush=True)
        finally:
            self.shipping.discard(me)

    # --- the thread ---------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while True:
                self._wake.wait(TICK)
                self._wake.clear()
                if self._stop.is_set():
                    break
                waiting = []
                while self._waiters:
                    waiting.append(self._waiters.popleft())
                with self.lock:
                    self._maybe_reattach()
                    self.ship(flush=bool(waiting))
                for w in waiting:
                    w.set()
        except Exception as e:  # a bug here must not take the training run down with it
            notify(f"the shipper thread failed ({type(e).__name__}: {e}); recording stops here")
            self.sink = NullSink(self.sink.where, "the shipper thread failed")
            self._finished.set()
            return
        with self.lock:
            self._final()

    def sync(self, timeout: float) -> bool:
        """Have the thread drain and ship what is buffered now; False if it took too long."""
        if not self.thread.is_alive():
            return False
        done = threading.Event()
        self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def _fall_back(self) -> None:
        old = self.sink
        reason = f"the collector at {old.where} {old.broken}"
        rest, lost = old.abandon()
        unconfirmed = getattr(old, "unconfirmed", 0)
        self._sink_dropped += old.dropped + lost
        new: Sink
        name = self.start_rec.name
        if self._fallback is None:
            new = NullSink(old.where, reason)
            notify(f"{reason}; the rest of run {name!r} is dropped (counted)")
        else:
            try:
                path = self._fallback()
                new = FileSink(path, self.flush_interval, name)
            except OSError as e:
                new = NullSink(str(e.filename or ""), _reason(e))
                notify(f"{reason}, and {e}; the rest of run {name!r} is dropped (counted)")
            else:
                notify(f"{reason}; writing the rest of run {name!r} to {path}")
                if self._reconnect is not None:
                    self._reconnect_at = time.monotonic() + self._reconnect_wait
        new.add(self.start_rec)
        new.add(
            Event(
                "log",
                f"{reason}; the rest of this run was written here",
                run=0,
                severity=1,
                detail={"collector": old.where, "lost_in_flight": lost, "replayed": unconfirmed},
                t_us=time.time_ns() // 1000,
            )
        )
        for rec in rest:
            if not isinstance(rec, RunStart | RunEnd):
                new.add(rec)
        self.sink = new

    def _maybe_reattach(self) -> None:
        """In a fallback file, and the collector may be back: the rest of the run goes there.

        A new connection first gets only the run's ``RunStart`` (same run id) and is on
        probation until the collector confirms it has stored it; only then does it become the
        sink. The file then ends with an event that names the collector (and no ``RunEnd``: the
        run goes on); the collector gets an event that names the file holding the part in
        between. A connection that does not confirm within the stall timeout is closed and the
        next try waits twice as long (to ``RECONNECT_MAX``): the loop never waits on it.
        """
        cand = self._candidate
        if cand is not None:
            cand.pump(time.monotonic(), flush=True)
            if cand.broken is not None:
                cand.abandon()
                self._candidate = None
                self._reconnect_wait = min(self._reconnect_wait * 2, RECONNECT_MAX)
                self._reconnect_at = time.monotonic() + self._reconnect_wait
            elif cand.idle:
                self._candidate = None
                self._attach(cand)
            return
        at = self._reconnect_at
        if at is None or self._reconnect is None or time.monotonic() < at:
            return
        self._reconnect_at = time.monotonic() + self._reconnect_wait
        new = self._reconnect()
        if not isinstance(new, SocketSink):
            return
        new.add(self.start_rec)
        new.pump(time.monotonic(), flush=True)
        self._candidate = new

    def _attach(self, new: SocketSink) -> None:
        """The collector confirmed the run's start on ``new``: the rest of the run goes there."""
        self._reconnect_at = None
        self._reconnect_wait = RECONNECT_INTERVAL
        old = self.sink
        self._drain()
        self._emit()
        now_us = time.time_ns() // 1000
        name = self.start_rec.name
        old.add(
            Event(
                "log",
                f"the collector at {new.where} is back; the rest of this run went there",
                run=0,
                severity=1,
                detail={"collector": new.where},
                t_us=now_us,
            )
        )
        old.close(time.monotonic() + FILE_END_TIMEOUT)
        self._sink_dropped += old.dropped
        new.add(
            Event(
                "log",
                f"run {name!r} re-attached to the collector; what it logged while the collector "
                f"was away is in {old.where}",
                run=0,
                severity=1,
                detail={"file": old.where},
                t_us=now_us,
            )
        )
        self.sink = new
        self._attached()
        notify(f"the collector at {new.where} is back; run {name!r} goes on there")

    def _final(self) -> None:
        try:
            if self._candidate is not None:  # never confirmed: the file keeps the run
                self._candidate.abandon()
                self._candidate = None
            self._drain()
            self._emit()
            end_timeout = SOCKET_END_TIMEOUT if self.sink.can_fall_back else FILE_END_TIMEOUT
            deadline = time.monotonic() + max(end_timeout, self.flush_interval)
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
                    deadline = time.monotonic() + FILE_END_TIMEOUT
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
            with self.lock:
                self._final()
        return self._finished.is_set()
