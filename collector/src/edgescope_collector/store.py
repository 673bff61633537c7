"""The segment store: the collector's stream, cut into trace files, in a bounded ring on disk.

One sequence space. The collector has one record encoder (:class:`edgescope_tracing.framing.
Encoder`: sequence counter, interned tables, active runs) for its whole life; each segment
file gets its own :class:`~edgescope_tracing.StreamEncoder` that *shares* that encoder. So a
segment is a complete trace on its own (header, a keyframe first that restates the active runs, an
index at close), and the sequence numbers go on from one segment to the next. A segment's
file name holds its first sequence number (``seg-00000000000000001234.est``); on a restart the
store reads the newest segment's last sequence number and goes on from there, so the numbers
stay monotonic across restarts too.

Bounded: a new segment starts every ``segment_bytes`` (or twice the size of its first
keyframe, where the active runs make that larger, so that a segment is never only the
keyframe that restates them) or ``segment_age`` seconds; before bytes are written that would
take the segments together past ``max_disk``, the oldest closed ones are deleted, so the bound
holds at every moment. The open segment is never deleted.

A full disk (any failed write) never stops the stream. The file is cut back to its last whole
frame and the oldest closed segments are deleted until the write fits; when none is left, the
segment is sealed where its stored frames end and the stream goes on in memory segments
(``Segment.memory``, at most ``memory_bytes``, the oldest dropped first), which the listeners
and the server's catching-up clients are served from as from files. Every ``retry_interval``
the store tries a new file; when the disk takes it, the memory segments are written out and the
stream goes on on disk. What never reached the disk is listed in ``unstored``, is a gap
between segments for clients, and the store's events (``take_notices``: the disk full, writing
again with what was lost) say so in the stream. EFBIG, a file size limit, ends segments
before the limit from then on. At start, one line says when the disk has less room than
``max_disk``.

A segment left unclosed by a crash is repaired at start: the incomplete bytes after its last
good frame (what the crash was writing) are cut and the index is appended. Good frames are
never dropped.

An existing file is never truncated or overwritten: segments are created with ``O_EXCL |
O_NOFOLLOW``, and a file named like a segment that is not one the store can use (unreadable,
not a regular file: a symlink, a FIFO, a directory; numbers past ``MAX_SEQ``) is moved aside
as ``NAME.damaged`` (``.damaged.1``, ... if taken), named in a log line, and kept. Every file
is opened without following symlinks and without blocking, so nothing in the data directory
can make the collector read or write elsewhere, or hang at start.

Every flushed chunk of frames is also handed to the listeners (the stream server) with its
segment and offset, so that live clients get exactly the bytes that are on disk (or, while
the disk is full, in memory; and the one chunk whose write failed, which is on neither).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgescope_tracing import MAX_PAYLOAD, Event, IndexEntry, Record, RunStart, StreamEncoder
from edgescope_tracing.errors import TraceError
from edgescope_tracing.framing import (
    HEADER_SIZE,
    Encoder,
    header_bytes,
    parse_header,
    read_trailer,
    scan,
    trailer_bytes,
)

from .errors import StoreError

__all__ = ["Segment", "SegmentStore", "StoreError", "segment_name"]

log = logging.getLogger("edgescope.collector.store")

SEGMENT_RE = re.compile(r"^seg-(\d{20})\.est$")
LOCK_NAME = "collector.lock"
DAMAGED_SUFFIX = ".damaged"
MAX_SEQ = (1 << 63) - 1
"""Sequence numbers of a usable segment stay below this: a name or an index past it (which
20 digits allow) would leave no room to go on, and the encoder would refuse every record."""
_OPEN = getattr(os, "O_CLOEXEC", 0) | os.O_NOFOLLOW | os.O_NONBLOCK
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}
"""Write errors that dropping old segments can cure (EFBIG, a file size limit, needs a new file)."""


class _Unusable(Exception):
    """A file named like a segment that the store cannot use; the message says why."""


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:020d}.est"


@dataclass(slots=True, eq=False)
class Segment:
    """One segment file. ``data_end`` is where its frames end (the index follows when closed)."""

    path: Path
    first_seq: int
    next_seq: int
    """One past the last sequence number in it (grows while it is open)."""
    data_end: int
    size: int
    index: list[IndexEntry] = field(default_factory=list)
    closed: bool = False
    created: float = 0.0
    memory: bytearray | None = None
    """The segment's bytes, where it is kept in memory because the disk could not take it
    (``path`` is then where it goes once the disk does); None for a segment on disk."""


Listener = Callable[[Segment, int, bytes], None]


class SegmentStore:
    """Append records; they are framed, written to the open segment and handed to listeners."""

    def __init__(
        self,
        directory: Path,
        *,
        max_disk: int,
        segment_bytes: int | None = None,
        segment_age: float = 600.0,
        keyframe_bytes: int = 256 * 1024,
        flush_interval: float = 0.25,
        memory_bytes: int = 8 * 1024 * 1024,
        retry_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_disk = max_disk
        self.segment_bytes = segment_bytes or max(128 * 1024, min(16 * 1024 * 1024, max_disk // 8))
        self.segment_age = segment_age
        self.keyframe_bytes = min(keyframe_bytes, max(64 * 1024, self.segment_bytes // 2))
        self.flush_interval = flush_interval
        self.memory_bytes = memory_bytes
        """While the disk cannot take the stream: the most bytes of it kept in memory."""
        self.retry_interval = retry_interval
        """While the disk cannot take the stream: seconds between tries to write it again."""
        self.clock = clock
        self.segments: list[Segment] = []
        self.orphans: list[RunStart] = []
        self.next_run = 0
        """One past the highest run number the last segment knew of (the runs a new session
        numbers from, so that none of its runs shares a number with the last session's)."""
        """Runs the last session left open (no ``RunEnd``: the collector was killed), found by
        :meth:`open`; the daemon ends them as lost contact."""
        self.listeners: list[Listener] = []
        self.dropped_segments = 0
        self.unstored: list[tuple[int, int]] = []
        """Sequence ranges that never reached the disk (it was full), oldest first."""
        self.notices: list[Event] = []
        """Events about the store itself (the disk full, writing again), for the collector to
        put in the stream: :meth:`take_notices`."""
        self._stream: StreamEncoder | None = None
        self._fd = -1
        self._pending_since: float | None = None
        self._closed = False
        self._lock_fd = -1
        self._fsyncer: ThreadPoolExecutor | None = None
        self._trouble: str | None = None
        """Why the disk cannot take the stream now; None while it can."""
        self._retry_at = 0.0

    # --- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Take the data directory: repair and list old segments, start a new one."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock()
            names = sorted(p.name for p in self.directory.iterdir() if SEGMENT_RE.match(p.name))
        except OSError as e:
            raise StoreError(f"cannot use the data directory {self.directory}: {_reason(e)}") from e
        next_seq = 0
        for name in names:
            seg = self._load(self.directory / name)
            if seg is None:
                continue
            self.segments.append(seg)
            next_seq = max(next_seq, seg.next_seq)
        self.orphans = self._open_runs_at_end()
        encoder = Encoder()
        encoder.next_seq = next_seq
        if self.segments:
            encoder.keyframes = len(self.segments[-1].index) + 1
        self._check_space()
        self._start_segment(encoder, first=True)
        self._enforce_limit()

    def _open_runs_at_end(self) -> list[RunStart]:
        """The runs still open where the last stored segment ends: a collector that was killed
        (or lost power) left them without a ``RunEnd``. Read from the segment's last keyframe."""
        from edgescope_tracing import Keyframe, RunEnd, TraceReader

        if not self.segments or self.segments[-1].memory is not None:
            return []
        seg = self.segments[-1]
        start = seg.index[-1].offset if seg.index else HEADER_SIZE
        runs: dict[int, RunStart] = {}
        try:
            with TraceReader(seg.path) as reader:
                for rec in reader.records(start):
                    if isinstance(rec, Keyframe):
                        runs = {r.run: r for r in rec.runs}
                    elif isinstance(rec, RunStart):
                        runs[rec.run] = rec
                    elif isinstance(rec, RunEnd):
                        runs.pop(rec.run, None)
                    else:
                        continue
                    numbers = [r.run for r in rec.runs] if isinstance(rec, Keyframe) else [rec.run]
                    self.next_run = max(self.next_run, *(n + 1 for n in numbers), 0)
        except (OSError, TraceError) as e:
            log.warning("could not read the runs left open in %s: %s", seg.path.name, e)
            return []
        return list(runs.values())

    def close(self) -> None:
        """Write what is pending, close the open segment with its index, fsync it."""
        if self._closed or self._stream is None:
            return
        self._closed = True
        try:
            self.flush()
            self._close_segment(last=True)
            if self._trouble is not None:
                self._persist_memory()  # a last try; what does not fit is said
                lost = [s for s in self.segments if s.memory is not None]
                for s in lost:
                    self._unstore(s)
                if lost:
                    log.warning(
                        "stopped with the disk still full: seq %d-%d were never stored",
                        lost[0].first_seq,
                        lost[-1].next_seq - 1,
                    )
        finally:
            if self._fsyncer is not None:
                self._fsyncer.shutdown(wait=True)
                self._fsyncer = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = -1

    def _check_space(self) -> None:
        """Say (one line) when the disk has less room than ``max_disk`` allows the ring."""
        try:
            st = os.statvfs(self.directory)
        except OSError as e:
            log.warning("cannot tell the free space in %s: %s", self.directory, _reason(e))
            return
        room = st.f_bavail * st.f_frsize + self.disk_bytes
        if room < self.max_disk:
            log.warning(
                "--max-disk is %s but %s has room for %s (free space and the segments there): "
                "when the disk fills, the oldest segments are dropped sooner",
                _size(self.max_disk),
                self.directory,
                _size(room),
            )

    def _lock(self) -> None:
        """One collector per data directory: two writing one ring would corrupt it."""
        path = self.directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN, 0o640)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symlink; the collector will not follow it") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{path} is not a regular file; remove it to start the collector")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"another collector (pid {other}) is using the data directory {self.directory}"
            ) from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            # The lock holds without it (a full disk): another collector names no pid.
            log.warning("could not write the pid into %s: %s", path, _reason(e))

    # --- appending -----------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Open and not yet closed."""
        return self._stream is not None and not self._closed

    @property
    def disk_full(self) -> str | None:
        """Why the disk cannot take the stream now (it is kept in memory); None while it can."""
        return self._trouble

    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
        assert self._stream is not None
        return self._stream.encoder.next_seq

    @property
    def first_seq(self) -> int:
        """The oldest sequence number still retained (on disk, or in memory)."""
        return self.segments[0].first_seq if self.segments else self.next_seq

    @property
    def open_segment(self) -> Segment:
        return self.segments[-1]

    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self.segments if s.memory is None)

    def _notice(self, message: str, severity: int, detail: dict[str, object]) -> None:
        """Log ``message`` (an error at severity 2, else a warning) and keep it as a
        ``collector`` event for the stream (:meth:`take_notices`)."""
        log.log(logging.ERROR if severity >= 2 else logging.WARNING, "%s", message)
        self.notices.append(
            Event(
                kind="collector",
                message=message,
                severity=severity,
                detail=detail,
                t_us=time.time_ns() // 1000,
            )
        )

    def take_notices(self) -> list[Event]:
        """The store's events since the last call (the collector records them)."""
        out, self.notices = self.notices, []
        return out

    def append(self, rec: Record) -> int:
        """Encode a record into the open frame; returns its sequence number."""
        stream = self._stream
        if stream is None or self._closed:
            raise RuntimeError("append to a store that is not open")
        seq = stream.add(rec)
        if self._pending_since is None:
            self._pending_since = self.clock()
        if (
            stream.pending >= MAX_PAYLOAD // 2
            or self.open_segment.data_end + stream.pending >= self._segment_limit()
        ):
            self.flush()  # a full frame, or a full segment: written (and rotated) now
        return seq

    def poll(self) -> None:
        """Flush if the open frame has waited ``flush_interval``; rotate by age; while the disk
        is full, try it again every ``retry_interval``. Call it often."""
        now = self.clock()
        if self._stream is None or self._closed:
            return
        if self._trouble is not None and now >= self._retry_at:
            self._retry_disk()
        if self._pending_since is not None and now - self._pending_since >= self.flush_interval:
            self.flush()
        elif (
            now - self.open_segment.created >= self.segment_age
            and self.open_segment.data_end > HEADER_SIZE
        ):
            self._rotate()

    def flush(self) -> None:
        """Write the open frames to the open segment and hand them to the listeners."""
        if self._stream is None:
            return
        self._write_pending()
        seg = self.open_segment
        if not self._closed and (
            seg.data_end >= self._segment_limit()
            or (self.clock() - seg.created >= self.segment_age and seg.data_end > HEADER_SIZE)
        ):
            self._rotate()
        if self.disk_bytes > self.max_disk:
            self._enforce_limit()

    def _segment_limit(self) -> int:
        """Bytes after which the open segment is full: ``segment_bytes`` (in memory, half of
        ``memory_bytes`` at most), or twice its keyframe where the active runs make that larger
        (a segment is never just keyframes)."""
        stream = self._stream
        limit = self.segment_bytes
        if self.segments and self.open_segment.memory is not None:
            limit = min(limit, self.memory_bytes // 2)
        return max(limit, 2 * stream.keyframe_size if stream is not None else 0)

    def _write_pending(self) -> None:
        stream = self._stream
        assert stream is not None
        self._pending_since = None
        seg = self.open_segment
        offset = stream.offset
        data = stream.take()
        if not data:
            return
        if seg.memory is not None:
            seg.memory += data
            stored = True
        else:
            stored = self._write_disk(seg, data)
        if stored:
            seg.data_end = seg.size = stream.offset
            seg.next_seq = stream.encoder.next_seq
            seg.index = list(stream.index)
        for listener in list(self.listeners):
            listener(seg, offset, data)  # live clients get it, stored or not
        if not stored:
            # These records (seg.next_seq on) are not on disk: the segment ends where its
            # frames on disk do, and the stream goes on in a new segment (in memory if need be).
            self._unstored_range(seg.next_seq, stream.encoder.next_seq - 1)
            self._seal(seg)
            self._start_segment(stream.encoder)

    def _write_disk(self, seg: Segment, data: bytes) -> bool:
        """Write to the open segment's file; False (the disk full, said) where it cannot."""
        while True:
            self._make_room(len(data))
            try:
                _write_all(self._fd, data)
                return True
            except OSError as e:
                # A short write leaves part of a frame: cut back to the frames before it.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, seg.data_end)
                    os.lseek(self._fd, seg.data_end, os.SEEK_SET)
                if e.errno in _NO_ROOM and self._drop_oldest("the disk is full"):
                    continue  # room made: try again
                if e.errno == errno.EFBIG and seg.data_end > HEADER_SIZE:
                    self._file_size_limit(seg, e)  # a new file takes the stream
                else:
                    self._disk_trouble(e)
                return False

    # --- reading support -----------------------------------------------------------------

    def locate(self, since: int | None) -> tuple[Segment, int, tuple[int, int] | None]:
        """Where a client starting at ``since`` begins: segment, offset and any gap before it.

        ``since`` None: the latest keyframe (joining live). Else the keyframe at or before
        ``since``; when ``since`` is older than the oldest segment, the oldest segment's start
        and the gap ``(since, first_seq - 1)``.
        """
        if since is None:
            seg = self.open_segment
            return seg, _last_keyframe(seg, None), None
        first = self.segments[0]
        if since < first.first_seq:
            return first, HEADER_SIZE, (since, first.first_seq - 1)
        seg = first
        for s in self.segments:
            if s.first_seq > since:
                break
            seg = s
        return seg, _last_keyframe(seg, since), None

    def after(self, seg: Segment) -> tuple[Segment | None, tuple[int, int] | None]:
        """The segment that follows ``seg`` and the gap between them (deleted segments, or
        records the full disk did not take)."""
        for s in self.segments:
            if s.first_seq > seg.first_seq and s is not seg:
                gap = (seg.next_seq, s.first_seq - 1) if s.first_seq > seg.next_seq else None
                return s, gap
        return None, None

    def retained(self, seg: Segment) -> bool:
        return any(s is seg for s in self.segments)

    # --- internals -----------------------------------------------------------------------

    def _start_segment(self, encoder: Encoder, *, first: bool = False) -> None:
        """A new open segment for the stream: a file, or memory while the disk cannot take it."""
        stream = StreamEncoder(keyframe_bytes=self.keyframe_bytes, header=False)
        # The one encoder of the collector's stream: sequence numbers and the active runs go on;
        # the new segment's first keyframe restates the runs and restarts the tables.
        stream.encoder = encoder
        stream.offset = HEADER_SIZE
        first_seq = encoder.next_seq
        path = self.directory / segment_name(first_seq)
        if self.segments and self.segments[-1].first_seq == first_seq:
            # The last segment holds no record (it starts where the new one does): nothing in
            # it to keep, and the new one takes its name.
            empty = self.segments.pop()
            if empty.memory is None:
                with contextlib.suppress(FileNotFoundError):
                    empty.path.unlink()
        seg = Segment(path, first_seq, first_seq, HEADER_SIZE, HEADER_SIZE, created=self.clock())
        fd = -1
        if self._trouble is None:
            try:
                fd = self._new_file(path)
            except OSError as e:
                if first and e.errno not in _NO_ROOM:
                    raise StoreError(
                        f"cannot write a segment in {self.directory}: {_reason(e)}"
                    ) from e
                self._disk_trouble(e)
        if fd < 0:
            seg.memory = bytearray(header_bytes())
        self._fd = fd
        self._stream = stream
        self.segments.append(seg)

    def _new_file(self, path: Path) -> int:
        """A new segment file with its header written; OSError (and no file) where it fails."""
        self._make_room(HEADER_SIZE)
        fd = self._create(path)
        try:
            _write_all(fd, header_bytes())
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return fd

    def _create(self, path: Path) -> int:
        """A new segment file: never an existing one (that is moved aside and kept)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN
        try:
            return os.open(path, flags, 0o640)
        except FileExistsError:
            self._move_aside(path, "it was in the way of a new segment")
            return os.open(path, flags, 0o640)

    def _move_aside(self, path: Path, why: str) -> None:
        """Rename a file the store cannot use to ``NAME.damaged`` (kept, never deleted)."""
        target = path.with_name(path.name + DAMAGED_SUFFIX)
        n = 0
        while os.path.lexists(target):
            n += 1
            target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
        os.rename(path, target)  # a symlink is renamed itself, never its target
        log.warning("moved %s aside as %s (%s); it is kept", path, target.name, why)

    def _close_segment(self, *, last: bool = False) -> None:
        stream = self._stream
        if stream is None:
            return
        seg = self.open_segment
        if seg.memory is not None:
            seg.memory += stream.index_bytes()
            seg.size = len(seg.memory)
            seg.index = list(stream.index)
            seg.closed = True
            return
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            tail = stream.index_bytes()
            self._make_room(len(tail))
            _write_all(fd, tail)
        except OSError as e:
            # No room for the index: the frames are whole; readers rebuild the index by a scan.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, seg.data_end)
            log.warning("could not write the index of %s: %s", seg.path.name, _reason(e))
            seg.size = seg.data_end
        else:
            seg.size = stream.offset
        if last:
            _fsync_close(fd)
        else:
            # fsync can take long on an SD card: a worker thread does it, off the caller's
            # (the event loop's) path. Readers open the file by name and need no fsync.
            if self._fsyncer is None:
                self._fsyncer = ThreadPoolExecutor(1, thread_name_prefix="edgescope-fsync")
            self._fsyncer.submit(_fsync_close, fd)
        seg.index = list(stream.index)
        seg.closed = True

    def _seal(self, seg: Segment) -> None:
        """Close the open segment where its stored frames end (the rest never reached it)."""
        fd, self._fd = self._fd, -1
        seg.index = [e for e in seg.index if e.offset < seg.data_end]
        closing = trailer_bytes(seg.data_end, seg.index, seg.next_seq)
        try:
            _pwrite_all(fd, closing, seg.data_end)
            seg.size = seg.data_end + len(closing)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, seg.data_end)
            seg.size = seg.data_end  # no index: readers rebuild it by a scan
        os.close(fd)
        seg.closed = True

    def _rotate(self) -> None:
        old = self._stream
        assert old is not None
        self._write_pending()
        if self._stream is not old:
            return  # the write failed and the stream already went on in a new segment
        self._close_segment()
        self._start_segment(old.encoder)
        self._bound_memory()

    # --- a full disk ---------------------------------------------------------------------

    def _disk_trouble(self, e: OSError) -> None:
        """The disk cannot take the stream: say so once, keep it in memory, retry later."""
        self._retry_at = self.clock() + self.retry_interval
        if self._trouble is not None:
            return
        why = _reason(e)
        self._trouble = why
        first = self._stream.encoder.next_seq if self._stream is not None else 0
        message = (
            f"cannot write to {self.directory} ({why}): the stream is kept in memory (up to "
            f"{_size(self.memory_bytes)}) and served live until the disk takes it again"
        )
        self._notice(
            message,
            2,
            {"error": why, "errno": e.errno, "seq": first, "disk_bytes": self.disk_bytes},
        )

    def _file_size_limit(self, seg: Segment, e: OSError) -> None:
        """A file size limit (RLIMIT_FSIZE): from now on segments end before it."""
        assert self._stream is not None
        # A flush writes up to two frames past the point where the segment is full: margin.
        limit = max(seg.data_end // 2, seg.data_end - 2 * MAX_PAYLOAD)
        self.segment_bytes = min(self.segment_bytes, limit)
        first, last = seg.next_seq, self._stream.encoder.next_seq - 1
        message = (
            f"{seg.path.name} reached the file size limit at {seg.data_end} bytes "
            f"({_reason(e)}): seq {first}-{last} could not be stored (a gap); segments end "
            f"near {self.segment_bytes} bytes from now on"
        )
        self._notice(
            message, 2, {"error": _reason(e), "unstored": [first, last], "limit": seg.data_end}
        )

    def _retry_disk(self) -> None:
        """While the disk is full: when a new segment file can be written, go back to it."""
        stream = self._stream
        assert stream is not None
        self._write_pending()  # into memory
        if self.open_segment.memory is None:
            return
        path = self.directory / segment_name(stream.encoder.next_seq)
        try:
            fd = self._new_file(path)
        except OSError:
            self._retry_at = self.clock() + self.retry_interval
            return
        # The disk takes a file again: the memory segments go to disk (where they fit), and
        # the stream goes on in the new file.
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()  # the probe; the new segment is made again below, in order
        self._close_segment()
        self._trouble = None
        kept = self._persist_memory()
        lost = [s for s in self.segments if s.memory is not None]
        for s in lost:
            self._unstore(s)
        self._start_segment(stream.encoder)
        if self._trouble is not None:
            return  # it filled again at once
        gaps = [f"{a}-{b}" for a, b in self.unstored]
        message = f"writing to {self.directory} again: " + (
            f"seq {', '.join(gaps[-5:])} could not be stored (a gap)" if gaps else "nothing lost"
        )
        if kept:
            message += f"; {kept} segment(s) kept in memory meanwhile are on disk"
        unstored = [list(g) for g in self.unstored[-20:]]
        self._notice(message, 1, {"unstored": unstored, "kept_segments": kept})

    def _persist_memory(self) -> int:
        """Write the closed memory segments to disk, oldest first; how many went."""
        done = 0
        for seg in [s for s in self.segments if s.memory is not None and s.closed]:
            memory = seg.memory
            assert memory is not None
            try:
                fd = self._create_for(seg.path, len(memory))
                try:
                    _write_all(fd, bytes(memory))
                except OSError:
                    os.close(fd)
                    seg.path.unlink()
                    raise
            except OSError as e:
                log.warning("could not write %s from memory: %s", seg.path.name, _reason(e))
                return done
            _fsync_close(fd)
            seg.memory = None
            done += 1
        return done

    def _create_for(self, path: Path, n: int) -> int:
        self._make_room(n)
        return self._create(path)

    def _bound_memory(self) -> None:
        """Keep the memory segments within ``memory_bytes``: the oldest closed ones go."""
        while True:
            held = [s for s in self.segments if s.memory is not None]
            if sum(s.size for s in held) <= self.memory_bytes or len(held) < 2:
                return
            self._unstore(held[0])

    def _unstore(self, seg: Segment) -> None:
        """A closed memory segment that will not reach the disk: its records are a gap."""
        self.segments.remove(seg)
        self._unstored_range(seg.first_seq, seg.next_seq - 1)
        log.warning(
            "dropped seq %d-%d kept in memory: the disk did not take them",
            seg.first_seq,
            seg.next_seq - 1,
        )

    def _unstored_range(self, first: int, last: int) -> None:
        if last < first:
            return
        if self.unstored and self.unstored[-1][1] + 1 >= first:
            self.unstored[-1] = (self.unstored[-1][0], max(last, self.unstored[-1][1]))
        else:
            self.unstored.append((first, last))
        del self.unstored[:-100]

    def _drop_oldest(self, why: str) -> bool:
        """Delete the oldest closed segment on disk; False if there is none."""
        for seg in self.segments:
            if seg.memory is None and seg.closed and seg is not self.open_segment:
                self.segments.remove(seg)
                try:
                    seg.path.unlink()
                except FileNotFoundError:
                    pass  # gone already
                except OSError as e:
                    log.warning("could not delete %s: %s", seg.path.name, _reason(e))
                self.dropped_segments += 1
                log.info(
                    "dropped segment %s (seq %d-%d): %s",
                    seg.path.name,
                    seg.first_seq,
                    seg.next_seq - 1,
                    why,
                )
                return True
        return False

    def _make_room(self, n: int) -> None:
        """Drop the oldest closed segments so that ``n`` more bytes stay within the bound."""
        if self.disk_bytes + n > self.max_disk:
            self._enforce_limit(n)

    def _enforce_limit(self, reserve: int = 0) -> None:
        while self.disk_bytes + reserve > self.max_disk:
            if not self._drop_oldest(f"to stay within {self.max_disk} bytes"):
                return

    def _load(self, path: Path) -> Segment | None:
        """A segment from an earlier life of the collector, repaired if it was left open.

        One the store cannot use is moved aside (and kept): None.
        """
        try:
            return self._read_segment(path)
        except _Unusable as e:
            why = str(e)
        except TraceError as e:
            why = str(e).replace(str(path), "it")
        except OSError as e:
            why = _reason(e)
        try:
            self._move_aside(path, why)
        except OSError as e:
            log.warning("ignoring %s (%s); could not move it aside: %s", path, why, _reason(e))
        return None

    def _read_segment(self, path: Path) -> Segment:
        m = SEGMENT_RE.match(path.name)
        assert m is not None
        first_seq = int(m.group(1))
        if first_seq > MAX_SEQ:
            raise _Unusable(f"its first sequence number is past {MAX_SEQ}")
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _Unusable(f"it is {_file_kind(mode)}, not a segment")
        try:
            fd = os.open(path, os.O_RDWR | _OPEN)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | _OPEN)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the lstat
                raise _Unusable("it is not a regular file")
            parse_header(os.pread(fd, HEADER_SIZE, 0), str(path))
            closed = read_trailer(fd, os.fstat(fd).st_size)
            if closed is not None:
                data_end, next_seq, index = closed
                if next_seq > MAX_SEQ:
                    raise _Unusable(f"its index goes past sequence number {MAX_SEQ}")
                size = os.fstat(fd).st_size
                return Segment(
                    path, first_seq, max(next_seq, first_seq), data_end, size, index, True
                )
            return self._repair(fd, path, first_seq)
        finally:
            os.close(fd)

    def _repair(self, fd: int, path: Path, first_seq: int) -> Segment:
        found = scan(_read_all(fd), str(path))
        data_end, index = found.data_end, found.index
        next_seq = first_seq if found.next_seq is None else max(first_seq, found.next_seq)
        if next_seq > MAX_SEQ:
            raise _Unusable(f"its records go past sequence number {MAX_SEQ}")
        closing = trailer_bytes(data_end, index, next_seq)
        try:
            os.ftruncate(fd, data_end)
            _pwrite_all(fd, closing, data_end)
            os.fsync(fd)
        except OSError as e:
            # Read-only, or no room for the index: the frames are good as they are (a reader
            # rebuilds the index by a scan).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, data_end)
            log.warning(
                "could not close %s left open by an earlier collector: %s", path, _reason(e)
            )
            size = os.fstat(fd).st_size
            return Segment(path, first_seq, next_seq, data_end, size, index, True)
        log.info("repaired %s, left open by an earlier collector (seq up to %d)", path, next_seq)
        return Segment(path, first_seq, next_seq, data_end, data_end + len(closing), index, True)


def _last_keyframe(seg: Segment, since: int | None) -> int:
    best = HEADER_SIZE
    for e in seg.index:
        if since is not None and e.seq > since:
            break
        best = e.offset
    return best


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, min(1 << 20, size - pos), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        log.warning("fsync of a closed segment failed: %s", _reason(e))
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()
