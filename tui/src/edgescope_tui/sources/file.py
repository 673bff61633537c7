"""A trace file as a source: read off the event loop, seekable through the keyframe index.

Reading happens in a worker thread, a chunk at a time, so the UI never waits on the disk. Damage
met on the way (a bad checksum, bytes between frames, an incomplete last frame) becomes a
:class:`Status` with ``state="gap"``, placed just before the first record after the records it
cost (found by the jump in sequence numbers), and everything readable around it is still
yielded. Seeking starts at the last keyframe at or before the time asked for, found in
the index a closed file ends with (or rebuilt once by a scan of frame heads), so a seek costs at
most one keyframe interval of decoding however long the trace is.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import threading
from collections.abc import AsyncIterator, Generator
from pathlib import Path

from edgescope_tracing import (
    Damage,
    IndexEntry,
    Metrics,
    Record,
    StreamDecoder,
    TraceReader,
)

from .base import Status

__all__ = ["FileSource"]

Batch = tuple[list[Record], list[Damage]]

READ_CHUNK = 1 << 18
"""Bytes decoded per batch when reading from the start: a few thousand records."""
SEEK_CHUNK = 1 << 16
"""Bytes decoded per batch after a seek: small, so a reader that stops early reads little."""


def _batches(
    path: Path,
    offset: int,
    *,
    chunk: int,
    follow: bool,
    stop: threading.Event,
    poll: float = 0.2,
) -> Generator[Batch, None, None]:
    """Decoded records and newly met damage, one chunk at a time, from a frame boundary.

    ``offset`` 0 means the start of the file (the header is checked); any other offset must be
    where a frame starts (a keyframe's offset from the index).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        dec = StreamDecoder(header=offset == 0, name=str(path), offset=offset)
        pos = offset
        seen = 0
        while not stop.is_set():
            data = os.pread(fd, chunk, pos)
            if data:
                pos += len(data)
                recs = dec.feed(data)
                new = dec.damage[seen:]
                seen = len(dec.damage)
                if recs or new:
                    yield recs, new
                continue
            if not follow or dec.index_offset is not None:
                break
            stop.wait(poll)
        if dec.version is not None:
            recs = dec.close()
            yield recs, dec.damage[seen:]
    finally:
        os.close(fd)


def damage_status(d: Damage, lost: tuple[int, int] | None = None) -> Status:
    """How a damaged span reads on screen; ``lost`` is the range of sequence numbers lost."""
    if d.truncated:
        return Status(
            "gap",
            f"the trace ends in an incomplete frame at byte {d.offset} (the writer stopped "
            "mid-write); everything before it is shown",
        )
    what = f"; records {lost[0]}-{lost[1]} lost" if lost is not None else ""
    return Status(
        "gap", f"{d.length} damaged bytes at byte {d.offset} skipped ({d.reason}){what}", lost
    )


def _record_end(rec: Record) -> int:
    if isinstance(rec, Metrics) and rec.times_us:
        return rec.times_us[-1]
    return rec.t_us


class FileSource:
    """Records of a trace file, from the start or from any time (``seek``).

    Opening checks the header: a file that is not a trace raises
    :class:`edgescope_tracing.NotATraceError` with one sentence that names it. With
    ``follow=True`` the source waits for more records at the end of a file still being written,
    until the writer closes it or the source is closed.
    """

    def __init__(self, path: str | os.PathLike[str], *, follow: bool = False) -> None:
        self.path = Path(path)
        self.label = self.path.name
        self.follow = follow
        self._reader = TraceReader(self.path)
        self._stop = threading.Event()
        self._reads: set[threading.Event] = set()
        self._index: list[IndexEntry] | None = None
        self._index_lock = threading.Lock()

    @property
    def size(self) -> int:
        """The file's size in bytes now."""
        return self._reader.size

    def index(self) -> list[IndexEntry]:
        """The keyframe index (blocking: call it from a thread). Read once, then kept."""
        with self._index_lock:
            if self._index is None:
                self._index = list(self._reader.index())
            return self._index

    async def _iterate(
        self, offset: int, chunk: int, follow: bool
    ) -> AsyncIterator[Record | Status]:
        stop = threading.Event()
        self._reads.add(stop)
        if self._stop.is_set():
            stop.set()
        gen = _batches(self.path, offset, chunk=chunk, follow=follow, stop=stop)
        busy = threading.Lock()

        def step() -> Batch | None:
            with busy:
                return next(gen, None)

        def finish() -> None:
            with busy:
                gen.close()

        loop = asyncio.get_running_loop()
        pending: list[Damage] = []
        last_seq: int | None = None
        try:
            while not stop.is_set():
                batch = await loop.run_in_executor(None, step)
                if batch is None:
                    break
                recs, damage = batch
                pending += damage
                for rec in recs:
                    if pending and last_seq is not None and rec.seq > last_seq + 1:
                        # The records lost to the damage: say so where they are missing.
                        yield damage_status(pending.pop(0), (last_seq + 1, rec.seq - 1))
                    last_seq = rec.seq
                    yield rec
            for d in pending:
                yield damage_status(d)
        finally:
            # A read in flight ends at its next chunk or poll once ``stop`` is set; the
            # generator (and its file descriptor) is closed when it is free.
            stop.set()
            self._reads.discard(stop)
            if busy.acquire(blocking=False):
                try:
                    gen.close()
                finally:
                    busy.release()
            else:
                threading.Thread(target=finish, name="edgescope-file-close").start()

    async def stream(self) -> AsyncIterator[Record | Status]:
        """Every readable record from the start, damage marked where it was met, then ended."""
        async for item in self._iterate(0, READ_CHUNK, self.follow):
            yield item
        if not self._stop.is_set():
            yield Status("ended", f"end of {self.label}")

    async def time_span(self) -> tuple[int, int] | None:
        """First and last record times: the start of the file and the last keyframe interval."""
        return await asyncio.to_thread(self._time_span)

    def _time_span(self) -> tuple[int, int] | None:
        stop = threading.Event()
        first: int | None = None
        for recs, _ in _batches(self.path, 0, chunk=SEEK_CHUNK, follow=False, stop=stop):
            first = next((r.t_us for r in recs if r.t_us > 0), None)
            if first is not None:
                stop.set()
                break
        if first is None:
            return None
        entries = self.index()
        offset = entries[-1].offset if entries else 0
        last = first
        for recs, _ in _batches(
            self.path, offset, chunk=READ_CHUNK, follow=False, stop=threading.Event()
        ):
            for r in recs:
                last = max(last, _record_end(r))
        return first, last

    def keyframe_offset(self, t_us: int) -> int:
        """Where to start reading for time ``t_us``: its keyframe's offset, or 0 (the start)."""
        entries = self.index()
        i = bisect.bisect_right([e.t_us for e in entries], t_us) - 1
        return entries[i].offset if i >= 0 else 0

    async def seek(self, t_us: int) -> AsyncIterator[Record | Status]:
        """Records from the last keyframe at or before ``t_us`` onward (the keyframe first)."""
        offset = await asyncio.to_thread(self.keyframe_offset, t_us)
        async for item in self._iterate(offset, SEEK_CHUNK, False):
            yield item

    async def close(self) -> None:
        """Stop every read in progress and release the file."""
        self._stop.set()
        for stop in list(self._reads):
            stop.set()
        self._reader.close()
