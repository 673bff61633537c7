"""NVML: clock-event reasons and the GpuSample mapping, against real H200 readings."""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from edgescope_collector.samplers import nvml as nvml_module
from edgescope_collector.samplers.nvml import (
    CLOCK_EVENT_REASONS,
    NOT_AVAILABLE,
    THROTTLE_REASONS,
    NvmlSampler,
    clock_event_reason_names,
    gpu_processes,
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


def _process_info(pid: int, used: int | None) -> Any:
    """One process as pynvml's nvmlDevice*RunningProcesses returns it (a friendly object made
    from c_nvmlProcessInfo_v3_t; usedGpuMemory None where NVML says NOT_AVAILABLE)."""
    if importlib.util.find_spec("pynvml") is None:
        return SimpleNamespace(pid=pid, usedGpuMemory=used)
    import pynvml

    raw = pynvml.c_nvmlProcessInfo_v3_t(pid, NOT_AVAILABLE if used is None else used, 0, 0)
    obj = pynvml.nvmlStructToFriendlyObject(raw)
    if obj.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
        obj.usedGpuMemory = None  # what pynvml does to it
    return obj


def _smi_processes(h200_fixture: Path) -> list[tuple[int, int]]:
    """The processes of ``nvidia-smi -q -x`` of the same H200 right after the run."""
    root = ET.parse(h200_fixture.parent / "h200-nvidia-smi-q.xml").getroot()
    out = []
    for p in root.iter("process_info"):
        mib = (p.findtext("used_memory") or "").removesuffix(" MiB")
        out.append((int(p.findtext("pid") or 0), int(mib) << 20))
    return out


def test_not_available_is_pynvmls() -> None:
    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed")
    import pynvml

    assert pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value == NOT_AVAILABLE


def test_processes_of_the_h200_run(h200_fixture: Path, nvml_readings: list[dict[str, Any]]) -> None:
    """The training process nvidia-smi saw after the run, read as NVML hands it over."""
    smi = _smi_processes(h200_fixture)
    assert smi == [(413, 23332 << 20)]  # python3, type C
    last = {**nvml_readings[-1], "processes": [_process_info(pid, b) for pid, b in smi]}
    s = gpu_sample_from_readings(0, "NVIDIA H200", last, last["t_ns"] // 1000)
    assert s.processes == ((413, 23332 << 20),)
    assert s.processes[0][1] <= (s.mem_used or 0)  # a process holds part of what is used
    assert s.mem_used == nvml_readings[-1]["mem_used"]
    # a recorded sample holds mappings with pynvml's names
    again = {**last, "processes": [{"pid": 413, "usedGpuMemory": 23332 << 20}]}
    assert gpu_sample_from_readings(0, "NVIDIA H200", again, 0).processes == s.processes
    # readings without the key (the fixture's own): no processes
    assert gpu_sample_from_readings(0, "NVIDIA H200", nvml_readings[0], 0).processes == ()


def test_process_figures_unknown_or_twice() -> None:
    infos = [
        _process_info(9001, 4 << 30),
        _process_info(77, None),  # NVML_VALUE_NOT_AVAILABLE (Windows WDDM): skipped
        SimpleNamespace(pid=78, usedGpuMemory=NOT_AVAILABLE),  # older pynvml passes it through
        _process_info(413, 1 << 30),  # compute ...
        _process_info(413, 3 << 30),  # ... and graphics (C+G): one process, its larger figure
        _process_info(12, 0),
    ]
    assert gpu_processes(infos) == ((12, 0), (413, 3 << 30), (9001, 4 << 30))
    assert gpu_processes([]) == ()


def test_read_asks_for_compute_and_graphics_processes() -> None:
    """A GPU that answers only for processes: compute ones, graphics NotSupported (a data-centre
    GPU) or some; every other figure None."""

    class NVMLError(Exception):
        pass

    def fail(*_: Any) -> Any:
        raise NVMLError("Not Supported")

    graphics: list[Any] = []

    def compute(_: Any) -> list[Any]:
        return [_process_info(413, 23332 << 20), _process_info(414, None)]

    def graphics_fn(_: Any) -> list[Any]:
        if not graphics:
            raise NVMLError("Not Supported")
        return graphics

    nvml = SimpleNamespace(
        NVMLError=NVMLError,
        NVML_CLOCK_SM=0,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetCurrentClocksEventReasons=fail,
        nvmlDeviceGetComputeRunningProcesses=compute,
        nvmlDeviceGetGraphicsRunningProcesses=graphics_fn,
    )
    for name in (
        "nvmlDeviceGetMaxClockInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlShutdown",
    ):
        setattr(nvml, name, fail)
    sampler = NvmlSampler(nvml, [(0, "gpu", object())])
    (s,) = sampler.sample(5)
    assert s == GpuSample(0, "gpu", processes=((413, 23332 << 20),), t_us=5)
    graphics.append(_process_info(500, 64 << 20))
    (s,) = sampler.sample(6)
    assert s.processes == ((413, 23332 << 20), (500, 64 << 20))
