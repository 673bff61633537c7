"""``edgescope inspect FILE [--json]``: the summary of a trace, for people and for scripts."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    Event,
    GpuSample,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    TraceWriter,
)
from edgescope_tracing.summary import summarize
from hypothesis import given, settings
from hypothesis import strategies as st
from tracegen import any_record

from edgescope.cli import main
from edgescope.cli.inspect import print_human

T0 = 1_700_000_000_000_000
NO_MEMORY = {
    "rss_max": None,
    "rss_peak": None,
    "rss_peak_pid": None,
    "cgroup_peak": None,
    "cgroup_limit": None,
    "oom_kills": None,
}


def write_two_runs(path: Path, *, close: bool = True) -> None:
    w = TraceWriter(path, flush_bytes=200, flush_interval=1e9)
    w.append(RunStart(0, "a1" * 16, "resnet", "pi5", 100, t_us=T0))
    w.append(RunStart(1, "b2" * 16, "tiny-llm", "jetson", 101, t_us=T0 + 500_000))
    for i in range(50):
        value = float("nan") if i == 30 else 1.0 / (i + 1)
        w.append(Metrics(0, "loss", (i,), (T0 + i * 1000,), (value,)))
        w.append(Metrics(1, "lr", (2 * i,), (T0 + i * 1000,), (0.001,)))
    w.append(GpuSample(0, "Orin", temp_c=55.0, t_us=T0 + 50_000))
    w.append(Event("anomaly", "loss is NaN at step 30", run=0, severity=2, t_us=T0 + 30_000))
    w.append(Event("mark", "eval", run=1, t_us=T0 + 40_000))
    frames = (StackFrame("forward", "model.py", 10),)
    w.append(StackSamples(0, "perf", 1000, ((frames, 5), ((), 2)), t_us=T0 + 60_000))
    w.append(StackSamples(1, "python", 1000, ((frames, 4),), t_us=T0 + 70_000))
    w.append(RunEnd(0, exit_code=1, dropped=3, t_us=T0 + 2_000_000))
    if close:
        w.close()
    else:
        w.flush()
        os.close(w._fd)  # as if the writer died: no index


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["inspect", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""

    def no_nan(name: str) -> None:
        raise AssertionError(f"--json printed {name}, which JSON does not have")

    data: dict[str, Any] = json.loads(out, parse_constant=no_nan)
    return data


def test_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.est"
    write_two_runs(path)
    s = inspect_json(path, capsys)
    assert s["format_version"] == f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
    assert s["bytes"] == path.stat().st_size
    assert s["records"] == 1 + 2 + 100 + 1 + 2 + 2 + 1  # with the keyframe
    assert s["kinds"] == {
        "event": 2,
        "gpu": 1,
        "keyframe": 1,
        "metrics": 100,
        "run_end": 1,
        "run_start": 2,
        "stacks": 2,
    }
    assert s["runs"] == [
        {
            "id": "a1" * 16,
            "name": "resnet",
            "host": "pi5",
            "pid": 100,
            "start": "2023-11-14T22:13:20.000000+00:00",
            "end": "2023-11-14T22:13:22.000000+00:00",
            "exit_code": 1,
            "exit": "exit code 1",
            "state": "failed",
            "lost_contact": None,
            "dropped": 3,
            "last_record": "2023-11-14T22:13:20.060000+00:00",
            "last_step": 49,
            "memory": NO_MEMORY,
            "cause": None,
            "cgroup": None,
        },
        {
            "id": "b2" * 16,
            "name": "tiny-llm",
            "host": "jetson",
            "pid": 101,
            "start": "2023-11-14T22:13:20.500000+00:00",
            "end": None,
            "exit_code": None,
            "exit": None,
            "state": "lost",
            "lost_contact": None,
            "dropped": 0,
            "last_record": "2023-11-14T22:13:20.500000+00:00",
            "last_step": 98,
            "memory": NO_MEMORY,
            "cause": None,
            "cgroup": None,
        },
    ]
    assert s["metrics"]["loss"] == {
        "count": 50,
        "first": 1.0,
        "last": 0.02,
        "min": 0.02,
        "max": 1.0,
        "last_step": 49,
        "non_finite": 1,
    }
    assert s["metrics"]["lr"]["last_step"] == 98
    assert s["events"] == [
        {
            "t": "2023-11-14T22:13:20.030000+00:00",
            "kind": "anomaly",
            "message": "loss is NaN at step 30",
            "severity": 2,
            "run": 0,
        },
        {
            "t": "2023-11-14T22:13:20.040000+00:00",
            "kind": "mark",
            "message": "eval",
            "severity": 0,
            "run": 1,
        },
    ]
    assert (s["events_total"], s["events_omitted"]) == (2, 0)
    assert s["event_kinds"] == {"anomaly": 1, "mark": 1}
    assert (s["crashes"], s["crashes_total"]) == ([], 0)
    assert s["stacks"] == {
        "samples": 11,
        "backend": ["perf", "python"],
        "notes": [],
        "top_functions": [{"function": "forward", "self": 9, "total": 9}],
        "samples_not_counted_by_function": 0,
    }
    assert s["gpu_memory"] == []
    assert s["damaged_frames"] == 0
    assert s["damage"] == []
    assert s["truncated"] is False
    assert s["indexed"] is True


def test_non_finite_values_are_strings_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nan.est"
    with TraceWriter(path) as w:
        w.append(Metrics(0, "loss", (0, 1), (T0, T0 + 1), (float("nan"), float("-inf"))))
    m = inspect_json(path, capsys)["metrics"]["loss"]
    assert (m["first"], m["last"], m["min"], m["max"], m["non_finite"]) == (
        "NaN",
        "-Infinity",
        None,
        None,
        2,
    )


def test_damaged_trace_is_readable_and_the_damage_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "damaged.est"
    write_two_runs(path)
    data = bytearray(path.read_bytes())
    data[700] ^= 0x10
    path.write_bytes(bytes(data[:-5]))
    s = inspect_json(path, capsys)
    assert s["damaged_frames"] == 1
    assert s["truncated"] is True
    (bad,) = (d for d in s["damage"] if not d["truncated"])
    assert bad["offset"] <= 700 < bad["offset"] + bad["length"]
    assert bad["reason"] == "bad checksum"
    assert s["indexed"] is False
    assert s["metrics"]["loss"]["count"] < 50

    assert main(["inspect", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert "damage  1 damaged span(s)" in out
    assert f"at byte {bad['offset']}, {bad['length']} bytes: bad checksum" in out
    assert "the last frame is cut short" in out
    assert "index   none (the file was not closed)" in out


def test_human_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.est"
    write_two_runs(path, close=False)
    assert main(["inspect", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == (
        f"{path}: edgescope trace format {FORMAT_MAJOR}.{FORMAT_MINOR}, "
        f"{path.stat().st_size / 1024:.1f} KiB, 109 records"
    )
    assert lines[1] == "  time    2023-11-14 22:13:20.000 UTC .. 22:13:22.000 UTC (2.0 s)"
    assert (
        "  run     resnet (a1a1a1a1a1a1) on pi5, pid 100: failed: exit code 1 after 2.0 s "
        "(last step 49), 3 items dropped" in lines
    )
    # not closed, and on another host: it may still be running there
    assert (
        "  run     tiny-llm (b2b2b2b2b2b2) on jetson, pid 101: lost: the process died without "
        "finishing (SIGKILL or power loss) at 22:13:20 UTC, last step 98; or it is still "
        "running on jetson and the file still growing" in lines
    )
    assert "  stacks  11 samples from perf, python" in lines
    assert "     81.8%  81.8%  forward" in lines
    table = lines[lines.index("  metrics") + 1 :][:3]
    assert table == [
        "    key   count  first   last    min    max  last step",
        "    loss     50      1   0.02   0.02      1         49  (1 not finite)",
        "    lr       50  0.001  0.001  0.001  0.001         98",
    ]
    assert "  stacks  11 samples from perf, python" in lines
    assert "    2023-11-14 22:13:20.030 UTC  anomaly  error   loss is NaN at step 30" in lines
    assert "  damage  none" in lines
    assert "  index   none (the file was not closed); seeking rebuilds it by a scan" in lines


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2
    assert "the following arguments are required: FILE" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(records=st.lists(any_record, max_size=40))
def test_summary_agrees_with_counting_by_hand(records: list[Record]) -> None:
    s = summarize(records, format_version="1.0", size=0)
    assert s.records == len(records)
    assert sum(s.kinds.values()) == len(records)
    for name, ms in s.metrics.items():
        values = [v for r in records if isinstance(r, Metrics) and r.key == name for v in r.values]
        steps = [x for r in records if isinstance(r, Metrics) and r.key == name for x in r.steps]
        finite = [v for v in values if math.isfinite(v)]
        assert ms.count == len(values)
        assert repr((ms.first, ms.last)) == repr(
            (values[0], values[-1]) if values else (None, None)
        )
        assert (ms.min, ms.max) == ((min(finite), max(finite)) if finite else (None, None))
        assert ms.non_finite == len(values) - len(finite)
        assert ms.last_step == (max(steps) if steps else None)
    assert s.stack_samples == sum(
        c for r in records if isinstance(r, StackSamples) for _, c in r.samples
    )
    assert [e.message for e in s.events] == [r.message for r in records if isinstance(r, Event)]
    json.dumps(s.to_json(), allow_nan=False)  # always valid JSON
    out = io.StringIO()
    print_human("t.est", s, out)  # and always printable
    assert out.getvalue().startswith("t.est: edgescope trace format 1.0")
