"""Damaged traces: bit flips, truncation, inserted garbage, and arbitrary bytes.

No exception escapes the reader or the stream decoder; every frame the damage did not touch
comes back (compared by sequence number); the damage is reported with its offset; a cut-off
last frame is reported as truncated, which is what a crash mid-write leaves.
"""

from __future__ import annotations

import contextlib
import random
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from edgescope_tracing import (
    Damage,
    DecodeError,
    Event,
    GpuSample,
    Record,
    StreamDecoder,
    StreamEncoder,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing._codec import Decoder, Encoder
from edgescope_tracing._frames import FRAME_HEAD_SIZE, HEADER_SIZE, MAX_PAYLOAD, header_bytes
from edgescope_tracing.summary import summarize_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracegen import JSON, any_record, key

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Frame:
    start: int
    end: int
    seqs: list[int]
    """Sequence numbers of the records in the frame that a reader yields."""


def frames_of(data: bytes) -> list[Frame]:
    """The frames of a valid stream, with the sequence numbers each holds."""
    out = []
    pos = HEADER_SIZE
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos + 2)
        end = pos + FRAME_HEAD_SIZE + length
        items = msgpack.unpackb(data[pos + FRAME_HEAD_SIZE : end], raw=False)
        seqs = [w[1] for w in items if w[0] not in (0, 11) and not (w[0] == 12 and len(w) == 2)]
        out.append(Frame(pos, end, seqs))
        pos = end
    assert pos == len(data)
    return out


def make_trace(records: list[Record], flush_bytes: int) -> tuple[bytes, dict[int, str]]:
    """A closed trace file's bytes (many small frames), and each record's key by seq."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        with TraceWriter(path, flush_bytes=flush_bytes, keyframe_bytes=400) as w:
            for rec in records:
                w.append(rec)
        with TraceReader(path) as r:
            by_seq = {rec.seq: key(rec) for rec in r}
        return path.read_bytes(), by_seq


def read_all(data: bytes, rng: random.Random) -> tuple[list[Record], list[Damage]]:
    """Read damaged bytes both ways (file and stream in random chunks); both must agree."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        path.write_bytes(data)
        with TraceReader(path) as r:
            from_file = list(r)
            damage = r.damage
            r.index()  # must not raise either
            list(r.seek(seq=len(from_file) // 2))
    dec = StreamDecoder()
    from_stream: list[Record] = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 5, 100, 4096, 1 << 17])
        from_stream += dec.feed(data[pos : pos + n])
        pos += n
    from_stream += dec.close()
    assert [key(x) for x in from_stream] == [key(x) for x in from_file]
    assert dec.damage == damage
    return from_file, damage


def check_recovered(
    got: list[Record], by_seq: dict[int, str], frames: list[Frame], touched: set[int]
) -> None:
    """Every record of every untouched frame is back (its strings may have been lost)."""
    recovered = {rec.seq: rec for rec in got}
    for i, fr in enumerate(frames):
        if i in touched:
            continue
        for seq in fr.seqs:
            assert seq in recovered, f"record {seq} of undamaged frame {i} was lost"
            k = key(recovered[seq])
            assert k == by_seq[seq] or "<lost" in k


def touched_frames(frames: list[Frame], lo: int, hi: int) -> set[int]:
    return {i for i, f in enumerate(frames) if f.start < hi and lo < f.end}


def covered(damage: list[Damage], pos: int) -> bool:
    return any(d.offset <= pos < d.offset + d.length for d in damage)


records_for_damage = st.lists(any_record, min_size=3, max_size=40)


@FAST
@given(records=records_for_damage, flush=st.integers(1, 600), data=st.data())
def test_bit_flips(records: list[Record], flush: int, data: st.DataObject) -> None:
    clean, by_seq = make_trace(records, flush)
    frames = frames_of(clean)
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(HEADER_SIZE, len(clean) - 1), st.integers(0, 7)),
            min_size=1,
            max_size=4,
        ),
        label="flips",
    )
    damaged = bytearray(clean)
    for pos, bit in flips:
        damaged[pos] ^= 1 << bit
    rng = random.Random(len(flips))
    got, damage = read_all(bytes(damaged), rng)
    touched = set().union(*(touched_frames(frames, p, p + 1) for p, _ in flips))
    check_recovered(got, by_seq, frames, touched)
    changed = [p for p in range(len(clean)) if damaged[p] != clean[p]]
    for p in changed:
        assert covered(damage, p), f"flip at {p} not reported: {damage}"
    assert all(d.offset >= HEADER_SIZE for d in damage)


