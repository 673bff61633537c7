"""The golden 1.0 trace: every future version must still read it, exactly.

``data/golden-v1.est`` was made by ``make_golden.py`` from real H200 training data; beside it,
``data/golden-v1.json`` holds what a reader must find, record by record (each record's 1.0
fields: later versions may add fields, never change these).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from edgescope_tracing import (
    FORMAT_MINOR,
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    RunEnd,
    RunStart,
    StackSamples,
    TraceReader,
)
from make_golden import FIXTURE, build, plain, write

from edgescope.cli import main

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden-v1.est"


def subset(expected: object, got: object) -> bool:
    """``got`` holds everything ``expected`` does (dicts may have more keys: newer fields)."""
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(
            k in got and subset(v, got[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(subset(e, g) for e, g in zip(expected, got, strict=True))
        )
    return type(expected) is type(got) and expected == got


def test_golden_reads_exactly() -> None:
    expected = [json.loads(line) for line in (DATA / "golden-v1.json").read_text().splitlines()]
    with TraceReader(GOLDEN) as r:
        assert r.version == (1, 0)
        got = list(r)
        assert r.damage == []
        assert r.unresolved == 0
        assert r.unknown_kinds == 0
        assert r.indexed
        assert len(r.index()) == 7
        assert r.index() == r._scan_index()
    assert len(got) == len(expected) == 75
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert subset(e, plain(g)), f"record {i} differs: {e} != {plain(g)}"


def test_golden_holds_the_real_data() -> None:
    """Spot checks against the fixture's first lines, in case the JSON beside it is wrong too."""
    with TraceReader(GOLDEN) as r:
        got = list(r)
    start = got[1]
    assert isinstance(start, RunStart)
    assert (start.name, start.host, start.pid) == ("h200-mlp", "h200-node", 48213)
    assert start.device["gpu"] == "NVIDIA H200"
    loss = [m for m in got if isinstance(m, Metrics) and m.key == "loss"]
    assert loss[0].values[:3] == (2.3059005737304688, 2.397472381591797, 2.2207188606262207)
    assert loss[0].steps[:3] == (0, 1, 2)
    assert loss[0].times_us[:3] == (1795800876015431, 1795800876023006, 1795800876030918)
    assert sum(len(m.values) for m in loss) == 300
    assert loss[-1].steps[-1] == 299
    step_ms = next(m for m in got if isinstance(m, Metrics) and m.key == "step_time_ms")
    assert step_ms.values[:2] == (446.725747, 6.884523)  # float64: not float32-exact
    gpu = [g for g in got if isinstance(g, GpuSample)]
    assert len(gpu) == 20
    assert (gpu[0].temp_c, gpu[-1].temp_c, gpu[-1].power_mw) == (40.0, 53.0, 603096)
    (event,) = (e for e in got if isinstance(e, Event))
    assert event.message == "step 0 took 447 ms, 65x the next (warm-up)"
    (stacks,) = (s for s in got if isinstance(s, StackSamples))
    assert sum(c for _, c in stacks.samples) == 200
    assert stacks.samples[1][0][2].file == "adamw.py"
    assert isinstance(got[-1], RunEnd)
    assert got[-1].exit_code == 0
    assert sum(isinstance(k, Keyframe) for k in got) == 7


def test_make_golden_reproduces_the_file_from_the_fixture(tmp_path: Path) -> None:
    records = build(FIXTURE)
    out = tmp_path / "golden.est"
    write(records, out)
    # The writer is 1.1 now; its golden records have no 1.1 figures, which it leaves out, so
    # only the header's minor version differs from what the 1.0 writer made.
    made, golden = out.read_bytes(), GOLDEN.read_bytes()
    assert made[:10] == golden[:10] and made[10:12] == struct.pack("<H", FORMAT_MINOR)
    assert golden[10:12] == struct.pack("<H", 0)
    assert made[12:] == golden[12:]
    with TraceReader(GOLDEN) as r:
        read = [x for x in r if not isinstance(x, Keyframe)]
    assert [plain(x) | {"seq": 0} for x in read] == [plain(x) for x in records]


def test_inspect_golden(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(GOLDEN), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    s = json.loads(out)
    assert s["damaged_frames"] == 0
    assert s["records"] == 75
    assert s["metrics"]["loss"]["count"] == 300
    assert main(["inspect", str(GOLDEN)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "h200-mlp" in out
