"""Samplers never raise on what a kernel (or a broken tree) may hand them.

Every file of every recorded tree is, in turn, emptied, filled with text, with a number too
large for any field, with binary bytes, and removed; each sampler must still return records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from edgescope_collector.samplers import ProcessWatch, default_samplers
from edgescope_tracing.records import ProcessSample, SystemSample, ThermalSample

if TYPE_CHECKING:
    from conftest import Board

GARBAGE: list[bytes | None] = [
    b"",
    b"not a number\n",
    b"99999999999999999999999999999999999999\n",
    b"\x00\xff\xfe garbage \x80\n",
    None,  # the file disappears (a process exits, a CPU goes offline)
]


@pytest.mark.parametrize("name,pid", [("rpi4", 1234), ("jetson-orin", 2200), ("x86-laptop", 31337)])
def test_every_file_broken_in_turn(board: Callable[[str], Board], name: str, pid: int) -> None:
    b = board(name)
    files = sorted(p for p in b.path.rglob("*") if p.is_file() and not p.is_symlink())
    watch = ProcessWatch()
    watch.add(1, pid)
    samplers, _ = default_samplers(b.roots, watch)
    t = 1_000_000
    for path in files:
        original = path.read_bytes()
        for i, junk in enumerate(GARBAGE):
            if junk is None:
                path.unlink()
            else:
                path.write_bytes(junk)
            t += 1_000_000
            for s in samplers:
                records = s.sample(t)
                if s.name in ("system", "thermal"):
                    assert len(records) == 1
                    assert isinstance(records[0], SystemSample | ThermalSample)
                else:
                    assert all(r.t_us == t for r in records)
            if junk is None or i == len(GARBAGE) - 1:
                path.write_bytes(original)
    # Restored: the run's processes are sampled again.
    (proc,) = [s for s in samplers if s.name == "process"]
    got = proc.sample(t + 1_000_000)
    assert {r.pid for r in got if isinstance(r, ProcessSample)} >= {pid}
    for s in samplers:
        s.close()
