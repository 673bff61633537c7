"""The signal vocabulary (``edgescope_tracing.signals``): one table for writers and readers."""

from __future__ import annotations

import doctest

import edgescope_tracing.signals as signals
from edgescope_tracing.signals import (
    CLOCK_EVENT_REASONS,
    GPU_THROTTLE_MASK,
    PI_THROTTLED_BITS,
    PI_THROTTLED_NOW_MASK,
    clock_event_reason_names,
    gpu_throttled,
    pi_throttled_flags,
    step_time_unit,
)


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(signals)
    assert result.attempted > 0 and result.failed == 0


def test_throttle_mask_is_power_and_thermal_only() -> None:
    names = clock_event_reason_names(GPU_THROTTLE_MASK)
    assert "gpu_idle" not in names and "sync_boost" not in names
    assert "board_limit" in names and "reliability" in names
    assert gpu_throttled(0x200) and gpu_throttled(0x400)
    assert not gpu_throttled(0x1 | 0x2 | 0x10 | 0x100)
    assert set(CLOCK_EVENT_REASONS) >= {1 << i for i in range(11)}


def test_unknown_clock_bits_each_as_hex() -> None:
    assert clock_event_reason_names(0x1800) == ("0x800", "0x1000")


def test_pi_now_mask_is_the_now_bits() -> None:
    now = [PI_THROTTLED_BITS[b] for b in range(4)]
    assert pi_throttled_flags(0xF000F & PI_THROTTLED_NOW_MASK) == now
    assert not any(name.endswith("_occurred") for name in now)


def test_step_time_units() -> None:
    assert step_time_unit("STEP_NS") == 1e-9
    assert step_time_unit("time/step") == 1.0
    assert step_time_unit("step") is None


def test_step_times_are_derived_in_one_place() -> None:
    from edgescope_tracing.signals import derive_step_times

    points, clock = derive_step_times("loss", [0, 1, 3], [0, 10_000, 50_000], None)
    assert points == [(1, 10_000, 0.01), (3, 50_000, 0.02)] and clock == ("loss", 3, 50_000)
    # the next batch goes on from the clock; a step that goes back, or another metric, gives none
    more, clock = derive_step_times("loss", [2, 4], [60_000, 70_000], clock)
    assert more == [(4, 70_000, 0.02)] and clock == ("loss", 4, 70_000)  # since step 3
    assert derive_step_times("acc", [5], [80_000], clock) == ([], clock)
    assert derive_step_times("loss", [], [], None) == ([], None)
