"""The checked-in H200 example holds what the real recording holds, and is rebuildable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    ProcessSample,
    RunEnd,
    RunStart,
    SystemSample,
    TraceReader,
)
from realdata import H200_RUN

_spec = importlib.util.spec_from_file_location(
    "convert_h200", Path(__file__).resolve().parents[2] / "tools" / "convert_h200.py"
)
assert _spec is not None and _spec.loader is not None
convert_h200 = importlib.util.module_from_spec(_spec)
sys.modules["convert_h200"] = convert_h200  # its dataclasses look their module up
_spec.loader.exec_module(convert_h200)
ConvertError = convert_h200.ConvertError
convert = convert_h200.convert
h200_records = convert_h200.h200_records
peak_jumps = convert_h200.peak_jumps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "h200-mlp-training.est"
FIXTURE = H200_RUN
CONVERTER = ROOT / "tools" / "convert_h200.py"


def _fixture() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    lines = [json.loads(x) for x in FIXTURE.read_text().splitlines() if x.strip()]
    meta = lines[0]
    return (
        meta,
        [x for x in lines if x["kind"] == "step"],
        [x for x in lines if x["kind"] == "nvml"],
    )


def _example() -> list[Any]:
    with TraceReader(EXAMPLE) as r:
        recs = list(r)
        assert r.damage == []
        assert r.indexed
    return recs


def _series(recs: list[Any], key: str) -> tuple[list[int], list[int], list[float]]:
    steps: list[int] = []
    times: list[int] = []
    values: list[float] = []
    for m in recs:
        if isinstance(m, Metrics) and m.key == key:
            steps += m.steps
            times += m.times_us
            values += m.values
    return steps, times, values


def test_example_is_small() -> None:
    assert EXAMPLE.stat().st_size < 1_000_000


def _content(path: Path) -> list[Any]:
    """The records of a trace without keyframes and sequence numbers: what an encoding change
    (where keyframes fall, how ids are numbered) leaves alone."""
    with TraceReader(path) as r:
        return [replace(x, seq=0) for x in r if not isinstance(x, Keyframe)]


def test_example_is_what_the_converter_makes(tmp_path: Path) -> None:
    out, again = tmp_path / "one.est", tmp_path / "two.est"
    for dst in (out, again):
        proc = subprocess.run(
            [sys.executable, str(CONVERTER), str(FIXTURE), "-o", str(dst)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == again.read_bytes()  # deterministic
    assert _content(out) == _content(EXAMPLE), (
        "examples/h200-mlp-training.est is stale: rebuild it with "
        "python tools/convert_h200.py tests/fixtures/h200-mlp-training.jsonl "
        "-o examples/h200-mlp-training.est"
    )


def test_example_holds_the_steps() -> None:
    meta, steps, _ = _fixture()
    recs = _example()
    starts = [r for r in recs if isinstance(r, RunStart)]
    assert len(starts) == 1
    start = starts[0]
    assert start.device == {k: v for k, v in meta.items() if k != "kind"}
    assert start.device["gpu"] == "NVIDIA H200"
    assert sum(isinstance(r, RunEnd) for r in recs) == 1

    want_steps = [s["step"] for s in steps]
    want_times = [s["t_ns"] // 1000 for s in steps]
    for key, want in [
        ("loss", [s["loss"] for s in steps]),
        ("step_time", [s["step_ns"] / 1e9 for s in steps]),
        ("cuda_alloc", [float(s["cuda_alloc"]) for s in steps]),
        ("cuda_max_alloc", [float(s["cuda_max_alloc"]) for s in steps]),
    ]:
        got_steps, got_times, got = _series(recs, key)
        assert len(got) == len(steps) == 11658
        assert got_steps == want_steps
        assert got_times == want_times
        assert got == want, key
    _, _, step_time = _series(recs, "step_time")
    assert [round(v * 1e9) for v in step_time] == [s["step_ns"] for s in steps]
    assert step_time[0] == pytest.approx(0.4467, abs=1e-4)


def test_example_holds_the_nvml_samples() -> None:
    _, _, nvml = _fixture()
    recs = _example()
    gpus = [r for r in recs if isinstance(r, GpuSample)]
    procs = [r for r in recs if isinstance(r, ProcessSample)]
    systems = [r for r in recs if isinstance(r, SystemSample)]
    assert len(gpus) == len(procs) == len(systems) == len(nvml) == 779
    for g, p, s, n in zip(gpus, procs, systems, nvml, strict=True):
        assert g.t_us == p.t_us == s.t_us == n["t_ns"] // 1000
        assert g.name == "NVIDIA H200"
        assert g.temp_c == n["temp_c"]
        assert g.power_mw == n["power_mw"]
        assert g.power_limit_mw == n["power_limit_mw"]
        assert g.sm_clock_mhz == n["sm_clock_mhz"]
        assert g.mem_clock_mhz == n["mem_clock_mhz"]
        assert g.max_sm_clock_mhz == n["max_sm_clock_mhz"]
        assert g.clock_event_reasons == n["clock_event_reasons"]
        assert g.util_gpu == n["util_gpu"]
        assert g.util_mem == n["util_mem"]
        assert g.mem_used == n["mem_used"]
        assert g.mem_total == n["mem_total"]
        assert p.rss == n["rss"]
        assert s.cpu_percent == n["cpu_percent_sys"]
    # what the recording shows: idle and cool at the start, hot and near the power limit later
    assert gpus[0].clock_event_reasons == 1 and gpus[-1].clock_event_reasons == 0
    assert gpus[0].temp_c == 38 and max(g.temp_c or 0 for g in gpus) == 56
    assert max(g.power_mw or 0 for g in gpus) > 600_000


def test_the_peak_jump_at_step_600_is_found_in_the_data() -> None:
    _, steps, _ = _fixture()
    recs = _example()
    marks = [r for r in recs if isinstance(r, Event)]
    assert len(marks) == 1
    (mark,) = marks
    s600 = next(s for s in steps if s["step"] == 600)
    assert mark.kind == "mark"
    assert mark.detail["step"] == 600
    assert mark.t_us == s600["t_ns"] // 1000
    assert mark.detail["cuda_max_alloc_before"] == 2888207360
    assert mark.detail["cuda_max_alloc_after"] == s600["cuda_max_alloc"] == 22351628800
    assert "2.9 GB → 22.4 GB" in mark.message
    # the mark follows the metric batch that holds step 600's values
    idx = recs.index(mark)
    before = [r for r in recs[:idx] if isinstance(r, Metrics) and r.key == "cuda_max_alloc"]
    assert before[-1].steps[-1] == 600 and before[-1].values[-1] == 22351628800.0


def test_peak_jumps_rule() -> None:
    assert peak_jumps([]) == []
    # the first allocation is not a jump; doubling by less than 1 GiB is not one either
    assert peak_jumps([(0, 0), (1, 100 << 20), (2, 300 << 20)]) == []
    assert peak_jumps([(0, 2 << 30), (1, 5 << 30), (2, 5 << 30)]) == [(1, 2 << 30, 5 << 30)]
    assert peak_jumps([(0, 4 << 30), (1, 7 << 30)]) == []


def test_converter_refuses_other_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "meta"}\n{"kind": "step", "t_ns": 1, "step": "x"}\n')
    with pytest.raises(ConvertError, match="line 2"):
        list(h200_records(bad))
    bad.write_text("not json\n")
    with pytest.raises(ConvertError, match="line 1: not a JSON object"):
        convert(bad, tmp_path / "out.est")
    assert not (tmp_path / "out.est").exists()
    assert not (tmp_path / "out.est.tmp").exists()
    proc = subprocess.run(
        [sys.executable, str(CONVERTER), str(bad), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_replay_shows_the_example() -> None:
    """What ``edgescope replay examples/h200-mlp-training.est`` draws, through the real App."""
    import asyncio

    from edgescope_tui.app import EdgescopeApp
    from edgescope_tui.screens.dashboard import DashboardScreen
    from edgescope_tui.sources import FileSource
    from edgescope_tui.widgets.chart import Chart
    from textual.widgets import TabbedContent

    async def replay() -> None:
        app = EdgescopeApp([FileSource(EXAMPLE)])
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(500):
                if app.feeds and app.feeds[0].complete:
                    break
                await pilot.pause(0.02)
            await pilot.pause()
            d = app.screen
            assert isinstance(d, DashboardScreen)
            assert "h200-mlp-training" in str(d.query_one("#run-header").render())

            def lines(chart: str) -> dict[str, int]:
                spec = d.query_one(f"#{chart}", Chart).spec
                assert spec is not None, chart
                return {line.label: len(line.series) for line in spec.lines}

            # each series drawn in full: per-step curves and per-NVML-sample GPU lines
            assert lines("chart-loss") == {"loss": 11658}
            assert 11658 in lines("chart-step").values()
            memory = d.query_one("#chart-memory", Chart).spec
            assert memory is not None and "CUDA peak 20.8 GiB" in memory.subtitle
            assert sorted(lines("chart-memory").values()) == [779, 11658, 11658]  # RSS, CUDA x2
            thermal = d.query_one("#chart-thermal", Chart).spec
            assert thermal is not None and "reasons" in thermal.subtitle
            assert list(lines("chart-thermal").values()) == [779]
            # the System tab draws its charts when it is shown
            d.query_one("#tabs", TabbedContent).active = "system"
            await pilot.pause()
            d.refresh_view()
            await pilot.pause()
            for chart in ("chart-clocks", "chart-power"):
                assert list(lines(chart).values()) == [779], chart
            power = d.query_one("#chart-power", Chart).spec
            assert power is not None and any("700 W" in h[1] for h in power.hlines)
            marks = [e for e in d.feed.state.events_until() if e.kind == "mark"]
            assert len(marks) == 1 and marks[0].detail["step"] == 600
            await pilot.press("q")

    asyncio.run(replay())
