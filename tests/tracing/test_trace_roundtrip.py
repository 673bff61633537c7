"""Every record kind survives writer -> file -> reader, and encoder -> bytes -> decoder.

Keyframes are made frequent (a small ``keyframe_bytes``) so that reading from each one, with
none of the bytes before it, is tested too.
"""

from __future__ import annotations

import random
import tempfile
from itertools import pairwise
from pathlib import Path

import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    Event,
    Keyframe,
    Metrics,
    RecordTooLargeError,
    RunStart,
    StreamDecoder,
    StreamEncoder,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing._frames import HEADER_SIZE
from hypothesis import given, settings
from hypothesis import strategies as st
from tracegen import any_record, big_metrics, data_records, expected, key, record_lists

FAST = settings(max_examples=60, deadline=None)


def write_file(path: Path, records: list, keyframe_bytes: int, flush_bytes: int) -> list[int]:
    seqs = []
    with TraceWriter(path, keyframe_bytes=keyframe_bytes, flush_bytes=flush_bytes) as w:
        for rec in records:
            seqs.append(w.append(rec))
    return seqs


def check_from_keyframes(reader: TraceReader, everything: list) -> None:
    """From each keyframe, the records are exactly those after it in a read from the start."""
    for entry in reader.index():
        got = list(reader.records(entry.offset))
        assert isinstance(got[0], Keyframe)
        assert got[0].seq == entry.seq
        assert got[0].number == entry.number
        suffix = [r for r in everything if r.seq > entry.seq and not isinstance(r, Keyframe)]
        assert [key(r) for r in data_records(got)] == [key(r) for r in suffix]
        assert reader.damage == []
        assert reader.unresolved == 0


@FAST
@given(
    records=record_lists,
    keyframe_bytes=st.integers(1, 3000),
    flush_bytes=st.integers(1, 70_000),
)
def test_file_round_trip(records: list, keyframe_bytes: int, flush_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        seqs = write_file(path, records, keyframe_bytes, flush_bytes)
        assert seqs == sorted(set(seqs))
        with TraceReader(path) as reader:
            everything = list(reader)
            assert reader.damage == []
            assert reader.unresolved == 0
            assert reader.unknown_kinds == 0
            assert reader.indexed
            got = data_records(everything)
            assert [key(r) for r in got] == expected(records)
            # Every record's sequence number is the one append() returned for it.
            assert [r.seq for r in got] == seqs
            all_seqs = [r.seq for r in everything]
            assert all_seqs == sorted(set(all_seqs))
            assert isinstance(everything[0], Keyframe)
            index = reader.index()
            assert 1 <= len(index) <= max(1, len(records))
            if keyframe_bytes <= 7:
                # Smaller than any keyframe: the interval is twice the last keyframe's size
                # (1.2), so keyframes are never back to back with nothing between them.
                kf_seqs = [e.seq for e in index]
                assert all(b - a >= 2 for a, b in pairwise(kf_seqs))
            # The index written at close is the one a scan finds.
            assert reader.index() == reader._scan_index()
            check_from_keyframes(reader, everything)


@settings(max_examples=8, deadline=None)
@given(
    big=st.lists(big_metrics(), min_size=1, max_size=2),
    others=st.lists(any_record, max_size=5),
    keyframe_bytes=st.sampled_from([1, 5000, 1 << 20]),
)
def test_big_metric_batches(big: list, others: list, keyframe_bytes: int) -> None:
    records = big + others
    random.Random(len(others)).shuffle(records)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.est"
        seqs = write_file(path, records, keyframe_bytes, 32 * 1024)
        with TraceReader(path) as reader:
            everything = list(reader)
            assert reader.damage == []
            got = data_records(everything)
            assert [key(r) for r in got] == expected(records)
            # append() returns the sequence number of a batch's last chunk.
            chunk_ends = []
            i = 0
            for rec in records:
                n = len(expected([rec]))
                i += n
                chunk_ends.append(got[i - 1].seq)
            assert chunk_ends == seqs
            check_from_keyframes(reader, everything)
    # No value was rounded: the batch comes back bit for bit, float64 where needed.
    joined = [v for r in got if isinstance(r, Metrics) for v in r.values]
    originals = [v for r in records if isinstance(r, Metrics) for v in r.values]
    assert repr(joined) == repr(originals)


@FAST
@given(
    records=record_lists,
    keyframe_bytes=st.integers(1, 3000),
    data=st.data(),
)
def test_stream_round_trip_in_random_chunks(
    records: list, keyframe_bytes: int, data: st.DataObject
) -> None:
    enc = StreamEncoder(keyframe_bytes=keyframe_bytes)
    out = bytearray()
    for rec in records:
        enc.add(rec)
        if data.draw(st.booleans(), label="take"):
            out += enc.take()
    out += enc.take()
    stream = bytes(out)

    rng = random.Random(data.draw(st.integers(0, 1 << 32), label="chunk seed"))
    dec = StreamDecoder()
    got = []
    pos = 0
    while pos < len(stream):
        n = rng.choice([1, 2, 3, 7, 11, 64, 1000, 1 << 16])
        got += dec.feed(stream[pos : pos + n])
        pos += n
    got += dec.close()
    assert dec.damage == []
    assert dec.version == (FORMAT_MAJOR, FORMAT_MINOR)
    assert [key(r) for r in data_records(got)] == expected(records)

    # A client joining the stream at a keyframe needs none of the bytes before it.
    assert enc.index
    assert enc.index[0].offset == HEADER_SIZE
    for entry in enc.index:
        dec = StreamDecoder(header=False, offset=entry.offset)
        tail = dec.feed(stream[entry.offset :]) + dec.close()
        assert dec.damage == []
        assert dec.decoder.unresolved == 0
        assert isinstance(tail[0], Keyframe)
        assert tail[0].seq == entry.seq
        suffix = [r for r in got if r.seq > entry.seq and not isinstance(r, Keyframe)]
        assert [key(r) for r in data_records(tail)] == [key(r) for r in suffix]


def test_keyframes_restate_active_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path, keyframe_bytes=100) as w:
        w.append(RunStart(0, "a" * 32, "first", "pi", 10, config={"lr": 0.1}))
        w.append(RunStart(1, "b" * 32, "second", "pi", 11))
        for i in range(60):
            w.append(Event("log", f"line {i}", run=i % 2, t_us=i))
    with TraceReader(path) as reader:
        entries = reader.index()
        assert len(entries) > 5
        last = next(iter(reader.records(entries[-1].offset)))
        assert isinstance(last, Keyframe)
        assert [(r.run, r.name, r.config) for r in last.runs] == [
            (0, "first", {"lr": 0.1}),
            (1, "second", {}),
        ]
        # The restated runs keep the sequence numbers of their RunStart records.
        assert [r.seq for r in last.runs] == [1, 2]


