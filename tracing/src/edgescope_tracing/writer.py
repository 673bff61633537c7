"""Writing a trace file: append records; frames reach the file by size and by time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from ._frames import HEADER_SIZE, MAX_PAYLOAD, IndexEntry, StreamEncoder
from .errors import TraceError
from .files import open_regular
from .records import Record, RunStart

__all__ = ["TraceWriter", "FsyncPolicy"]

FsyncPolicy = Literal["never", "close", "flush"]


class TraceWriter:
    """Append records to a new trace file.

    Records collect in an open frame. The frame is written when it is full (``flush_bytes`` of
    payload, at most 64 KiB) or when it has been open ``flush_interval`` seconds (checked on
    ``append`` and ``poll``), or on ``flush()``. Whatever was written survives the death of the
    writing process; ``fsync`` says when it is also forced to the disk: ``"flush"`` after each
    write, ``"close"`` once at close (the default), ``"never"``.

    ``close()`` writes the keyframe index, so a reader can seek without scanning. A file that
    was never closed is still readable: the index is rebuilt by a scan.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 1.0,
        flush_bytes: int = MAX_PAYLOAD // 2,
        fsync: FsyncPolicy = "close",
        keyframe_bytes: int = 1 << 20,
        exclusive: bool = False,
    ) -> None:
        if fsync not in ("never", "close", "flush"):
            raise ValueError(f"fsync must be 'never', 'close' or 'flush', not {fsync!r}")
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.flush_bytes = min(flush_bytes, MAX_PAYLOAD)
        self.fsync = fsync
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._stream = StreamEncoder(keyframe_bytes=keyframe_bytes)
        self._opened_at: float | None = None
        self._closed = False
        self._write(self._stream.take())

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def next_seq(self) -> int:
        return self._stream.encoder.next_seq

    @property
    def runs(self) -> dict[int, RunStart]:
        """The runs open in the file now (started and not ended), by number: a copy."""
        return dict(self._stream.encoder.runs)

    @staticmethod
    def checkpoint_runs(checkpoint: dict[str, Any]) -> list[RunStart]:
        """The runs open at a :meth:`checkpoint`; TraceError if it does not hold them."""
        from ._codec import Decoder

        dec = Decoder()
        try:
            return [dec._run_start(w) for w in checkpoint["runs"]]
        except (KeyError, TypeError, ValueError, IndexError, TraceError) as e:
            raise TraceError(f"the checkpoint's runs cannot be read: {e}") from None

    def append(self, rec: Record) -> int:
        """Add a record; returns its sequence number. May write a frame."""
        if self._closed:
            raise ValueError("append to a closed TraceWriter")
        seq = self._stream.add(rec)
        now = time.monotonic()
        if self._opened_at is None:
            self._opened_at = now
        if self._stream.pending >= self.flush_bytes or now - self._opened_at >= self.flush_interval:
            self.flush()
        return seq

    def poll(self) -> None:
        """Write the open frame if it has waited ``flush_interval``; call it from a timer."""
        if (
            self._opened_at is not None
            and time.monotonic() - self._opened_at >= self.flush_interval
        ):
            self.flush()

    def flush(self) -> None:
        """Write the open frame (and any full ones) to the file now."""
        if self._closed:
            return
        self._opened_at = None
        self._write(self._stream.take())
        if self.fsync == "flush":
            os.fsync(self._fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self, *, index: bool = True) -> None:
        """Write what is left and the index; fsync unless the policy is ``"never"``.

        ``index=False`` leaves the file open-ended, as a writer that goes on in it later
        (:meth:`resume`) wants it; readers rebuild the index by a scan meanwhile."""
        if self._closed:
            return
        try:
            self._write(self._stream.index_bytes() if index else self._stream.take())
            if self.fsync != "never":
                os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)

    def checkpoint(self) -> dict[str, Any]:
        """What :meth:`resume` needs to go on writing this file in another process, as plain
        msgpack-able data; true of the file as it is after :meth:`flush` (call it then).

        A writer that appends across its own restarts (the fleet archiver) keeps it beside the
        file: whatever was written after the checkpoint is cut on resume, so the file and the
        checkpoint always agree."""
        from ._codec import Encoder

        if self._stream.pending:
            raise ValueError("checkpoint() of a writer with an open frame: flush() first")
        enc = self._stream.encoder
        return {
            "offset": self._stream.offset,
            "next_seq": enc.next_seq,
            "keyframes": enc.keyframes,
            "last_step": enc.last_step,
            "last_t": enc.last_t,
            "ids": [enc._next_sid, enc._next_fid, enc._next_stid],
            "index": [[e.offset, e.seq, e.t_us, e.last_step, e.number] for e in self._stream.index],
            "runs": [Encoder._run_start(r, r.seq) for r in enc.runs.values()],
        }

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        checkpoint: dict[str, Any],
        *,
        flush_interval: float = 1.0,
        flush_bytes: int = MAX_PAYLOAD // 2,
        fsync: FsyncPolicy = "close",
        keyframe_bytes: int = 1 << 20,
    ) -> TraceWriter:
        """Go on writing ``path`` where :meth:`checkpoint` left it: bytes after it (what a
        killed writer wrote since, or an index a clean close appended) are cut, and the stream
        goes on with a keyframe that restates the runs still open, with sequence numbers and
        interned ids above those already in the file. TraceError if the checkpoint does not
        fit the file; :class:`NotRegularFileError` if ``path`` is a symbolic link, a FIFO or
        anything but a regular file (the cut would go through a link to its target, and a
        FIFO's open would wait for a reader)."""
        from ._codec import Decoder

        try:
            offset = int(checkpoint["offset"])
            next_seq = int(checkpoint["next_seq"])
            ids = [int(x) for x in checkpoint["ids"]]
            index = [IndexEntry(*(int(x) for x in e)) for e in checkpoint["index"]]
            dec = Decoder()
            runs = [dec._run_start(w) for w in checkpoint["runs"]]
            keyframes = int(checkpoint["keyframes"])
            last_step = int(checkpoint["last_step"])
            last_t = checkpoint["last_t"]
        except (KeyError, TypeError, ValueError) as e:
            raise TraceError(f"cannot resume {path}: the checkpoint is not one ({e})") from None
        self = cls.__new__(cls)
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.flush_bytes = min(flush_bytes, MAX_PAYLOAD)
        self.fsync = fsync
        fd = open_regular(self.path, os.O_WRONLY, follow=False)  # a cut is never through a link
        try:
            size = os.fstat(fd).st_size
            if offset < HEADER_SIZE or size < offset:
                raise TraceError(
                    f"cannot resume {path}: it holds {size} bytes, the checkpoint {offset}"
                )
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        stream = StreamEncoder(keyframe_bytes=keyframe_bytes, header=False)
        stream.offset = offset
        stream.index = index
        enc = stream.encoder
        enc.next_seq = next_seq
        enc._next_sid, enc._next_fid, enc._next_stid = ids
        enc.runs = {r.run: r for r in runs}
        enc.keyframes = keyframes
        enc.last_step = last_step
        enc.last_t = int(last_t) if last_t is not None else None
        self._stream = stream
        self._opened_at = None
        self._closed = False
        return self

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
