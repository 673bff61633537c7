"""Format 1.1: gpu records gained ``processes``, thermal records ``sensors``, both appended.

A 1.1 reader reads 1.0 records (the new fields at their defaults); a 1.0 reader reads 1.1
records (it ignores what follows the fields it knows); damage in the new fields is damage.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    MAGIC,
    GpuSample,
    ThermalSample,
    ThermalZone,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing._codec import Decoder, Encoder
from edgescope_tracing.errors import DecodeError
from edgescope_tracing.records import Kind

GPU = GpuSample(
    0,
    "NVIDIA H200",
    temp_c=56.0,
    mem_used=23_341 << 20,
    processes=((413, 23_332 << 20), (5120, 0)),
    t_us=7,
)
THERMAL = ThermalSample(
    zones=(ThermalZone("cpu-thermal", 52.5),),
    throttle={"hwmon.ina3221.curr1_crit_alarm": 0},
    sensors={"hwmon.ina3221.in1": 5.072, "hwmon.ina3221.curr1": 1.216, "hwmon.pwmfan.fan1": 0.0},
    t_us=8,
)


def wires_of(*records: object) -> list[list[object]]:
    enc = Encoder()
    return [w for r in records for w in enc.encode(r)]  # type: ignore[arg-type]


def decoded(wires: list[list[object]]) -> list[object]:
    dec = Decoder()
    return [r for r in map(dec.decode, wires) if r is not None]


def test_new_fields_are_appended_after_the_1_0_fields() -> None:
    gpu = next(w for w in wires_of(GPU) if w[0] == Kind.GPU)
    assert len(gpu) == 18 and gpu[17] == [413, 23_332 << 20, 5120, 0]
    thermal = next(w for w in wires_of(THERMAL) if w[0] == Kind.THERMAL)
    assert len(thermal) == 8 and len(thermal[7]) == 6  # [sid, value, ...] like throttle
    assert decoded(wires_of(GPU, THERMAL)) == [
        replace(GPU, seq=0),
        replace(THERMAL, seq=1),
    ]


def test_empty_new_fields_are_left_out() -> None:
    """A record without the new figures is what a 1.0 writer made, byte for byte."""
    gpu = next(w for w in wires_of(GpuSample(0, "Orin", temp_c=40.0)) if w[0] == Kind.GPU)
    assert len(gpu) == 17
    thermal = next(w for w in wires_of(ThermalSample(throttle={"a": 1})) if w[0] == Kind.THERMAL)
    assert len(thermal) == 7


def test_a_1_0_record_reads_with_the_new_fields_at_their_defaults() -> None:
    """Old-shaped wire arrays, as a 1.0 writer made them (see also the golden 1.0 file)."""
    strings = [Kind.STRINGS.value, 0, 5, 0, ["H200", "cpu-thermal", "pi.throttled"]]
    gpu = [Kind.GPU.value, 0, 5, 0, 0, 41.0, 600_000, None, 1980, 3201, None, None, 0, 99.0]
    gpu += [12.0, 644_939_776, 150_754_820_096]
    thermal = [Kind.THERMAL.value, 1, 6, [[1, 52.5, []]], [], [], [2, 0x50005]]
    assert len(gpu) == 17 and len(thermal) == 7
    g, t = decoded([strings, gpu, thermal])
    assert isinstance(g, GpuSample) and isinstance(t, ThermalSample)
    assert g.processes == () and g.mem_total == 150_754_820_096 and g.sm_clock_mhz == 1980
    assert t.sensors == {} and t.throttle == {"pi.throttled": 0x50005}
    assert t.zones == (ThermalZone("cpu-thermal", 52.5),)


def test_a_1_0_reader_sees_the_1_0_fields_unchanged() -> None:
    """What a 1.0 reader decodes (the first 17 or 7 fields) is the record less the new fields."""
    wires = wires_of(GPU, THERMAL)
    old = [w[:17] if w[0] == Kind.GPU else w[:7] if w[0] == Kind.THERMAL else w for w in wires]
    g, t = decoded(old)
    assert g == replace(GPU, processes=(), seq=0)
    assert t == replace(THERMAL, sensors={}, seq=1)


def test_1_0_and_1_1_files_read_alike(tmp_path: Path) -> None:
    """A file with a 1.0 header and 1.0 records next to one the writer makes now."""
    old = tmp_path / "old.est"
    wires = wires_of(GpuSample(0, "H200", temp_c=41.0, t_us=6))
    payload = msgpack.packb(wires, use_bin_type=True)
    frame = struct.pack("<2sII", b"\xe5\x5c", len(payload), zlib.crc32(payload)) + payload
    old.write_bytes(struct.pack("<8sHH", MAGIC, 1, 0) + frame)
    new = tmp_path / "new.est"
    with TraceWriter(new) as w:
        w.append(GPU)
        w.append(THERMAL)
    with TraceReader(old) as r:
        assert r.version == (1, 0)
        assert [x for x in r if isinstance(x, GpuSample)] == [
            GpuSample(0, "H200", temp_c=41.0, t_us=6, seq=0)
        ]
    with TraceReader(new) as r:
        assert r.version == (FORMAT_MAJOR, FORMAT_MINOR)
        got = [x for x in r if isinstance(x, GpuSample | ThermalSample)]
        assert r.damage == []
    assert [x.processes if isinstance(x, GpuSample) else x.sensors for x in got] == [
        GPU.processes,
        THERMAL.sensors,
    ]


@pytest.mark.parametrize(
    ("kind", "field", "why"),
    [
        (Kind.GPU, [413], "flat array of pairs has 1 items"),
        (Kind.GPU, [413, "23 GiB"], "expected an integer"),
        (Kind.GPU, [413.0, 1], "expected an integer"),
        (Kind.GPU, {"413": 1}, "expected an array"),
        (Kind.THERMAL, [0, 5.0, 0], "flat array of pairs has 3 items"),
        (Kind.THERMAL, [0, "5 V"], "expected a number"),
        (Kind.THERMAL, ["in0", 5.0], "expected an integer"),
        (Kind.THERMAL, None, "expected an array"),
    ],
)
def test_damage_in_the_new_fields_is_refused(kind: Kind, field: object, why: str) -> None:
    strings = [Kind.STRINGS.value, 0, 5, 0, ["g"]]
    if kind == Kind.GPU:
        w = [kind.value, 1, 5, 0, 0, *([None] * 12), field]
    else:
        w = [kind.value, 1, 5, [], [], [], [], field]
    dec = Decoder()
    dec.decode(strings)
    with pytest.raises(DecodeError, match=why):
        dec.decode(w)


def test_a_sensor_name_lost_to_damage_is_said_so() -> None:
    dec = Decoder()
    t = dec.decode([Kind.THERMAL.value, 1, 5, [], [], [], [], [99, 1.5]])
    assert isinstance(t, ThermalSample) and t.sensors == {"<lost string #99>": 1.5}
    assert dec.unresolved == 1


@pytest.mark.parametrize(
    "rec",
    [
        GpuSample(0, "g", processes=((1, 2, 3),)),  # type: ignore[arg-type]
        GpuSample(0, "g", processes=((1, 2.5),)),  # type: ignore[arg-type]
        ThermalSample(sensors={"hwmon.x.in0": "5 V"}),  # type: ignore[dict-item]
    ],
)
def test_new_fields_of_the_wrong_shape_are_refused_when_written(rec: object) -> None:
    """The writer refuses what every reader would refuse as damage."""
    with pytest.raises(TypeError):
        Encoder().encode(rec)  # type: ignore[arg-type]
