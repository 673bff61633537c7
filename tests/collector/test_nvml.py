"""NVML: clock-event reasons and the GpuSample mapping, against real H200 readings."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from edgescope_collector.samplers import nvml as nvml_module
from edgescope_collector.samplers.nvml import (
    CLOCK_EVENT_REASONS,
    THROTTLE_REASONS,
    NvmlSampler,
    clock_event_reason_names,
    gpu_sample_from_readings,
    is_throttled,
)
from edgescope_tracing.records import GpuSample


@pytest.fixture(scope="module")
def nvml_readings(h200_fixture: Path) -> list[dict[str, Any]]:
    with open(h200_fixture) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "nvml"]


def test_reason_names_follow_nvml() -> None:
    assert clock_event_reason_names(0) == ()
    assert clock_event_reason_names(0x1) == ("gpu_idle",)
    assert clock_event_reason_names(0x4 | 0x40) == ("sw_power_cap", "hw_thermal_slowdown")
    assert clock_event_reason_names(0x1FF) == tuple(CLOCK_EVENT_REASONS[1 << i] for i in range(9))
    assert clock_event_reason_names(0x80 | 0x1000) == ("hw_power_brake_slowdown", "0x1000")
    assert not is_throttled(0x1) and not is_throttled(0x10) and not is_throttled(None)
    assert is_throttled(0x20) and is_throttled(0x8)


def test_names_match_the_installed_pynvml_constants() -> None:
    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed: nothing to compare the names against")
    import pynvml

    expected = {
        "gpu_idle": "GpuIdle",
        "applications_clocks_setting": "ApplicationsClocksSetting",
        "sw_power_cap": "SwPowerCap",
        "hw_slowdown": "HwSlowdown",
        "sync_boost": "SyncBoost",
        "sw_thermal_slowdown": "SwThermalSlowdown",
        "hw_thermal_slowdown": "HwThermalSlowdown",
        "hw_power_brake_slowdown": "HwPowerBrakeSlowdown",
        "display_clock_setting": "DisplayClockSetting",
        "board_limit": "BoardLimit",
        "reliability": "Reliability",
    }
    for bit, name in CLOCK_EVENT_REASONS.items():
        assert getattr(pynvml, f"nvmlClocksThrottleReason{expected[name]}") == bit
    assert THROTTLE_REASONS & pynvml.nvmlClocksThrottleReasonGpuIdle == 0


def test_h200_readings_map_to_gpu_samples(nvml_readings: list[dict[str, Any]]) -> None:
    assert len(nvml_readings) == 779
    samples = [
        gpu_sample_from_readings(0, "NVIDIA H200", r, r["t_ns"] // 1000) for r in nvml_readings
    ]
    first, peak = samples[0], max(samples, key=lambda s: s.power_mw or 0)
    assert first.t_us == nvml_readings[0]["t_ns"] // 1000
    assert (first.temp_c, first.power_mw, first.power_limit_mw) == (38.0, 79156, 700000)
    assert (first.sm_clock_mhz, first.mem_clock_mhz, first.max_sm_clock_mhz) == (345, 3201, 1980)
    assert first.mem_total == 150754820096 and first.mem_used == 644939776
    assert first.max_mem_clock_mhz is None  # not recorded in the fixture: stays unknown
    assert isinstance(first.temp_c, float) and isinstance(first.util_gpu, float)
    assert 600_000 < (peak.power_mw or 0) <= 700_000
    for s, r in zip(samples, nvml_readings, strict=True):
        assert s.clock_event_reasons == r["clock_event_reasons"]
        assert (s.util_gpu, s.util_mem) == (r["util_gpu"], r["util_mem"])
        assert s.sm_clock_mhz is not None and s.sm_clock_mhz <= (s.max_sm_clock_mhz or 0)


def test_h200_run_was_idle_then_unthrottled(nvml_readings: list[dict[str, Any]]) -> None:
    """The real run: idle at the start, then busy with no power or thermal throttling."""
    names = [clock_event_reason_names(r["clock_event_reasons"]) for r in nvml_readings]
    assert names[0] == ("gpu_idle",)
    busy = [r for r in nvml_readings if r["util_gpu"] >= 80]
    assert len(busy) > 700
    assert all(r["clock_event_reasons"] == 0 and r["sm_clock_mhz"] == 1980 for r in busy)
    assert sum(n == ("gpu_idle",) for n in names) == 10
    assert not any(is_throttled(r["clock_event_reasons"]) for r in nvml_readings)
    assert {n for ns in names for n in ns} <= {"gpu_idle"}
    assert max(r["temp_c"] for r in nvml_readings) == 56


def test_sampler_says_why_it_cannot_run_here() -> None:
    reason = NvmlSampler.open()
    if not isinstance(reason, str):
        reason.close()
        pytest.skip("this machine has a working NVIDIA driver")
    if importlib.util.find_spec("pynvml") is None:
        assert reason.startswith("nvidia-ml-py is not installed")
    else:
        assert "driver" in reason or "GPU" in reason
    assert "\n" not in reason


def test_every_nvml_call_the_sampler_makes_exists_in_pynvml() -> None:
    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed")
    import pynvml

    source = Path(nvml_module.__file__).read_text()
    used = set(re.findall(r"nvml\.(nvml\w+|NVML\w+)", source))
    assert {"nvmlInit", "nvmlDeviceGetPowerUsage", "NVML_CLOCK_SM"} <= used
    assert sorted(n for n in used if not hasattr(pynvml, n)) == []


def test_a_gpu_that_answers_nothing_gives_an_empty_sample() -> None:
    """Without a driver every NVML call raises: each figure becomes None, nothing escapes."""
    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed")
    import pynvml

    if not isinstance(NvmlSampler.open(), str):
        pytest.skip("this machine has a working NVIDIA driver")
    sampler = NvmlSampler(pynvml, [(0, "absent", None)])
    (s,) = sampler.sample(123)
    assert s == GpuSample(index=0, name="absent", t_us=123)
    sampler.close()
    sampler.close()  # twice is harmless