@FAST
@given(records=records_for_damage, flush=st.integers(1, 600), data=st.data())
def test_truncation(records: list[Record], flush: int, data: st.DataObject) -> None:
    clean, by_seq = make_trace(records, flush)
    frames = frames_of(clean)
    cut = data.draw(st.integers(HEADER_SIZE, len(clean) - 1), label="cut")
    got, damage = read_all(clean[:cut], random.Random(cut))
    kept = [f for f in frames if f.end <= cut]
    check_recovered(got, by_seq, kept, set())
    assert {r.seq for r in got} == {s for f in kept for s in f.seqs}
    if any(f.start == cut for f in frames):
        assert damage == []
    else:
        (cut_frame,) = (f for f in frames if f.start < cut < f.end)
        assert damage == [
            Damage(cut_frame.start, cut - cut_frame.start, damage[0].reason, truncated=True)
        ]
        assert "truncated" in damage[0].reason


@FAST
@given(
    records=records_for_damage,
    flush=st.integers(1, 600),
    garbage=st.binary(min_size=1, max_size=300),
    data=st.data(),
)
def test_inserted_garbage(
    records: list[Record], flush: int, garbage: bytes, data: st.DataObject
) -> None:
    clean, by_seq = make_trace(records, flush)
    frames = frames_of(clean)
    at_boundary = data.draw(st.booleans(), label="at a frame boundary")
    if at_boundary:
        at = data.draw(st.sampled_from([f.start for f in frames]), label="at")
    else:
        at = data.draw(st.integers(HEADER_SIZE, len(clean)), label="at")
    damaged = clean[:at] + garbage + clean[at:]
    got, damage = read_all(damaged, random.Random(at))
    touched = touched_frames(frames, at, at + 1) if not at_boundary else set()
    # An insertion inside a frame splits it: the frame itself is lost, nothing else.
    check_recovered(got, by_seq, frames, {i for i in touched if frames[i].start < at})
    assert damage, "inserted garbage went unreported"
    # Where the bytes really differ: an insertion that repeats the bytes beside it is the same
    # as one a little further on.
    p = next(i for i in range(len(damaged)) if i >= len(clean) or damaged[i] != clean[i])
    q = 0
    while q < len(clean) - p and damaged[-1 - q] == clean[-1 - q]:
        q += 1
    # The inserted bytes lie somewhere between the latest start and the earliest end that
    # the unchanged prefix and suffix allow (p and q may cross where the insertion repeats
    # its neighbours: an e5 inserted before e5 5c).
    lo = max(0, min(p, len(damaged) - q) - len(garbage))
    window = range(lo, max(len(damaged) - q, p + len(garbage)))
    assert any(covered(damage, i) for i in window)
    if at_boundary:
        assert damage == [Damage(at, len(garbage), damage[0].reason)]


@FAST
@given(tail=st.binary(max_size=2000), seed=st.integers(0, 1 << 16))
def test_arbitrary_bytes_after_a_header(tail: bytes, seed: int) -> None:
    got, damage = read_all(header_bytes() + tail, random.Random(seed))
    if tail:
        assert got or damage


def framed(payload: bytes) -> bytes:
    return struct.pack("<2sII", b"\xe5\x5c", len(payload), zlib.crc32(payload)) + payload


wire_records = st.lists(
    st.one_of(
        st.builds(
            lambda kind, rest: [kind, *rest],
            st.integers(0, 14),
            st.lists(st.one_of(JSON, st.lists(JSON, max_size=5)), max_size=20),
        ),
        JSON,
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.one_of(wire_records, st.binary(max_size=80)), max_size=6))
def test_well_framed_nonsense(frames: list) -> None:
    """Frames with good checksums around payloads that are not valid records."""
    body = b"".join(
        framed(f if isinstance(f, bytes) else msgpack.packb(f, use_bin_type=True)) for f in frames
    )
    valid = StreamEncoder()
    valid.add(Event("mark", "still here", t_us=7))
    good = valid.take()
    got, _damage = read_all(good + body + good[HEADER_SIZE:], random.Random(len(body)))
    marks = [r for r in got if isinstance(r, Event) and r.message == "still here"]
    assert len(marks) == 2


def test_damage_is_summarized(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path, flush_bytes=1) as w:
        for i in range(10):
            w.append(GpuSample(0, "H200", temp_c=40.0 + i, t_us=i))
    data = bytearray(path.read_bytes())
    frames = frames_of(bytes(data))
    data[frames[3].start + FRAME_HEAD_SIZE + 1] ^= 0xFF
    path.write_bytes(bytes(data[: frames[-1].start + 5]))  # also cut into the pointer frame
    with TraceReader(path) as r:
        s = summarize_file(r)
    assert s.damaged_frames == 1
    assert s.truncated
    assert s.damage[0].offset == frames[3].start
    assert s.damage[0].reason == "bad checksum"
    assert s.kinds["gpu"] == 9
    assert not s.indexed


