"""Reading a trace file: iterate, seek by sequence number, time or step, follow as it grows."""

from __future__ import annotations

import os
import stat
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgpack

from ._frames import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    MAX_PAYLOAD,
    POINTER_FRAME_SIZE,
    SYNC,
    Damage,
    IndexEntry,
    StreamDecoder,
    decode_index,
    parse_header,
)
from .errors import DecodeError, NotATraceError
from .records import Keyframe, Metrics, Record, RunEnd, RunStart

__all__ = ["TraceReader", "keyframe_entry", "read_frame", "read_trailer"]

_CONTEXT = (Keyframe, RunStart, RunEnd)

CHUNK = 1 << 20


class TraceReader:
    """A trace file, read lazily with ``pread``.

    Opening checks the header and raises :class:`NotATraceError` or
    :class:`UnsupportedVersionError` with one sentence that names the file. Damage met while
    reading is skipped and listed in ``damage`` (offset, length, reason); it never raises.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            # Non-blocking: opening a FIFO must not wait for a writer (it is refused below).
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except IsADirectoryError:
            raise NotATraceError(f"{self.path} is a directory, not an edgescope trace") from None
        try:
            mode = os.fstat(self._fd).st_mode
            if stat.S_ISDIR(mode):
                raise NotATraceError(f"{self.path} is a directory, not an edgescope trace")
            if not stat.S_ISREG(mode):
                raise NotATraceError(
                    f"{self.path} is not a regular file (a pipe or a device); save the trace "
                    "to a file to read it here"
                )
            head = os.pread(self._fd, HEADER_SIZE, 0)
            self.version = parse_header(head, str(self.path))
        except BaseException:
            os.close(self._fd)
            raise
        self.damage: list[Damage] = []
        self.unknown_kinds = 0
        self.unresolved = 0
        self._index: list[IndexEntry] | None = None

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def records(self, offset: int = HEADER_SIZE) -> Iterator[Record]:
        """Every readable record from ``offset`` (a keyframe's offset, or the start)."""
        dec = StreamDecoder(header=False, name=str(self.path), offset=offset)
        self.damage = dec.damage
        pos = offset
        while True:
            chunk = os.pread(self._fd, CHUNK, pos)
            if not chunk:
                break
            pos += len(chunk)
            yield from dec.feed(chunk)
        yield from dec.close()
        self.unknown_kinds = dec.decoder.unknown_kinds
        self.unresolved = dec.decoder.unresolved

    # --- index and seeking -------------------------------------------------------------

    def index(self) -> list[IndexEntry]:
        """Keyframe places: from the index a closed file ends with, else rebuilt by a scan."""
        if self._index is None:
            self._index = self._read_index()
            if self._index is None:
                self._index = self._scan_index()
        return self._index

    @property
    def indexed(self) -> bool:
        """Whether the file ends with a readable index (it was closed cleanly)."""
        return self._read_index() is not None

    def _read_frame(self, offset: int) -> bytes | None:
        return read_frame(self._fd, offset)

    def _read_index(self) -> list[IndexEntry] | None:
        trailer = read_trailer(self._fd, self.size)
        return None if trailer is None else trailer[2]

    def _scan_index(self) -> list[IndexEntry]:
        """Find the keyframes by reading only the first record of each frame."""
        entries: list[IndexEntry] = []
        pos = HEADER_SIZE
        size = self.size
        while pos + FRAME_HEAD_SIZE <= size:
            payload = self._read_frame(pos)
            if payload is None:
                nxt = self._find_sync(pos + 1)
                if nxt < 0:
                    break
                pos = nxt
                continue
            entry = keyframe_entry(payload, pos)
            if entry is not None:
                entries.append(entry)
            pos += FRAME_HEAD_SIZE + len(payload)
        return entries

    def _find_sync(self, pos: int) -> int:
        while True:
            chunk = os.pread(self._fd, CHUNK + 1, pos)
            if len(chunk) < 2:
                return -1
            i = chunk.find(SYNC)
            if i >= 0:
                return pos + i
            pos += len(chunk) - 1

    def seek(
        self, *, seq: int | None = None, t_us: int | None = None, step: int | None = None
    ) -> Iterator[Record]:
        """Records from the target on, read from the last keyframe before it.

        The target is the first record with ``seq`` at least the one asked for; or the first
        record at or after the time (a metric batch: whose latest time is); or the first metric
        batch that holds a step at or past the one asked for. Everything from the target on is
        yielded. Before it, only the context is: keyframes (they restate the active runs) and
        run starts and ends.
        """
        given = [x is not None for x in (seq, t_us, step)]
        if sum(given) != 1:
            raise ValueError("seek takes exactly one of seq, t_us, step")
        entries = self.index()
        start = HEADER_SIZE
        # A keyframe's seq, t_us and last_step bound every record before it (its t_us is the
        # highest time before it, its last_step the highest step): start at the last keyframe
        # before which nothing can be at or after the target.
        for e in entries:
            if seq is not None and e.seq > seq:
                break
            if t_us is not None and e.t_us >= t_us:
                break
            if step is not None and e.last_step >= step:
                break
            start = e.offset
        started = False
        for rec in self.records(start):
            if not started:
                if seq is not None:
                    started = rec.seq >= seq
                elif t_us is not None:
                    if isinstance(rec, Metrics):
                        started = bool(rec.times_us) and max(rec.times_us) >= t_us
                    else:
                        started = rec.t_us >= t_us
                elif isinstance(rec, Metrics) and rec.steps and step is not None:
                    started = max(rec.steps) >= step
                if not started and not isinstance(rec, _CONTEXT):
                    continue
            yield rec

    # --- following a growing file ------------------------------------------------------------

    def follow(
        self,
        *,
        poll: float = 0.2,
        stop: threading.Event | None = None,
        offset: int = HEADER_SIZE,
    ) -> Iterator[Record]:
        """Every record, then new ones as the file grows, until it is closed or ``stop`` is set.

        A frame still being written is waited for, not reported as damage.
        """
        dec = StreamDecoder(header=False, name=str(self.path), offset=offset)
        self.damage = dec.damage
        pos = offset
        while True:
            chunk = os.pread(self._fd, CHUNK, pos)
            if chunk:
                pos += len(chunk)
                yield from dec.feed(chunk)
                continue
            if dec.index_offset is not None:
                break
            if stop is not None and stop.is_set():
                break
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)
        yield from dec.close()


