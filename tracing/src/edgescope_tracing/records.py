"""The record kinds of an edgescope trace, as frozen dataclasses.

Every record carries ``seq`` (its sequence number in the stream, assigned by the encoder: the
resume cursor) and ``t_us`` (wall time, integer microseconds since the Unix epoch). On the wire
a record is a msgpack array ``[kind, seq, t_us, field...]``; ``docs/trace-format.md`` gives the
fields of each kind. Records that belong to a training run name it by ``run``, the small integer
that the run's :class:`RunStart` gave it within the stream (a collector stream carries several
runs; a file written by the SDK carries one).

The wire conversion lives in :mod:`edgescope_tracing._codec`, not here: these classes are plain
data, cheap to build and compare.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

__all__ = [
    "Kind",
    "RunStart",
    "RunEnd",
    "Metrics",
    "SystemSample",
    "ProcessSample",
    "ThermalZone",
    "CpuFreq",
    "CoolingDevice",
    "ThermalSample",
    "GpuSample",
    "PowerReading",
    "PowerSample",
    "StackFrame",
    "StackSamples",
    "Event",
    "Keyframe",
    "Record",
    "JsonValue",
]

JsonValue = Any
"""A value made of None, bool, int, float, str, bytes, lists and str-keyed dicts (msgpack-able)."""


class Kind(enum.IntEnum):
    """Record kind tags, the first element of every record on the wire. Never renumber."""

    STRINGS = 0
    KEYFRAME = 1
    RUN_START = 2
    RUN_END = 3
    METRICS = 4
    SYSTEM = 5
    PROCESS = 6
    THERMAL = 7
    GPU = 8
    STACKS = 9
    EVENT = 10
    INDEX = 11
    # 12 and 13 are format internals (the index pointer, the keyframe part): never records.
    POWER = 14
    """Format 1.3."""


@dataclass(frozen=True, slots=True)
class RunStart:
    """A training run begins: who, where, with what configuration, on which device."""

    KIND: ClassVar[Kind] = Kind.RUN_START
    run: int
    """The run's number within this stream, referenced by later records."""
    run_id: str
    """Globally unique identity of the run (hex)."""
    name: str
    host: str
    pid: int
    config: dict[str, JsonValue] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    device: dict[str, JsonValue] = field(default_factory=dict)
    """Facts about the device: board model, CPU, memory, GPUs, kernel, Python."""
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A run ended. ``dropped`` counts items the producer had to drop (never silent): metric
    values (one per key of a call), events, stack-sample windows."""

    KIND: ClassVar[Kind] = Kind.RUN_END
    run: int
    exit_code: int | None = None
    dropped: int = 0
    t_us: int = 0
    seq: int = 0
    cause: str | None = None
    """Why the run ended, in words, where something other than the run itself ended it, e.g.
    ``"killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"`` (the collector
    writes it from the run's cgroup). Added in format 1.3 (None when read from older traces)."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """A columnar batch of one metric's values: ``values[i]`` at ``steps[i]`` and ``times_us[i]``.

    ``t_us`` is the time of the first value: it is set from ``times_us`` (the wire does not
    carry it apart), and kept as given only for an empty batch. Steps and times are
    delta-encoded on the wire; values are stored as float32 where every value of the batch
    survives that exactly, else as float64.
    """

    KIND: ClassVar[Kind] = Kind.METRICS
    run: int
    key: str
    steps: tuple[int, ...]
    times_us: tuple[int, ...]
    values: tuple[float, ...]
    t_us: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        n = len(self.values)
        if len(self.steps) != n or len(self.times_us) != n:
            raise ValueError(
                f"metric batch {self.key!r}: steps, times_us and values must have the same "
                f"length (got {len(self.steps)}, {len(self.times_us)}, {n})"
            )
        if n and self.t_us != self.times_us[0]:
            object.__setattr__(self, "t_us", self.times_us[0])


@dataclass(frozen=True, slots=True)
class SystemSample:
    """Whole-device figures at one instant. ``None`` where the source is absent."""

    KIND: ClassVar[Kind] = Kind.SYSTEM
    cpu_percent: float | None = None
    per_cpu_percent: tuple[float, ...] = ()
    mem_used: int | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    swap_used: int | None = None
    swap_total: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    psi: dict[str, float] = field(default_factory=dict)
    """Pressure stall figures, e.g. ``{"memory.some.avg10": 0.5, "cpu.some.avg10": 3.1}``."""
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process of a run: CPU, RSS and its peak (VmHWM), threads, cgroup memory, and (from
    format 1.3) its parent, state and command."""

    KIND: ClassVar[Kind] = Kind.PROCESS
    run: int
    pid: int
    cpu_percent: float | None = None
    rss: int | None = None
    rss_peak: int | None = None
    threads: int | None = None
    cgroup_current: int | None = None
    cgroup_peak: int | None = None
    cgroup_limit: int | None = None
    oom_kills: int | None = None
    ppid: int | None = None
    """The parent's pid: the run's process tree (format 1.3; None in older traces)."""
    state: str | None = None
    """The kernel's one-letter state from ``/proc/PID/stat``: ``R`` running, ``S`` sleeping,
    ``D`` waiting on I/O, ``T`` stopped... (format 1.3)."""
    command: str | None = None
    """The command line (``/proc/PID/cmdline``, arguments joined by spaces), or ``[name]``
    where it is empty (a kernel thread, a process whose memory is gone) (format 1.3)."""
    t_us: int = 0
    seq: int = 0
    # Format 1.3: the run's cgroup, its CPU quota and throttling, its memory.high and events.
    # None where the source lacks the figure (and when read from older traces).
    cgroup: str | None = None
    """The process's cgroup path as ``/proc/PID/cgroup`` names it (the v2 path, else the v1
    memory controller's), e.g. ``/system.slice/docker-4f2a....scope``; the container it names
    is found by :func:`edgescope_tracing.containers.container_of`."""
    cgroup_version: int | None = None
    """1 or 2: which cgroup hierarchy the figures come from (which files they name)."""
    cpu_quota_us: int | None = None
    """CPU time the cgroup may use per period (``cpu.max``'s first figure, v1
    ``cpu.cfs_quota_us``); None: no quota. The lowest quota (in CPUs) on the way up to the
    root, the one that bites; the counters below are that cgroup's."""
    cpu_period_us: int | None = None
    cpu_periods: int | None = None
    """``cpu.stat`` ``nr_periods``: enforcement periods so far (a counter)."""
    cpu_throttled: int | None = None
    """``cpu.stat`` ``nr_throttled``: periods in which the quota ran out (a counter)."""
    cpu_throttled_us: int | None = None
    """``cpu.stat`` ``throttled_usec`` (v1 ``throttled_time`` ns / 1000): time spent
    throttled (a counter)."""
    memory_high: int | None = None
    """``memory.high``, bytes, the lowest on the way up (v2 only); None: none."""
    memory_high_events: int | None = None
    """``memory.events`` ``high``: times the cgroup's processes were throttled into reclaim
    because usage went over ``memory.high`` (a counter)."""
    memory_max_events: int | None = None
    """``memory.events`` ``max`` (v1: ``memory.failcnt``): times usage hit the limit."""
    oom_events: int | None = None
    """``memory.events`` ``oom`` (v1: none): times the limit was hit and reclaim failed."""
    swap_current: int | None = None
    """``memory.swap.current`` (v1: ``memory.memsw.usage_in_bytes`` minus usage), bytes."""


@dataclass(frozen=True, slots=True)
class ThermalZone:
    """A thermal zone reading; trips are ``(type, temp_c, hysteresis_c)``."""

    name: str
    temp_c: float
    trips: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class CpuFreq:
    """One CPU's frequencies in kHz: requested (scaling_cur), hardware (cpuinfo_cur), maxima."""

    cpu: int
    cur_khz: int | None
    hw_khz: int | None = None
    max_khz: int | None = None
    scaling_max_khz: int | None = None


@dataclass(frozen=True, slots=True)
class CoolingDevice:
    """A cooling device's state, with transitions since the last sample."""

    name: str
    cur_state: int
    max_state: int
    transitions: int = 0


@dataclass(frozen=True, slots=True)
class ThermalSample:
    """Thermal and throttle signals at one instant.

    ``throttle`` holds named counters and flags, e.g. ``{"cpu0.core_throttle_count": 3}`` on
    x86 or ``{"pi.throttled": 0x50005}`` on a Raspberry Pi: only counters that rise while
    throttling and 0/1 flags. ``sensors`` holds other readings in base units (format 1.1).
    """

    KIND: ClassVar[Kind] = Kind.THERMAL
    zones: tuple[ThermalZone, ...] = ()
    freqs: tuple[CpuFreq, ...] = ()
    cooling: tuple[CoolingDevice, ...] = ()
    throttle: dict[str, int] = field(default_factory=dict)
    sensors: dict[str, float] = field(default_factory=dict)
    """Readings that are neither temperatures nor throttle signals, in base units, e.g. hwmon's
    ``{"hwmon.ina3221.in1": 5.072, "hwmon.ina3221.curr1": 1.216, "hwmon.thinkpad.fan1": 2900.0}``:
    volts (``in*``), amperes (``curr*``), watts (``power*``), revolutions per minute (``fan*``).
    Added in format 1.1 (empty when read from a 1.0 trace)."""
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one instant (NVML or Jetson sysfs). ``None`` where the source lacks a figure."""

    KIND: ClassVar[Kind] = Kind.GPU
    index: int
    name: str
    temp_c: float | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    max_mem_clock_mhz: int | None = None
    clock_event_reasons: int | None = None
    """NVML clock-event (throttle) reasons bitmask."""
    util_gpu: float | None = None
    util_mem: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    processes: tuple[tuple[int, int], ...] = ()
    """``(pid, used GPU memory in bytes)`` of each process using the GPU whose figure the driver
    gives, by pid. Added in format 1.1 (empty when read from a 1.0 trace)."""
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PowerReading:
    """One energy or power figure of one source at one instant (format 1.3).

    ``energy_uj`` is the source's cumulative counter as the hardware gives it, in microjoules:
    it wraps at ``range_uj`` where that is known (RAPL's ``max_energy_range_uj``) and may
    restart from 0 (a driver reload); readers take differences
    (:mod:`edgescope_tracing.energy`). ``power_uw`` is the power now in microwatts: as the
    source reads it, or the sampler's rate of the counter since its previous sample.
    ``limit_uw`` is the power limit in force (RAPL's long-term constraint, NVML's enforced
    limit). ``total``: the reading counts toward its source's total; a part of another reading
    (a RAPL subzone such as ``core``, a Jetson rail measured inside ``VDD_IN``) does not.
    """

    source: str
    """``rapl``, ``hwmon``, ``ina3221``, ``nvml``, ``pmic``: what :mod:`.energy` sums per."""
    name: str
    """The reading within its source, stable across samples: ``package-0``,
    ``package-0/core``, ``ina3221.0/VDD_IN``, ``gpu0``."""
    energy_uj: int | None = None
    power_uw: int | None = None
    range_uj: int | None = None
    limit_uw: int | None = None
    total: bool = True


@dataclass(frozen=True, slots=True)
class PowerSample:
    """The device's energy counters and power readings at one instant (format 1.3)."""

    KIND: ClassVar[Kind] = Kind.POWER
    readings: tuple[PowerReading, ...] = ()
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One frame of a stack: function, file and line (0 where unknown)."""

    function: str
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class StackSamples:
    """Stack samples over a window: each stack (root first) with how often it was seen.

    On the wire, frames and stacks are interned: each distinct frame and stack is sent once per
    keyframe interval and referenced by number afterwards.
    """

    KIND: ClassVar[Kind] = Kind.STACKS
    run: int
    backend: str
    """Which sampler produced these: ``python``, ``perf`` or ``bpftrace``."""
    period_us: int
    samples: tuple[tuple[tuple[StackFrame, ...], int], ...]
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """Something to point at: an anomaly from a detector, a user's mark, a log line."""

    KIND: ClassVar[Kind] = Kind.EVENT
    kind: str
    """``anomaly``, ``mark``, ``log`` (others allowed)."""
    message: str
    run: int = -1
    """The run it concerns, or -1 for the device."""
    severity: int = 0
    """0 info, 1 warning, 2 error."""
    detail: dict[str, JsonValue] = field(default_factory=dict)
    t_us: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Keyframe:
    """Reading can start here: interned tables restart and the active runs are restated."""

    KIND: ClassVar[Kind] = Kind.KEYFRAME
    number: int
    last_step: int
    """The highest metric step written before this keyframe (-1 if none): seeking by step."""
    runs: tuple[RunStart, ...] = ()
    t_us: int = 0
    seq: int = 0


Record = Union[  # noqa: UP007 (a runtime alias: isinstance() takes it)
    RunStart,
    RunEnd,
    Metrics,
    SystemSample,
    ProcessSample,
    ThermalSample,
    GpuSample,
    StackSamples,
    Event,
    Keyframe,
    PowerSample,
]
"""Every record a reader yields (string tables and the index are internals, never yielded)."""
