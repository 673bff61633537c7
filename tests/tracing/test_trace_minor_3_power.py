"""Format 1.3: the power record (kind 14), beside the index pointer and the keyframe part.

A 1.3 reader reads power records, still finds a closed file's index pointer, and reads 1.2
files; a 1.2 reader skips power records; damage in a power record is damage, and a writer
refuses a reading that a reader would refuse.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    MAGIC,
    Event,
    PowerReading,
    PowerSample,
    StreamDecoder,
    StreamEncoder,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing._codec import INDEX_POINTER, Decoder, Encoder
from edgescope_tracing.errors import DecodeError
from edgescope_tracing.records import Kind

POWER = PowerSample(
    (
        PowerReading("rapl", "package-0", 262_143_328_850, 15_250_000, 262_143_328_850, 28_000_000),
        PowerReading("rapl", "package-0/core", 1_200_000, 9_000_000, total=False),
        PowerReading("nvml", "gpu0", 48_000_000_000, 79_156_000, limit_uw=700_000_000),
        PowerReading("ina3221", "ina3221.0/VDD_IN", power_uw=5_072_000),
    ),
    t_us=1_795_800_876_015_431,
)


def test_the_writer_says_1_3() -> None:
    assert (FORMAT_MAJOR, FORMAT_MINOR) == (1, 3)
    assert Kind.POWER == 14 and INDEX_POINTER == 12


def test_power_records_round_trip_through_a_closed_file(tmp_path: Path) -> None:
    path = tmp_path / "p.est"
    with TraceWriter(path, keyframe_bytes=200) as w:
        for i in range(50):
            w.append(PowerSample(POWER.readings, t_us=POWER.t_us + i))
    with TraceReader(path) as r:
        got = [x for x in r if isinstance(x, PowerSample)]
        assert r.damage == [] and r.unknown_kinds == 0
        entries = r.index()
        assert r.indexed, "the pointer frame is still found beside power records"
        assert len(entries) >= 2
        tail = list(r.seek(t_us=POWER.t_us + 40))
    assert [g.readings for g in got] == [POWER.readings] * 50
    assert isinstance(tail[-1], PowerSample) and tail[-1].t_us == POWER.t_us + 49


def test_the_pointer_and_power_records_both_read() -> None:
    assert Decoder().decode([INDEX_POINTER, 4096]) is None
    enc = StreamEncoder()
    enc.add(POWER)
    data = enc.take() + enc.index_bytes()
    dec = StreamDecoder()
    got = dec.feed(data) + dec.close()
    assert next(r for r in got if isinstance(r, PowerSample)).readings == POWER.readings
    assert dec.index_offset is not None and dec.damage == []


def test_a_1_2_reader_skips_power_records() -> None:
    wires = Encoder().encode(POWER)
    old = Decoder()
    del old._dispatch[Kind.POWER]  # what a 1.2 decoder knows
    assert [old.decode(w) for w in wires] == [None] * len(wires)
    assert old.unresolved == 0 and old.unknown_kinds == 1


def test_a_1_2_file_still_reads(tmp_path: Path) -> None:
    wires = Encoder().encode(Event("mark", "epoch 1", t_us=5))
    payload = msgpack.packb(wires, use_bin_type=True)
    frame = struct.pack("<2sII", b"\xe5\x5c", len(payload), zlib.crc32(payload)) + payload
    path = tmp_path / "old.est"
    path.write_bytes(struct.pack("<8sHH", MAGIC, 1, 2) + frame)
    with TraceReader(path) as r:
        assert r.version == (1, 2)
        assert [x.message for x in r if isinstance(x, Event)] == ["epoch 1"]


@pytest.mark.parametrize(
    ("reading", "why"),
    [
        (["s", 0], "power reading has 2 fields"),
        ([0, 0, "12 J", None, None, None, True], "expected an integer"),
        ([0, 0, 1.5, None, None, None, True], "expected an integer"),
    ],
)
def test_damage_in_a_power_record_is_damage(reading: list[object], why: str) -> None:
    dec = Decoder()
    dec.decode([0, 0, 0, 0, ["rapl"]])
    with pytest.raises(DecodeError, match=why):
        dec.decode([14, 1, 0, [reading]])
    with pytest.raises(DecodeError, match="expected an array"):
        dec.decode([14, 1, 0, {"rapl": 1}])


@pytest.mark.parametrize("bad", [-1, 1.5, 1 << 64, "3"])
def test_the_writer_refuses_what_a_reader_would(bad: object) -> None:
    with pytest.raises(TypeError, match="power reading"):
        Encoder().encode(PowerSample((PowerReading("rapl", "p", energy_uj=bad),)))  # type: ignore[arg-type]