def test_unencodable_record_is_refused_and_the_stream_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.est"
    with TraceWriter(path) as w:
        w.append(Event("log", "before"))
        with pytest.raises(TypeError):
            w.append(Event("novel kind", "bad", detail={"x": {1, 2}}))  # a set: not msgpack
        with pytest.raises(TypeError):
            w.append(RunStart(5, "id", "n", "h", 1, config={"x": object()}))
        with pytest.raises(RecordTooLargeError):
            w.append(RunStart(6, "i" * 300, "n", "h", 1))  # an identity is never cut
        w.append(Event("log", "x" * 70_000))  # cut to fit a frame (1.2), not refused
        # The string interned for the refused record must still reach a reader.
        w.append(Event("novel kind", "after"))
    with TraceReader(path) as reader:
        got = [(r.kind, r.message) for r in reader if isinstance(r, Event)]
        assert reader.unresolved == 0
        assert reader.damage == []
        kf = [r for r in TraceReader(path) if isinstance(r, Keyframe)]
    assert got[0] == ("log", "before") and got[2] == ("novel kind", "after")
    assert got[1][1].startswith("x" * 16_000) and got[1][1].endswith("…[truncated]")
    # The refused RunStart is not restated by later keyframes.
    assert all(not k.runs for k in kf)


def test_record_is_not_a_record() -> None:
    enc = StreamEncoder()
    with pytest.raises(TypeError):
        enc.add("loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        enc.add(Keyframe(0, -1))
    with pytest.raises(TypeError):
        enc.add(Metrics(0, "loss", (1,), (1,), (1,)))  # type: ignore[arg-type]


def test_integer_columns_at_the_ends_of_int64(tmp_path: Path) -> None:
    """Differences that need 65 bits fall back to plain values, not an error."""
    lo, hi = -(1 << 63), (1 << 63) - 1
    batch = Metrics(0, "x", (lo, hi, 0, hi), (0, hi, lo + 1, 5), (1.0, 2.0, 3.0, 4.0))
    path = tmp_path / "t.est"
    with TraceWriter(path) as w:
        w.append(batch)
    with TraceReader(path) as r:
        (got,) = (m for m in r if isinstance(m, Metrics))
    assert got == Metrics(0, "x", batch.steps, batch.times_us, batch.values, seq=1)