def test_impossible_length_is_skipped() -> None:
    enc = StreamEncoder()
    enc.add(Event("log", "one"))
    first = enc.take()
    enc.add(Event("log", "two"))
    second = enc.take()
    bogus = struct.pack("<2sII", b"\xe5\x5c", MAX_PAYLOAD + 1, 0)
    dec = StreamDecoder()
    got = dec.feed(first + bogus + second) + dec.close()
    assert [r.message for r in got if isinstance(r, Event)] == ["one", "two"]
    assert dec.damage == [
        Damage(len(first), len(bogus), f"impossible frame length {MAX_PAYLOAD + 1}")
    ]


def mutate(node: Any, rng: random.Random, fuzz: list[Any]) -> Any:
    """A copy of a wire array with one element somewhere replaced, dropped or added."""
    if not isinstance(node, list) or not node or rng.random() < 0.15:
        return rng.choice(fuzz)
    node = list(node)
    i = rng.randrange(len(node))
    op = rng.random()
    if op < 0.6:
        node[i] = mutate(node[i], rng, fuzz)
    elif op < 0.8:
        del node[i:]
    else:
        node.append(rng.choice(fuzz))
    return node


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(any_record, min_size=1, max_size=8),
    fuzz=st.lists(JSON, min_size=1, max_size=5),
    seed=st.integers(0, 1 << 32),
)
def test_mutated_records(records: list[Record], fuzz: list[Any], seed: int) -> None:
    """Valid records with one field changed to something else: a DecodeError or a record."""
    rng = random.Random(seed)
    encoder = Encoder()
    wires = [w for rec in records for w in encoder.encode(rec)]
    mutated = [mutate(w, rng, fuzz) for w in wires for _ in range(3)]
    decoder = Decoder()
    for w in mutated:
        with contextlib.suppress(DecodeError):
            decoder.decode(w)
    # The same, framed with good checksums between good frames, through the stream decoder.
    body = framed(msgpack.packb(mutated, use_bin_type=True))
    valid = StreamEncoder()
    valid.add(Event("mark", "still here", t_us=7))
    good = valid.take()
    got, _damage = read_all(good + body + good[HEADER_SIZE:], rng)
    assert sum(1 for r in got if isinstance(r, Event) and r.message == "still here") == 2


def test_a_lost_keyframe_never_resolves_a_string_to_a_stale_one() -> None:
    """Interned ids are unique in a stream: a reference whose definition (and the keyframe
    before it) was lost reads as lost, never as the string the id meant before the keyframe."""
    enc = StreamEncoder(keyframe_bytes=60)
    enc.add(Event("alpha", "x" * 100, t_us=1))
    stream = enc.take()
    enc.add(Event("beta", "second", t_us=2))  # a keyframe first: the tables restart
    stream += enc.take()
    enc.add(Event("beta", "third", t_us=3))  # refers to "beta" defined in the frame before
    stream += enc.take()
    frames = frames_of(stream)
    assert len(frames) == 3
    damaged = bytearray(stream)
    damaged[frames[1].start + FRAME_HEAD_SIZE] ^= 0x01
    dec = StreamDecoder()
    got = [r for r in dec.feed(bytes(damaged)) + dec.close() if isinstance(r, Event)]
    assert [(e.kind, e.message) for e in got] == [
        ("alpha", "x" * 100),
        ("<lost string #1>", "third"),
    ]
    assert dec.decoder.unresolved == 1
    assert [(d.offset, d.reason) for d in dec.damage] == [(frames[1].start, "bad checksum")]


def test_a_damaged_span_longer_than_the_decoders_buffer_is_reported_where_it_is() -> None:
    """Issue #11 item 10: a span over 1 MiB came back at a wrong offset with a negative length.

    The decoder compacts its buffer as it goes; the span's start must survive that.
    """
    enc = StreamEncoder()
    enc.add(Event("mark", "before", t_us=1))
    head = enc.take()
    enc.add(Event("mark", "after", t_us=2))
    tail = enc.take()
    garbage = b"\x00" * (3 << 20)  # no sync mark in it: one span
    data = head + garbage + tail
    for chunk in (1 << 20, 4096, 1 << 17):
        dec = StreamDecoder()
        got: list[Record] = []
        for pos in range(0, len(data), chunk):
            got += dec.feed(data[pos : pos + chunk])
        got += dec.close()
        assert [r.message for r in got if isinstance(r, Event)] == ["before", "after"]
        assert dec.damage == [Damage(len(head), len(garbage), "bytes between frames")]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        path.write_bytes(data)
        with TraceReader(path) as r:
            assert len(list(r)) == 3  # the keyframe, two events
            assert r.damage == [Damage(len(head), len(garbage), "bytes between frames")]