def read_frame(fd: int, offset: int) -> bytes | None:
    """The payload of the frame at ``offset`` of the file open as ``fd``; None if no whole,
    valid frame is there (wrong sync mark, a length past the limit, a bad checksum, short)."""
    head = os.pread(fd, FRAME_HEAD_SIZE, offset)
    if len(head) < FRAME_HEAD_SIZE:
        return None
    sync, length, crc = FRAME_HEAD.unpack(head)
    if sync != SYNC or length > MAX_PAYLOAD:
        return None
    payload = os.pread(fd, length, offset + FRAME_HEAD_SIZE)
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return payload


def read_trailer(fd: int, size: int) -> tuple[int, int, list[IndexEntry]] | None:
    """``(index_offset, next_seq, index)`` of a file closed cleanly (``size`` bytes long), read
    from its last frame, the pointer, and the index frame it points at; None where either is
    missing or damaged (scan the frames instead). The one reader of the trailer: the
    collector's store uses it for its segments."""
    if size < HEADER_SIZE + POINTER_FRAME_SIZE:
        return None
    payload = read_frame(fd, size - POINTER_FRAME_SIZE)
    if payload is None or payload[:4] != b"\x91\x92\x0c\xcf":
        return None
    index_offset = int.from_bytes(payload[4:12], "big")
    if not HEADER_SIZE <= index_offset < size - POINTER_FRAME_SIZE:
        return None
    body = read_frame(fd, index_offset)
    if body is None:
        return None
    try:
        items = msgpack.unpackb(body, raw=False)
        index = decode_index(items)
        next_seq = items[0][1]
    except (
        DecodeError,
        ValueError,
        TypeError,
        IndexError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ):
        return None
    if type(next_seq) is not int:
        return None
    return index_offset, next_seq, index


def keyframe_entry(payload: bytes, offset: int) -> IndexEntry | None:
    """The index entry of a frame (its payload, at ``offset``) that starts with a keyframe."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    try:
        unpacker.read_array_header()
        first = unpacker.unpack()
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        msgpack.OutOfData,
    ):
        return None
    if (
        type(first) is list
        and len(first) >= 6
        and first[0] == 1
        and all(type(x) is int for x in first[1:5])
    ):
        return IndexEntry(offset, first[1], first[2], first[4], first[3])
    return None
