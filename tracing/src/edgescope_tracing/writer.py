"""Writing a trace file: append records; frames reach the file by size and by time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from ._frames import MAX_PAYLOAD, StreamEncoder
from .records import Record

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

    def close(self) -> None:
        """Write what is left and the index; fsync unless the policy is ``"never"``."""
        if self._closed:
            return
        try:
            self._write(self._stream.index_bytes())
            if self.fsync != "never":
                os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
