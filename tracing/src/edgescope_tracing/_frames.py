"""The byte level: file header, frames, and the incremental stream encoder and decoder.

A stream (a file is a saved stream) is ``HEADER`` then frames. A frame is::

    sync (2 bytes, E5 5C) | payload length (u32 LE) | CRC-32 of the payload (u32 LE) | payload

and its payload is one msgpack array of records. A frame is the unit of durability: it is
written whole or it is damaged, and a reader that meets damage skips to the next good frame.
"""

from __future__ import annotations

import struct
import typing
import zlib
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from ._codec import FRAME_RESERVE, INDEX_POINTER, Decoder, Encoder, Wire, too_large
from ._codec import MAX_PAYLOAD as MAX_PAYLOAD  # its home is the codec; re-exported here
from .errors import DecodeError, NotATraceError, RecordTooLargeError, UnsupportedVersionError
from .records import Keyframe, Kind, Record, RunStart, StackSamples

MAGIC = b"\x89EDGSCP\n"
"""First 8 bytes of every trace. The high byte and the newline catch text-mode mangling."""
FORMAT_MAJOR = 1
FORMAT_MINOR = 3
"""1.1 appended ``processes`` to gpu records and ``sensors`` to thermal records; 1.2 added
keyframe parts (kind 13) and appended ``parts`` to keyframes; 1.3 added power records (kind
14), appended the parent, state and command and the cgroup's path, CPU quota and throttling,
memory.high, events and swap to process records, and ``cause`` to run ends."""
HEADER = struct.Struct("<8sHH")
HEADER_SIZE = HEADER.size
SYNC = b"\xe5\x5c"
FRAME_HEAD = struct.Struct("<2sII")
FRAME_HEAD_SIZE = FRAME_HEAD.size
TRUNCATED = "truncated frame at end of stream (an incomplete write)"
POINTER_PAYLOAD_SIZE = 12
POINTER_FRAME_SIZE = FRAME_HEAD_SIZE + POINTER_PAYLOAD_SIZE


def header_bytes() -> bytes:
    return HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR)


def parse_header(data: bytes, name: str = "the data") -> tuple[int, int]:
    """The (major, minor) version of a stream's header, or a one-sentence error."""
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        if not data:
            raise NotATraceError(f"{name} is empty, not an edgescope trace")
        if len(data) < HEADER_SIZE and MAGIC.startswith(data[:8]):
            raise NotATraceError(
                f"{name} is too short to be an edgescope trace ({len(data)} bytes)"
            )
        raise NotATraceError(f"{name} is not an edgescope trace (it starts with {data[:8]!r})")
    _, major, minor = HEADER.unpack_from(data)
    if major > FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f"{name} was written in trace format {major}.{minor}; this edgescope reads format "
            f"{FORMAT_MAJOR}.x and older: upgrade edgescope to read it"
        )
    return major, minor


