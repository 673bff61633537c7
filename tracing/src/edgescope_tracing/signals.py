"""What the numbers in a trace mean: the signal vocabulary shared by writers and readers.

A trace stores some signals as raw numbers: a GPU's NVML clock-event reasons bitmask
(``GpuSample.clock_event_reasons``), a Raspberry Pi's firmware ``get_throttled`` value (the
``"pi.throttled"`` key of ``ThermalSample.throttle``), a metric whose name says it is the wall
time of a step. The collector (which writes them and detects anomalies in them) and the UI
(which shows them) decode them here, so both call a bit by the same name and agree on which
bits mean throttling.

- :data:`CLOCK_EVENT_REASONS`, :func:`clock_event_reason_names`: NVML reason bits by name;
  :data:`GPU_THROTTLE_MASK`, :func:`gpu_throttled`: the bits that mean power or thermal
  throttling (not idle, a clock setting or sync boost).
- :data:`PI_THROTTLED_BITS`, :func:`pi_throttled_flags`: the Pi firmware's bits by name;
  :data:`PI_THROTTLED_NOW_MASK`: the bits that hold now (the others say "since boot").
- :data:`STEP_TIME_KEYS`, :func:`step_time_unit`: metric names read as step time, with the
  factor that makes them seconds.
- :data:`PASSIVE_COOLING`: cooling device types that cool by slowing a processor.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CLOCK_EVENT_REASONS",
    "PASSIVE_COOLING",
    "GPU_THROTTLE_MASK",
    "PI_THROTTLED_BITS",
    "PI_THROTTLED_NOW_MASK",
    "STEP_TIME_KEYS",
    "StepClock",
    "clock_event_reason_names",
    "derive_step_times",
    "gpu_throttled",
    "pi_throttled_flags",
    "step_time_unit",
]

CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
"""NVML's ``nvmlClocksEventReason*`` bits by name (0x200 and 0x400 exist in the throttle-reason
form of the API only)."""

GPU_THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x200 | 0x400
"""Bits that mean power or thermal throttling (not idle, a clock setting or sync boost): the GPU
runs slower than the workload asks."""

PI_THROTTLED_BITS: dict[int, str] = {
    0: "under_voltage",
    1: "arm_freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "arm_freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
"""The Raspberry Pi firmware's ``get_throttled`` bits by index: 0-3 are "now", 16-19 "has
occurred since boot"."""

PI_THROTTLED_NOW_MASK = 0xF
"""The ``get_throttled`` bits that hold now (bits 0-3)."""

STEP_TIME_KEYS: dict[str, float] = {
    "step_time": 1.0,
    "step_time_s": 1.0,
    "step_s": 1.0,
    "time/step": 1.0,
    "step_time_ms": 1e-3,
    "step_ms": 1e-3,
    "step_time_us": 1e-6,
    "step_us": 1e-6,
    "step_ns": 1e-9,
    "step_time_ns": 1e-9,
}
"""Metric names (lower case) read as the wall time of a step, with the factor that makes them
seconds."""


def clock_event_reason_names(mask: int) -> tuple[str, ...]:
    """The names of the bits set in a clock-event reasons mask, lowest first; unknown bits as
    hex (``0x800``).

    >>> clock_event_reason_names(0x44)
    ('sw_power_cap', 'hw_thermal_slowdown')
    >>> clock_event_reason_names(0x1001)
    ('gpu_idle', '0x1000')
    """
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENT_REASONS.get(bit, hex(bit)))
        bit <<= 1
    return tuple(names)


def gpu_throttled(mask: int | None) -> bool:
    """True if a clock-event reasons mask holds a power or thermal throttle reason.

    >>> gpu_throttled(0x1), gpu_throttled(0x40), gpu_throttled(None)
    (False, True, False)
    """
    return bool(mask and mask & GPU_THROTTLE_MASK)


def pi_throttled_flags(value: int) -> list[str]:
    """The names of the bits set in a ``get_throttled`` value, lowest bit first; bits the
    firmware does not define are not named.

    >>> pi_throttled_flags(0x50005)
    ['under_voltage', 'throttled', 'under_voltage_occurred', 'throttled_occurred']
    >>> pi_throttled_flags(0x50005 & PI_THROTTLED_NOW_MASK)
    ['under_voltage', 'throttled']
    """
    return [name for bit, name in PI_THROTTLED_BITS.items() if value >> bit & 1]


def step_time_unit(key: str) -> float | None:
    """The factor to seconds when ``key`` names a step-time metric, else None.

    >>> step_time_unit("Step_ms"), step_time_unit("loss")
    (0.001, None)
    """
    return STEP_TIME_KEYS.get(key.lower())


StepClock = tuple[str, float, float]
"""What step times are derived from for a run: the metric that times its steps, and that
metric's last ``(step, t_us)``."""


def derive_step_times(
    key: str,
    steps: Sequence[float],
    times_us: Sequence[float],
    clock: StepClock | None,
) -> tuple[list[tuple[float, float, float]], StepClock | None]:
    """Seconds per step from a run's step timestamps, where no step-time metric is logged:
    ``(step, t_us, seconds)`` for each step after the previous one (time over the steps between
    them), and the clock to pass with the next batch. The first metric seen times the steps;
    a batch of another metric gives nothing and leaves the clock as it is. The collector's
    step-time detector and the TUI's step-time chart both derive them here.

    >>> derive_step_times("loss", [0, 1, 3], [0, 10_000, 50_000], None)
    ([(1, 10000, 0.01), (3, 50000, 0.02)], ('loss', 3, 50000))
    """
    if not steps or (clock is not None and clock[0] != key):
        return [], clock
    if clock is None:
        last_step, last_t = steps[0], times_us[0]
        pairs = zip(steps[1:], times_us[1:], strict=True)
    else:
        _, last_step, last_t = clock
        pairs = zip(steps, times_us, strict=True)
    points = []
    for step, t in pairs:
        if step > last_step and t >= last_t:
            points.append((step, t, (t - last_t) / 1e6 / (step - last_step)))
            last_step, last_t = step, t
    return points, (key, last_step, last_t)


PASSIVE_COOLING = (
    "Processor",
    "intel_powerclamp",
    "TCC Offset",
    "cpufreq",
    "thermal-cpufreq",
    "devfreq",
    "thermal-devfreq",
)
"""Cooling device types (prefixes of ``CoolingDevice.name``) that cool by slowing a processor:
above state 0 is throttling."""
