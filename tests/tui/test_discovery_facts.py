"""The figures a device row shows, folded from records: runs, temperature, memory, throttling."""

from __future__ import annotations

from edgescope_tracing import (
    GpuSample,
    Keyframe,
    RunEnd,
    RunStart,
    SystemSample,
    ThermalSample,
    ThermalZone,
)
from edgescope_tui.discovery._facts import DeviceFacts
from h200_trace import h200_records


def test_runs_follow_keyframes_starts_and_ends() -> None:
    f = DeviceFacts()
    f.add(Keyframe(0, -1, runs=(RunStart(0, "a", "warmup", "pi", 1),)))
    f.add(RunStart(1, "b", "bigger-lr", "pi", 2))
    assert list(f.runs.values()) == ["warmup", "bigger-lr"]
    f.add(RunEnd(0, exit_code=0))
    assert list(f.runs.values()) == ["bigger-lr"]
    assert f.samples == 0 and f.temp_c is None


def test_real_h200_run_is_hot_but_not_throttled() -> None:
    """The fixture's GPU reports only 'idle' (0x1) or nothing: no throttle badge."""
    f = DeviceFacts()
    temps = []
    for rec in h200_records(steps=11658):
        f.add(rec)
        if isinstance(rec, GpuSample):
            temps.append(rec.temp_c)
            assert f.throttled == ()
    assert f.temp_c == temps[-1]
    assert 50 <= max(t for t in temps if t is not None) <= 60
    assert list(f.runs.values()) == ["h200-mlp"]


def test_gpu_throttle_reasons_by_name() -> None:
    f = DeviceFacts()
    f.add(GpuSample(0, "H200", temp_c=84.0, clock_event_reasons=0x1 | 0x20 | 0x4))
    assert f.throttled == ("gpu sw_power_cap", "gpu sw_thermal_slowdown")
    assert f.temp_c == 84.0
    f.add(GpuSample(0, "H200", temp_c=60.0, clock_event_reasons=0))
    assert f.throttled == ()


def test_pi_flags_and_x86_counters() -> None:
    f = DeviceFacts()
    zone = (ThermalZone("cpu-thermal", 81.5),)
    # Bits 16-19 say it happened since boot; only bits 0-3 hold now.
    f.add(ThermalSample(zones=zone, throttle={"pi.throttled": 0x50005}))
    assert f.throttled == ("pi under_voltage", "pi throttled")
    assert f.temp_c == 81.5
    f.add(ThermalSample(zones=zone, throttle={"pi.throttled": 0x50000}))
    assert f.throttled == ()

    x86 = DeviceFacts()
    x86.add(ThermalSample(throttle={"cpu0.core_throttle_count": 7}))
    assert x86.throttled == ()  # a count since boot says nothing about now
    x86.add(ThermalSample(throttle={"cpu0.core_throttle_count": 9}))
    assert x86.throttled == ("cpu thermal throttle",)
    x86.add(ThermalSample(throttle={"cpu0.core_throttle_count": 9}))
    assert x86.throttled == ()


def test_memory_from_system_samples() -> None:
    f = DeviceFacts()
    f.add(SystemSample(mem_used=3 << 30, mem_total=8 << 30))
    f.add(SystemSample(cpu_percent=5.0))  # a sample without memory keeps the last figure
    assert (f.mem_used, f.mem_total) == (3 << 30, 8 << 30)
