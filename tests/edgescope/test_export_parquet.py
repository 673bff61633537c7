"""``edgescope export --format parquet``: the tables read back (pyarrow, pandas, polars) as what
the trace holds, with timestamps as timestamps."""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from withoutparts import EDGESCOPE_MAIN, run_without

pytest.importorskip("pyarrow", reason="pyarrow is not installed")

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from edgescope_tracing import Event, Metrics, TraceReader
from test_export import EXAMPLE, _records, _write

from edgescope.cli import main
from edgescope.cli.export import rows

TS = pa.timestamp("us", tz="UTC")


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _trace_rows(path: Path) -> list[Any]:
    with TraceReader(path) as r:
        return list(rows(r, system=True, events=True))


def test_a_directory_gets_three_typed_tables_that_read_back_as_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.est"
    _write(trace, _records())
    out = tmp_path / "tables"
    assert main(["export", str(trace), "--format", "parquet", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "events.parquet",
        "metrics.parquet",
        "system.parquet",
    ]
    metrics = pq.read_table(out / "metrics.parquet")
    assert metrics.schema.names == ["run", "run_id", "key", "step", "time", "value"]
    assert metrics.schema.field("time").type == TS
    assert metrics.schema.field("step").type == pa.int64()
    assert metrics.schema.field("value").type == pa.float64()
    want = []
    with TraceReader(trace) as r:
        for m in r:
            if isinstance(m, Metrics):
                want += list(zip(m.steps, m.times_us, m.values, strict=True))
    df = pd.read_parquet(out / "metrics.parquet")
    assert len(df) == len(want) == 7
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    for (_, row), (step, t, v) in zip(df.iterrows(), want, strict=True):
        assert (row["run"], row["run_id"]) == ("toy", "ab" * 16)
        assert row["step"] == step and _same(row["value"], v)
        assert row["time"] == pd.Timestamp(t, unit="us", tz="UTC")
    assert math.isinf(df[df["key"] == "lr"]["value"].iloc[-1])  # not lost to a string

    system = pd.read_parquet(out / "system.parquet")
    device = [r for r in _trace_rows(trace) if r.series not in ("metric", "event")]
    assert len(system) == len(device) > 10
    assert Counter(system["series"]) == Counter(r.series for r in device)
    got = dict(zip(system["key"], system["value"], strict=True))
    assert got["thermal.cpu-thermal.temp_c"] == 71.5
    assert got["gpu0.process.4250.mem_used"] == 512 << 20
    assert got["system.psi.memory.some.avg10"] == 0.25
    assert system["time"].iloc[0] == pd.Timestamp(1_790_000_000_000_030, unit="us", tz="UTC")

    events = pd.read_parquet(out / "events.parquet")
    assert list(events.columns) == ["run", "run_id", "kind", "time", "severity", "message"]
    assert str(events["severity"].dtype) == "int8"
    assert events.to_dict("records")[0] | {"time": None} == {
        "run": "toy",
        "run_id": "ab" * 16,
        "kind": "mark",
        "time": None,
        "severity": 0,
        "message": "lr spike",
    }


def test_polars_reads_the_tables_as_they_are(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars", reason="polars is not installed")
    out = tmp_path / "tables"
    assert main(["export", str(EXAMPLE), "--format", "parquet", "-o", str(out)]) == 0
    df = pl.read_parquet(out / "metrics.parquet")
    assert df.schema["time"] == pl.Datetime("us", "UTC")
    assert df.schema["step"] == pl.Int64 and df.schema["value"] == pl.Float64
    with TraceReader(EXAMPLE) as r:
        n = sum(len(m.values) for m in r if isinstance(m, Metrics))
    assert df.height == n
    ev = pl.read_parquet(out / "events.parquet")
    with TraceReader(EXAMPLE) as r:
        assert ev.height == sum(isinstance(e, Event) for e in r)


def test_the_real_trace_in_one_file_is_the_csv_export_with_types(tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    argv = ["export", str(EXAMPLE), "--format", "parquet", "-o", str(out), "--system", "--events"]
    assert main(argv) == 0
    table = pq.read_table(out)
    assert table.schema.names == ["series", "run", "run_id", "key", "step", "time", "value", "text"]
    want = _trace_rows(EXAMPLE)
    assert table.num_rows == len(want) > 50_000
    got = table.to_pydict()
    for i in range(0, len(want), 997):  # a spread of rows, every field
        r = want[i]
        assert (got["series"][i], got["run"][i], got["key"][i]) == (r.series, r.run, r.key)
        assert got["step"][i] == r.step and got["text"][i] == r.text
        assert _same(got["value"][i], r.value)
    epoch = table["time"].cast(pa.int64()).to_pylist()  # exact microseconds, not strings
    assert epoch == [r.t_us for r in want]
    # Without --system and --events the file has the metrics only, as CSV does.
    only = tmp_path / "metrics.parquet"
    assert main(["export", str(EXAMPLE), "--format", "parquet", "-o", str(only)]) == 0
    meta = pq.read_table(only)
    assert set(meta["series"].to_pylist()) == {"metric"} and "text" not in meta.schema.names


def _run(*argv: str, block: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_without((block,) if block else (), EDGESCOPE_MAIN, list(argv))


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        ([], 2, "--format parquet needs -o DIR (a directory of tables) or -o FILE.parquet"),
        (["-o", "-"], 2, "--format parquet needs -o DIR"),
        (["-o", "{tmp}/file"], 2, "is not a directory; a name ending in .parquet writes one"),
        (["-o", "{tmp}/no/such/x.parquet"], 2, "does not exist"),
    ],
)
def test_bad_outputs_are_one_line_errors(
    tmp_path: Path, argv: list[str], code: int, says: str
) -> None:
    (tmp_path / "file").write_text("keep me")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    p = _run("export", str(EXAMPLE), "--format", "parquet", *argv)
    assert p.returncode == code and says in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert (tmp_path / "file").read_text() == "keep me"


def test_without_pyarrow_the_command_names_the_extra(tmp_path: Path) -> None:
    p = _run(
        "export", str(EXAMPLE), "--format", "parquet", "-o", str(tmp_path / "x"), block="pyarrow"
    )
    assert p.returncode == 3, p.stderr
    assert "needs pyarrow" in p.stderr and "'.[parquet]'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
