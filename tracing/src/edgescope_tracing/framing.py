"""The byte level in public, for programs that keep or relay streams whole.

The collector's segment store writes its stream as a ring of trace files, repairs the one a
crash left open and reads back the trailer of those closed cleanly; its server sends the
stream's header and walks whole frames of a segment; its MQTT publisher does the same. They
need the layout of a stream (``docs/trace-format.md``), not the encoder's internals, and this
module is what they import: the homes stay ``_frames`` (header, frames, the index and pointer
frames), ``_codec`` (the record encoder) and ``reader`` (reading a frame and the trailer), so
each fact is written once and the trailer is parsed in one place, :func:`read_trailer`.

- :func:`header_bytes`, :data:`HEADER_SIZE`, :func:`parse_header`: the stream header.
- :data:`FRAME_HEAD_SIZE`: a frame's sync mark, length and checksum.
- :class:`Encoder`: the record state of a stream (sequence numbers, interned tables, the runs
  open), which one :class:`~edgescope_tracing.StreamEncoder` per file can share so that the
  numbers go on from one file to the next.
- :func:`frame_span`: how far whole, valid frames reach in some bytes, and where the next good
  frame may start after damage.
- :func:`scan`: what an unclosed file holds (where its good frames end, its keyframes, the
  sequence number after its last record): what repairing it needs.
- :func:`trailer_bytes`: the index frame and the pointer frame that close a file.
- :func:`read_trailer`: the trailer of a file closed cleanly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ._codec import Encoder as Encoder
from ._frames import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SYNC,
    IndexEntry,
    StreamDecoder,
    StreamEncoder,
    header_bytes,
    parse_header,
)
from .reader import keyframe_entry, read_trailer

__all__ = [
    "FRAME_HEAD_SIZE",
    "HEADER_SIZE",
    "Encoder",
    "Scan",
    "frame_span",
    "header_bytes",
    "parse_header",
    "read_trailer",
    "scan",
    "trailer_bytes",
]


def frame_span(data: bytes | memoryview, start: int = 0) -> tuple[int, int]:
    """``(good_end, skip_to)`` over whole frames in ``data`` from ``start``.

    Walks complete, checksum-valid frames; stops at the first incomplete one (``skip_to`` ==
    ``good_end``) or at damage, where ``skip_to`` is the next sync mark (or the end of data)
    after it, so that the bytes in between can be passed over.
    """
    pos = start
    n = len(data)
    while pos + FRAME_HEAD_SIZE <= n:
        sync, length, crc = FRAME_HEAD.unpack_from(data, pos)
        if sync != SYNC or length > MAX_PAYLOAD:
            return pos, _next_sync(data, pos + 1)
        end = pos + FRAME_HEAD_SIZE + length
        if end > n:
            return pos, pos
        if zlib.crc32(data[pos + FRAME_HEAD_SIZE : end]) != crc:
            return pos, _next_sync(data, pos + 1)
        pos = end
    return pos, pos


def _next_sync(data: bytes | memoryview, pos: int) -> int:
    i = bytes(data[pos:]).find(SYNC)
    return len(data) if i < 0 else pos + i


@dataclass(frozen=True, slots=True)
class Scan:
    """What a file that was not closed holds, read from its bytes."""

    data_end: int
    """The end of its last complete, valid frame: what comes after is what a crash was
    writing (damage in between is passed over: good frames after it are kept)."""
    index: list[IndexEntry]
    """Its keyframes among the good frames before ``data_end``."""
    next_seq: int | None
    """One past the highest sequence number of a record read from the last keyframe on (or
    the start), None where none was read."""


def scan(data: bytes, name: str = "the file") -> Scan:
    """Scan a whole trace file's bytes (the header included) for what closing it needs."""
    data_end = _last_good_frame_end(data)
    index = _keyframes(data, data_end)
    start = index[-1].offset if index else HEADER_SIZE
    dec = StreamDecoder(header=False, name=name, offset=start)
    seqs = [rec.seq for rec in dec.feed(data[start:data_end]) + dec.close()]
    return Scan(data_end, index, max(seqs) + 1 if seqs else None)


def trailer_bytes(data_end: int, index: list[IndexEntry], next_seq: int) -> bytes:
    """The index frame and the pointer frame that close a file whose frames end at
    ``data_end``: written there, they make it a file closed cleanly, as ``TraceWriter.close``
    leaves one, which :func:`read_trailer` reads."""
    tail = StreamEncoder(header=False)
    tail.offset = data_end
    tail.index = list(index)
    tail.encoder.next_seq = next_seq
    return tail.index_bytes()


def _last_good_frame_end(data: bytes) -> int:
    pos = good = HEADER_SIZE
    while True:
        end, skip = frame_span(data, pos)
        if end > pos:
            good = end
        if skip <= end:
            return good
        pos = skip


def _keyframes(data: bytes, data_end: int) -> list[IndexEntry]:
    out: list[IndexEntry] = []
    view = memoryview(data)[:data_end]
    pos = HEADER_SIZE
    while pos < data_end:
        end, skip = frame_span(view, pos)
        while pos < end:
            length = FRAME_HEAD.unpack_from(data, pos)[1]
            body = data[pos + FRAME_HEAD_SIZE : pos + FRAME_HEAD_SIZE + length]
            entry = keyframe_entry(body, pos)
            if entry is not None:
                out.append(entry)
            pos += FRAME_HEAD_SIZE + length
        if skip <= end:
            break
        pos = skip
    return out