def frame_bytes(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise too_large(len(payload), MAX_PAYLOAD, "a frame payload")
    return FRAME_HEAD.pack(SYNC, len(payload), zlib.crc32(payload)) + payload


def pointer_frame(index_offset: int) -> bytes:
    """The fixed-size last frame of a closed file: where the index frame starts."""
    payload = b"\x91\x92" + bytes([INDEX_POINTER]) + b"\xcf" + index_offset.to_bytes(8, "big")
    return frame_bytes(payload)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A keyframe's place in the stream: reading can start at ``offset``."""

    offset: int
    seq: int
    t_us: int
    last_step: int
    number: int


RECORD_TYPES: tuple[type, ...] = typing.get_args(Record)


class StreamEncoder:
    """Records in, bytes out: the header, then frames. No I/O and no clock of its own.

    ``add`` buffers a record's encoding into the open frame; ``take`` closes the open frame and
    returns the bytes ready to write or send. A keyframe starts a new frame before the first
    record, and before the first record added once ``keyframe_bytes`` bytes (written frames
    and the open one) have passed since the last keyframe; never inside a record, because the
    record was encoded against the interning tables that the keyframe restarts.
    ``offset`` counts every byte handed out, so the keyframe index holds stream offsets, which
    are file offsets for a file.
    """

    def __init__(self, *, keyframe_bytes: int = 1 << 20, header: bool = True) -> None:
        self.encoder = Encoder()
        self.keyframe_bytes = keyframe_bytes
        self.index: list[IndexEntry] = []
        self._packer = msgpack.Packer(use_bin_type=True)
        self._parts: list[bytes] = []
        self._size = 0
        self._out = bytearray(header_bytes() if header else b"")
        self.offset = 0
        self._since_keyframe: int | None = None
        self._keyframe_size = 0
        self._failed = False

    @property
    def pending(self) -> int:
        """Bytes of payload in the open frame."""
        return self._size

    @property
    def keyframe_size(self) -> int:
        """Payload bytes of the last keyframe (its parts included); 0 before the first."""
        return self._keyframe_size

    def _pack(self, wire: Wire) -> bytes:
        try:
            data: bytes = self._packer.pack(wire)
            return data
        except (TypeError, ValueError, OverflowError) as e:
            self._packer.reset()
            raise TypeError(f"record cannot be encoded: {e}") from None

    def add(self, rec: Record) -> int:
        """Encode one record into the open frame; returns its (last) sequence number.

        A record that cannot be encoded raises ``TypeError`` (or :class:`RecordTooLargeError`)
        and is not written; the stream stays valid (the next record starts a keyframe, so no
        later record refers to a string that was interned for the failed one).
        """
        if not isinstance(rec, RECORD_TYPES) or isinstance(rec, Keyframe):
            if isinstance(rec, Keyframe):
                raise ValueError("keyframes are written by the encoder itself, not appended")
            raise TypeError(f"not an edgescope record: {type(rec).__name__}")
        if self._keyframe_due():
            self._start_keyframe(rec.t_us)
        run_before = self.encoder.runs.get(rec.run) if isinstance(rec, RunStart) else None
        seq_before = self.encoder.next_seq
        try:
            wires = self.encoder.encode(rec)
            parts = [self._pack(w) for w in wires]
            size = sum(map(len, parts))
            if size + FRAME_RESERVE > MAX_PAYLOAD and len(parts) > 1:
                for w, p in zip(wires, parts, strict=True):
                    self._add_packed(p, w)
            else:
                self._add_packed_group(parts, size, wires[0])
        except (TypeError, ValueError) as e:
            self._failed = True
            split = isinstance(rec, StackSamples) and len(rec.samples) > 1
            if split and isinstance(e, RecordTooLargeError):
                # Too many new frames for one frame: the samples go in two records (the first
                # after a keyframe, which restarts the tables), numbered on, with no gap.
                assert isinstance(rec, StackSamples)
                self.encoder.next_seq = seq_before
                half = len(rec.samples) // 2
                self.add(replace(rec, samples=rec.samples[:half]))
                return self.add(replace(rec, samples=rec.samples[half:]))
            if isinstance(rec, RunStart):
                # The run was registered for restating at keyframes: forget it, or every
                # later keyframe would fail to encode too.
                self.encoder.runs.pop(rec.run, None)
                if run_before is not None:
                    self.encoder.runs[rec.run] = run_before
            raise
        return self.encoder.next_seq - 1

    def _keyframe_due(self) -> bool:
        if self._failed or self._since_keyframe is None:
            return True
        # A keyframe that restates many runs may be larger than the interval: the next one
        # waits for at least as many bytes of other records, or every record would be one.
        due = max(self.keyframe_bytes, 2 * self._keyframe_size)
        return self._since_keyframe + self._size >= due

    def _add_packed(self, part: bytes, wire: Wire) -> None:
        self._add_packed_group([part], len(part), wire)

    def _add_packed_group(self, parts: list[bytes], size: int, first: Wire) -> None:
        if size + FRAME_RESERVE > MAX_PAYLOAD:
            raise too_large(
                size, MAX_PAYLOAD - FRAME_RESERVE, f"a record of kind {Kind(first[0]).name}"
            )
        if self._size + size + FRAME_RESERVE > MAX_PAYLOAD:
            # A full frame closes; no keyframe here: this record was encoded against the
            # interning tables as they are, so a keyframe (which resets them) waits for the
            # next record.
            self._close_frame()
        self._parts.extend(parts)
        self._size += size

    def _start_keyframe(self, t_us: int) -> None:
        self._close_frame()
        self._failed = False
        start = self.offset + len(self._out)
        wires = self.encoder.keyframe(t_us)
        head = wires[0]
        self.index.append(IndexEntry(start, head[1], head[2], head[4], head[3]))
        size = 0
        for w in wires:
            part = self._pack(w)
            if self._parts and self._size + len(part) + FRAME_RESERVE > MAX_PAYLOAD:
                self._close_frame()  # each part fits a frame by construction
            self._parts.append(part)
            self._size += len(part)
            size += len(part)
        self._since_keyframe = 0
        self._keyframe_size = size

    def _close_frame(self) -> None:
        if not self._parts:
            return
        payload = _array_header(len(self._parts)) + b"".join(self._parts)
        self._parts = []
        self._size = 0
        frame = frame_bytes(payload)
        self._out += frame
        if self._since_keyframe is not None:
            self._since_keyframe += len(frame)

    def take(self) -> bytes:
        """Close the open frame; all bytes not yet taken."""
        self._close_frame()
        out = bytes(self._out)
        self._out.clear()
        self.offset += len(out)
        return out

    def index_bytes(self) -> bytes:
        """The index frame and the pointer frame that end a closed file."""
        out = self.take()
        index_offset = self.offset
        entries = [[e.offset, e.seq, e.t_us, e.last_step, e.number] for e in self.index]
        wire = [Kind.INDEX.value, self.encoder.next_seq, 0, entries]
        body = self._pack(wire)
        if len(body) + 8 > MAX_PAYLOAD:
            # A huge file: keep every n-th keyframe so that the index fits one frame.
            step = len(body) // (MAX_PAYLOAD - 1024) + 1
            wire[3] = entries[::step]
            body = self._pack(wire)
        tail = frame_bytes(_array_header(1) + body) + pointer_frame(index_offset)
        self.offset += len(tail)
        return out + tail


@dataclass(frozen=True, slots=True)
class Damage:
    """A span of the stream that could not be read, and why."""

    offset: int
    length: int
    reason: str
    truncated: bool = False
    """True for an incomplete last frame: what a crash mid-write leaves, normal, not an error."""


class StreamDecoder:
    """Bytes in (any chunking), records out; damage is recorded in ``damage`` and skipped."""

    def __init__(self, *, header: bool = True, name: str = "the stream", offset: int = 0) -> None:
        self.decoder = Decoder()
        self.damage: list[Damage] = []
        self.version: tuple[int, int] | None = None if header else (FORMAT_MAJOR, FORMAT_MINOR)
        self.index_offset: int | None = None
        """Set when the pointer frame that ends a closed file was read."""
        self.frames = 0
        self.name = name
        self._buf = bytearray()
        self._pos = 0
        self._base = offset
        self._garbage_start: int | None = None
        """Stream offset (not buffer position: the buffer is compacted) where skipping began."""
        self._garbage_reason = ""
        self._garbage_truncated = False

    @property
    def offset(self) -> int:
        """Stream offset of the next unread byte."""
        return self._base + self._pos

    @property
    def skipping(self) -> str | None:
        """Why bytes are being skipped as damage right now (not yet listed in ``damage``).

        None while the stream is clean. A live producer on a socket never sends damage, so a
        server can close its connection at once instead of waiting for the next good frame.
        """
        if self._garbage_start is None or self._garbage_truncated:
            return None
        return self._garbage_reason

    def feed(self, data: bytes) -> list[Record]:
        self._buf += data
        out: list[Record] = []
        if self.version is None:
            if len(self._buf) < HEADER_SIZE and MAGIC.startswith(bytes(self._buf[:8])):
                return out
            self.version = parse_header(bytes(self._buf[:HEADER_SIZE]), self.name)
            self._pos = HEADER_SIZE
        self._scan(out)
        if self._pos > 1 << 20:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        return out

    def _note_garbage(self, at: int, reason: str, truncated: bool = False) -> None:
        if self._garbage_start is None:
            self._garbage_start = self._base + at
            self._garbage_reason = reason
            self._garbage_truncated = truncated

    def _end_garbage(self, at: int) -> None:
        start = self._garbage_start
        if start is None:
            return
        self._garbage_start = None
        reason, truncated = self._garbage_reason, self._garbage_truncated
        if truncated and at < len(self._buf):
            # A frame that seemed cut short by the end is followed by good frames after all:
            # its length was damaged.
            reason, truncated = "damaged frame length (runs past the next frame)", False
        self.damage.append(Damage(start, self._base + at - start, reason, truncated))

    def _scan(self, out: list[Record], final: bool = False) -> None:
        buf = self._buf
        while True:
            pos = self._pos
            avail = len(buf) - pos
            if avail < FRAME_HEAD_SIZE:
                if final and avail > 0:
                    whole = SYNC.startswith(bytes(buf[pos : pos + 2]))
                    reason = TRUNCATED if whole else "bytes after the last frame"
                    self._note_garbage(pos, reason, truncated=whole)
                    self._pos = len(buf)
                return
            if buf[pos : pos + 2] != SYNC:
                nxt = buf.find(SYNC, pos + 1)
                self._note_garbage(pos, "bytes between frames")
                if nxt < 0:
                    # Keep the last byte unless the stream is over: it may start a sync mark.
                    self._pos = len(buf) if final else len(buf) - 1
                    if not final:
                        return
                    continue
                self._pos = nxt
                continue
            _, length, crc = FRAME_HEAD.unpack_from(buf, pos)
            if length > MAX_PAYLOAD:
                self._note_garbage(pos, f"impossible frame length {length}")
                self._pos = pos + 1
                continue
            end = pos + FRAME_HEAD_SIZE + length
            if end > len(buf):
                if not final:
                    return
                self._note_garbage(pos, TRUNCATED, truncated=True)
                self._pos = pos + 1
                continue
            payload = bytes(buf[pos + FRAME_HEAD_SIZE : end])
            if zlib.crc32(payload) != crc:
                self._note_garbage(pos, "bad checksum")
                self._pos = pos + 1
                continue
            try:
                records, errors = self._decode_payload(payload)
            except DecodeError as e:
                self._end_garbage(pos)
                self.damage.append(Damage(self._base + pos, end - pos, f"undecodable payload: {e}"))
                self._pos = end
                continue
            self._end_garbage(pos)
            if errors:
                # The frame is intact (its checksum holds) but some records in it are not valid:
                # they are reported, the others in the frame are kept.
                self.damage.append(
                    Damage(
                        self._base + pos,
                        end - pos,
                        f"{len(errors)} undecodable record(s) in the frame: {errors[0]}",
                    )
                )
            self.frames += 1
            out.extend(records)
            self._pos = end

    def _decode_payload(self, payload: bytes) -> tuple[list[Record], list[str]]:
        try:
            items = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)
        except (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        ) as e:
            raise DecodeError(str(e) or type(e).__name__) from None
        if type(items) is not list:
            raise DecodeError("a frame payload is not an array of records")
        out: list[Record] = []
        errors: list[str] = []
        for w in items:
            if type(w) is list and len(w) == 2 and w[0] == INDEX_POINTER and type(w[1]) is int:
                self.index_offset = w[1]
                continue
            held = self.decoder.incomplete(w)
            if held is not None:
                out.append(held)
            try:
                rec = self.decoder.decode(w)
            except DecodeError as e:
                errors.append(str(e))
                continue
            if rec is not None:
                out.append(rec)
        return out, errors

    def close(self) -> list[Record]:
        """End of stream: frames held back as incomplete are settled, the rest reported.

        An incomplete last frame is what a crash mid-write leaves: it is reported with
        ``truncated=True``, not treated as an error.
        """
        if self.version is None:
            parse_header(bytes(self._buf), self.name)
        out: list[Record] = []
        self._scan(out, final=True)
        self._end_garbage(len(self._buf))
        held = self.decoder.incomplete()
        if held is not None:
            out.append(held)
        return out


def decode_index(payload_records: Any) -> list[IndexEntry]:
    """Index entries from an index frame's decoded payload."""
    if type(payload_records) is not list or not payload_records:
        raise DecodeError("index frame is empty")
    w = payload_records[0]
    if type(w) is not list or len(w) < 4 or w[0] != Kind.INDEX or type(w[3]) is not list:
        raise DecodeError("index frame does not hold an index")
    out = []
    for e in w[3]:
        if type(e) is not list or len(e) < 5 or not all(type(x) is int for x in e[:5]):
            raise DecodeError("index entry is malformed")
        out.append(IndexEntry(*e[:5]))
    return out
