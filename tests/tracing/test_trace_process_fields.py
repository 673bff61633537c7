"""Format 1.3: process records gained ``ppid``, ``state`` and ``command``, appended.

A reader reads older process records (the new fields None); an older reader reads the new
ones (it ignores what follows the fields it knows); a record without them is the old record,
byte for byte; damage in them is damage.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from edgescope_tracing import ProcessSample
from edgescope_tracing._codec import Decoder, Encoder
from edgescope_tracing.errors import DecodeError
from edgescope_tracing.records import Kind

PROC = ProcessSample(
    0, 1240, rss=5 << 20, threads=3, ppid=1234, state="D", command="python3 train.py", t_us=9
)


def wires_of(*records: ProcessSample) -> list[list[object]]:
    enc = Encoder()
    return [w for r in records for w in enc.encode(r)]


def decoded(wires: list[list[object]]) -> list[object]:
    dec = Decoder()
    return [r for r in map(dec.decode, wires) if r is not None]


def test_the_new_fields_follow_the_old_ones_and_the_command_is_interned() -> None:
    wires = wires_of(PROC, replace(PROC, t_us=10))
    procs = [w for w in wires if w[0] == Kind.PROCESS]
    assert [len(w) for w in procs] == [16, 16]
    assert procs[0][13:15] == [1234, "D"]
    assert procs[0][15] == procs[1][15] and isinstance(procs[0][15], int)  # one string id
    assert sum(1 for w in wires if w[0] == Kind.STRINGS) == 1
    assert decoded(wires) == [replace(PROC, seq=0), replace(PROC, t_us=10, seq=1)]


def test_a_record_without_them_is_the_old_record() -> None:
    (w,) = wires_of(ProcessSample(0, 7, rss=1, t_us=3))
    assert len(w) == 13
    (w,) = wires_of(ProcessSample(0, 7, ppid=1, t_us=3))  # a nil before a later field stays
    assert len(w) == 14 and w[13] == 1


def test_an_old_record_reads_with_them_unknown() -> None:
    old = [Kind.PROCESS.value, 0, 5, 0, 4242, 99.0, 1 << 20, 2 << 20, 12, None, None, None, None]
    (p,) = decoded([old])
    assert isinstance(p, ProcessSample)
    assert (p.ppid, p.state, p.command) == (None, None, None) and p.threads == 12


def test_an_old_reader_sees_the_old_fields_unchanged() -> None:
    wires = [w[:13] if w[0] == Kind.PROCESS else w for w in wires_of(PROC)]
    assert decoded(wires) == [replace(PROC, ppid=None, state=None, command=None, seq=0)]


@pytest.mark.parametrize("index, value", [(13, "x"), (14, 5), (15, "no sid")])
def test_damage_in_them_is_refused(index: int, value: object) -> None:
    wires = wires_of(PROC)
    w = next(w for w in wires if w[0] == Kind.PROCESS)
    w[index] = value
    with pytest.raises(DecodeError):
        decoded(wires)
