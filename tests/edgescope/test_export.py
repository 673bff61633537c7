"""``edgescope export``: the output reads back (csv, json, pandas) as what the trace holds."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from edgescope_tracing import (
    CoolingDevice,
    CpuFreq,
    Event,
    GpuSample,
    Metrics,
    PowerReading,
    PowerSample,
    ProcessSample,
    RunEnd,
    RunStart,
    SystemSample,
    ThermalSample,
    ThermalZone,
    TraceReader,
    TraceWriter,
)

from edgescope.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "h200-mlp-training.est"
T0 = 1_790_000_000_000_000


def _records() -> list[Any]:
    return [
        RunStart(0, "ab" * 16, "toy", "pi5", 4242, t_us=T0),
        Metrics(0, "loss", (0, 1, 2), (T0, T0 + 10, T0 + 25), (2.5, 0.1, math.nan), t_us=T0),
        Metrics(0, "lr", (0, 1, 2), (T0, T0 + 10, T0 + 25), (1e-3, 1e-3, math.inf), t_us=T0),
        SystemSample(
            cpu_percent=12.5,
            per_cpu_percent=(10.0, 15.0),
            mem_used=1 << 30,
            mem_total=4 << 30,
            load1=0.5,
            psi={"memory.some.avg10": 0.25},
            t_us=T0 + 30,
        ),
        ProcessSample(0, 4242, cpu_percent=99.0, rss=123 << 20, rss_peak=130 << 20, t_us=T0 + 30),
        ThermalSample(
            zones=(ThermalZone("cpu-thermal", 71.5, (("passive", 80.0, 2.0),)),),
            freqs=(CpuFreq(0, 1_500_000, None, 2_400_000),),
            cooling=(CoolingDevice("fan0", 2, 4, 1),),
            throttle={"pi.throttled": 0x50005},
            sensors={"hwmon.ina3221.in1": 5.072, "hwmon.pwmfan.fan1": 2900.0},
            t_us=T0 + 31,
        ),
        GpuSample(
            0,
            "Orin",
            temp_c=48.0,
            power_mw=9000,
            util_gpu=35.0,
            processes=((4242, 1 << 30), (4250, 512 << 20)),
            t_us=T0 + 32,
        ),
        Event("mark", "lr spike", run=0, t_us=T0 + 33),
        Metrics(0, "loss", (3,), (T0 + 40,), (0.05,), t_us=T0 + 40),
        RunEnd(0, exit_code=0, t_us=T0 + 50),
    ]


def _write(path: Path, recs: list[Any], *, frame_each: bool = False) -> None:
    with TraceWriter(path) as w:
        for r in recs:
            w.append(r)
            if frame_each:
                w.flush()


def _expected_metrics(path: Path) -> list[tuple[str, int, int, float]]:
    out = []
    with TraceReader(path) as r:
        for m in r:
            if isinstance(m, Metrics):
                out += [
                    (m.key, s, t, v) for s, t, v in zip(m.steps, m.times_us, m.values, strict=True)
                ]
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _run(*argv: str) -> tuple[int, str, str]:
    p = subprocess.run(
        [sys.executable, "-m", "edgescope", *argv], capture_output=True, text=True, timeout=60
    )
    return p.returncode, p.stdout, p.stderr


def test_csv_reads_back_as_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.est"
    _write(trace, _records())
    out = tmp_path / "t.csv"
    assert main(["export", str(trace), "--format", "csv", "-o", str(out)]) == 0
    with out.open(newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["series", "run", "run_id", "key", "step", "time", "t_us", "value"]
    assert {r["series"] for r in got} == {"metric"}
    want = _expected_metrics(trace)
    assert len(got) == len(want) == 7
    for row, (key, step, t, v) in zip(got, want, strict=True):
        assert (row["run"], row["run_id"], row["key"]) == ("toy", "ab" * 16, key)
        assert int(row["step"]) == step and int(row["t_us"]) == t
        assert _same(float(row["value"]), v)
        assert pd.Timestamp(row["time"]).value // 1000 == t


def test_jsonl_with_system_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.est"
    _write(trace, _records())
    assert main(["export", str(trace), "--format", "jsonl", "--system"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(x) for x in lines]
    by_key = {o["key"]: o for o in objs if o["series"] != "metric"}
    assert by_key["system.cpu_percent"]["value"] == 12.5
    assert by_key["system.cpu1.percent"]["value"] == 15.0
    assert by_key["system.mem_total"]["value"] == 4 << 30
    assert by_key["system.psi.memory.some.avg10"]["value"] == 0.25
    assert by_key["process.4242.rss"]["value"] == 123 << 20
    assert by_key["process.4242.rss"]["run"] == "toy"
    assert by_key["thermal.cpu-thermal.temp_c"]["value"] == 71.5
    assert by_key["cpufreq.cpu0.cur_khz"]["value"] == 1_500_000
    assert by_key["cpufreq.cpu0.max_khz"]["value"] == 2_400_000
    assert "cpufreq.cpu0.hw_khz" not in by_key  # absent at the source: left out, not empty
    assert by_key["cooling.fan0.cur_state"]["value"] == 2
    assert by_key["throttle.pi.throttled"]["value"] == 0x50005
    assert by_key["gpu0.power_mw"]["value"] == 9000
    assert by_key["gpu0.temp_c"]["series"] == "gpu" and by_key["gpu0.temp_c"]["step"] is None
    assert by_key["gpu0.process.4242.mem_used"]["value"] == 1 << 30
    assert by_key["gpu0.process.4250.mem_used"]["series"] == "gpu"
    assert "gpu0.processes" not in by_key
    assert by_key["sensors.hwmon.ina3221.in1"]["value"] == 5.072
    assert by_key["sensors.hwmon.pwmfan.fan1"]["series"] == "thermal"
    assert by_key["system.cpu_percent"]["run"] == ""
    metrics = [o for o in objs if o["series"] == "metric"]
    assert [o["value"] for o in metrics if o["key"] == "loss"] == [2.5, 0.1, "NaN", 0.05]
    assert [o["value"] for o in metrics if o["key"] == "lr"][-1] == "Infinity"
    # stream order: the system figures come between the first and the last metric batch
    keys = [o["key"] for o in objs]
    assert keys.index("system.cpu_percent") < len(keys) - 1 and keys[-1] == "loss"


def test_the_power_series_are_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "p.est"
    rapl = PowerReading(
        "rapl", "package-0", 262_143_000_000, 15_250_000, 262_143_328_850, 28_000_000
    )
    rail = PowerReading("ina3221", "ina3221/VDD_IN", power_uw=6_167_552)
    _write(trace, [PowerSample((rapl, rail), t_us=T0), PowerSample((rail,), t_us=T0 + 1)])
    assert main(["export", str(trace), "--format", "csv", "--system"]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["series"], r["key"], r["value"], r["t_us"]) for r in got] == [
        ("power", "power.rapl.package-0.energy_uj", "262143000000", str(T0)),
        ("power", "power.rapl.package-0.power_uw", "15250000", str(T0)),
        ("power", "power.rapl.package-0.range_uj", "262143328850", str(T0)),
        ("power", "power.rapl.package-0.limit_uw", "28000000", str(T0)),
        ("power", "power.ina3221.ina3221/VDD_IN.power_uw", "6167552", str(T0)),
        ("power", "power.ina3221.ina3221/VDD_IN.power_uw", "6167552", str(T0 + 1)),
    ]


def test_pandas_reads_the_h200_example(tmp_path: Path) -> None:
    csv_out, jsonl_out = tmp_path / "h.csv", tmp_path / "h.jsonl"
    assert main(["export", str(EXAMPLE), "--format", "csv", "--system", "-o", str(csv_out)]) == 0
    assert main(["export", str(EXAMPLE), "--format", "jsonl", "-o", str(jsonl_out)]) == 0
    df = pd.read_csv(csv_out)
    assert df["value"].dtype.kind == "f" and df["t_us"].dtype.kind == "i"
    metrics = df[df["series"] == "metric"]
    counts = metrics.groupby("key").size().to_dict()
    assert counts == {
        "loss": 11658,
        "step_time": 11658,
        "cuda_alloc": 11658,
        "cuda_max_alloc": 11658,
    }
    wide = metrics.pivot(index="step", columns="key", values="value")
    assert (
        wide.loc[599, "cuda_max_alloc"] == 2888207360
        and wide.loc[600, "cuda_max_alloc"] == 22351628800
    )
    assert wide.loc[0, "step_time"] == pytest.approx(0.446725747)
    gpu = df[df["key"] == "gpu0.temp_c"]
    assert len(gpu) == 779 and gpu["value"].iloc[0] == 38 and gpu["value"].max() == 56
    assert (df[df["key"] == "gpu0.clock_event_reasons"]["value"].iloc[[0, -1]] == [1, 0]).all()
    assert len(df[df["key"] == "process.0.rss"]) == 779

    # pandas' CSV parser reads every value back exactly; read_json needs precise_float for that
    with csv_out.open(newline="") as f:
        exact = [float(r["value"]) for r in csv.DictReader(f)]
    assert df["value"].tolist() == exact
    dj = pd.read_json(jsonl_out, lines=True, precise_float=True)
    assert len(dj) == 4 * 11658
    loss = dj[dj["key"] == "loss"]
    assert loss["value"].iloc[0] == 2.3059005737304688
    assert (loss["step"].diff().dropna() == 1).all()


def test_damaged_input_exports_what_is_readable(tmp_path: Path) -> None:
    trace = tmp_path / "d.est"
    recs = [RunStart(0, "cd" * 16, "dmg", "h", 1, t_us=T0)] + [
        Metrics(0, "loss", (i,), (T0 + i,), (float(i),), t_us=T0 + i) for i in range(40)
    ]
    _write(trace, recs, frame_each=True)
    data = bytearray(trace.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = b"\xff" * 8
    trace.write_bytes(bytes(data))
    want = _expected_metrics(trace)
    assert 0 < len(want) < 40
    code, out, err = _run("export", str(trace), "--format", "csv")
    assert code == 0
    got = list(csv.DictReader(io.StringIO(out)))
    assert [(r["key"], int(r["step"]), int(r["t_us"]), float(r["value"])) for r in got] == want
    assert "damaged span" in err and f"{len(want)} readable values" in err
    assert "Traceback" not in err

    # a crash mid-write: the last frame cut short is said, the rest exported
    whole = tmp_path / "w.est"
    _write(whole, recs, frame_each=True)
    cut = tmp_path / "cut.est"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size - 60])
    code, out, err = _run("export", str(cut), "--format", "jsonl")
    assert code == 0
    assert len(out.splitlines()) == len(_expected_metrics(cut)) > 30
    assert "cut short" in err


def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, not a trace\n")
    keep = tmp_path / "keep.csv"
    keep.write_text("precious\n")
    for argv, says in [
        (["export", str(notes), "--format", "csv", "-o", str(keep)], "not an edgescope trace"),
        (["export", str(tmp_path / "nope.est"), "--format", "csv"], "no such file"),
        (
            ["export", str(EXAMPLE), "--format", "csv", "-o", str(tmp_path / "no/dir.csv")],
            "does not exist",
        ),
        (["export", str(EXAMPLE), "--format", "csv", "-o", str(tmp_path)], "is a directory"),
    ]:
        code, out, err = _run(*argv)
        assert code == 2, argv
        assert says in err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert out == ""
    assert keep.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv", "notes.txt"]
    code, _, err = _run("export", str(EXAMPLE), "--format", "xml")
    assert code == 2 and "invalid choice" in err


def test_every_figure_field_is_one_number() -> None:
    """The field lists come from the record classes: a field that is not one optional number
    (a tuple, a dict) must be left out of them and given rows of its own."""
    from dataclasses import fields

    from edgescope_tracing.export import (
        _GPU_FIELDS,
        _POWER_FIELDS,
        _PROCESS_FIELDS,
        _SYSTEM_FIELDS,
    )

    assert _POWER_FIELDS == ("energy_uj", "power_uw", "range_uj", "limit_uw")
    for cls, names in (
        (PowerReading, _POWER_FIELDS),
        (GpuSample, _GPU_FIELDS),
        (SystemSample, _SYSTEM_FIELDS),
        (ProcessSample, _PROCESS_FIELDS),
    ):
        for f in fields(cls):
            if f.name in names:
                assert f.default is None, (cls.__name__, f.name)
                assert "str" not in str(f.type), (cls.__name__, f.name)  # a path is no figure
