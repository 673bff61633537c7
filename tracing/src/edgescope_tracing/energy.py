"""Energy from power records: the one reader of their counters (``docs/trace-format.md``).

A :class:`EnergyMeter` folds the device's power records into cumulative joules per source,
from each reading's counter where it has one (wrap-around at ``range_uj`` and counter
restarts handled) and from its power integrated between samples where it has none, and
answers what the cumulative energy was at a given time (:meth:`EnergyMeter.probe`): the
energy of a run, of an epoch between two marks, is the difference of two probes. Between two
samples energy is taken to grow linearly. Memory is bounded: the last :data:`HISTORY`
samples are kept for probes of past times (a run whose end is known only at the end of the
trace); older times resolve to the oldest kept.

Only readings marked ``total`` count (a RAPL subzone is inside its package). The device's
total is the sum over sources, which are taken to measure disjoint parts of the device (a PC's
RAPL CPU and its NVML GPU), except that a :data:`BOARD` source (a meter of the whole machine,
such as an ACPI ``power_meter``) is the total by itself where there is one.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .records import CpuFreq, GpuSample, PowerReading, PowerSample, ThermalSample
from .thresholds import CLOCK_LOW_SHARE, scaling_capped

__all__ = [
    "BOARD",
    "HISTORY",
    "EnergyMeter",
    "EnergyPoint",
    "AT_LIMIT",
    "GPU_POWER_CAP_MASK",
    "BoardPowerCap",
    "Probe",
    "board_power_cap",
    "counter_delta",
    "device_total",
    "gpu_power_capped",
    "reading_joules",
    "source_power_w",
]

BOARD = "board"
"""The source of a meter of the whole machine: where present, it is the device's total."""
HISTORY = 20_000
"""Samples kept for probes of past times: 5.5 hours at the collector's 1 Hz."""


def counter_delta(prev: int, now: int, range_uj: int | None) -> tuple[int, str | None]:
    """Microjoules between two readings of a counter, and ``"wrap"`` or ``"reset"`` where it
    went back: past its range it wrapped (``max_energy_range_uj``: the counter counts
    ``0..range``); without a range, or back by more than it, it restarted from 0, and the
    energy since is its new value.

    >>> counter_delta(10, 25, None), counter_delta(990, 5, 1000), counter_delta(990, 5, None)
    ((15, None), (15, 'wrap'), (5, 'reset'))
    """
    if now >= prev:
        return now - prev, None
    if range_uj and prev <= range_uj:
        return now + range_uj - prev, "wrap"
    return now, "reset"


AT_LIMIT = 0.95
"""A reading at this share of its power limit or more is at its limit."""
GPU_POWER_CAP_MASK = 0x4 | 0x80
"""NVML clock-event reasons that mean the power limit holds the clocks down: ``sw_power_cap``
and ``hw_power_brake_slowdown`` (:data:`edgescope_tracing.signals.CLOCK_EVENT_REASONS`)."""


@dataclass(frozen=True, slots=True)
class BoardPowerCap:
    """A board's power limit holding its CPU clocks down: a RAPL reading at its limit while a
    CPU runs well below its maximum frequency (or its ``scaling_max`` is lowered)."""

    reading: str
    power_uw: int
    limit_uw: int
    cpu: int
    khz: int
    max_khz: int


def _capped_cpu(f: CpuFreq) -> tuple[float, int, int] | None:
    now = f.hw_khz or f.cur_khz
    top = f.max_khz
    if not now or not top:
        return None
    if now < CLOCK_LOW_SHARE * top or scaling_capped(f):
        return now / top, now, top
    return None


def board_power_cap(power: PowerSample, thermal: ThermalSample) -> BoardPowerCap | None:
    """Whether, at this pair of samples, a power limit holds the CPU clocks down."""
    at_limit = [
        (r.power_uw / r.limit_uw, r)
        for r in power.readings
        if r.source == "rapl" and r.power_uw is not None and r.limit_uw
        if r.power_uw >= AT_LIMIT * r.limit_uw
    ]
    if not at_limit:
        return None
    capped = [(c, f.cpu) for f in thermal.freqs if (c := _capped_cpu(f)) is not None]
    if not capped:
        return None
    (_, now, top), cpu = min(capped)
    _, r = max(at_limit, key=lambda x: x[0])
    assert r.power_uw is not None and r.limit_uw is not None
    return BoardPowerCap(r.name, r.power_uw, r.limit_uw, cpu, now, top)


def gpu_power_capped(g: GpuSample) -> bool:
    """Whether NVML says the GPU's power limit holds its clocks down (and it is not idle)."""
    reasons = g.clock_event_reasons or 0
    return bool(reasons & GPU_POWER_CAP_MASK) and not reasons & 0x1


def device_total(joules: Mapping[str, float]) -> float:
    """The device's energy from per-source joules: the :data:`BOARD` source's where there is
    one (a meter of the whole machine), else the sum over the sources."""
    board = joules.get(BOARD)
    return board if board is not None else sum(joules.values())


def source_power_w(p: PowerSample) -> dict[str, float]:
    """Watts now per source: the sum of its ``total`` readings that give a power figure."""
    out: dict[str, float] = {}
    for r in p.readings:
        if r.total and r.power_uw is not None:
            out[r.source] = out.get(r.source, 0.0) + r.power_uw / 1e6
    return out


def reading_joules(
    prev: tuple[int, int | None, int | None] | None, r: PowerReading, t_us: int
) -> tuple[float, str | None] | None:
    """Joules of one reading since its previous one ``(t_us, energy_uj, power_uw)``, and
    ``"wrap"``/``"reset"`` where its counter went back; None where there is nothing to add
    from (no previous reading, or neither figure on both sides). The counter where both
    readings have it, else the trapezoid of the power (the previous power, where absent, taken
    as the current)."""
    if prev is None or t_us <= prev[0]:
        return None
    prev_t, prev_e, prev_p = prev
    if r.energy_uj is not None and prev_e is not None:
        delta, what = counter_delta(prev_e, r.energy_uj, r.range_uj)
        return delta / 1e6, what
    if r.power_uw is not None:
        p0 = prev_p if prev_p is not None else r.power_uw
        return (p0 + r.power_uw) / 2e6 * (t_us - prev_t) / 1e6, None
    return None


@dataclass(frozen=True, slots=True)
class EnergyPoint:
    """Cumulative energy since the meter's first sample, at ``t_us``."""

    t_us: int
    joules: dict[str, float]
    """Per source."""
    covered_us: int
    """Time with power data up to here (mean power = joules / covered time)."""

    @property
    def total(self) -> float:
        """The device's energy (:func:`device_total`)."""
        return device_total(self.joules)

    def minus(self, other: EnergyPoint) -> EnergyPoint:
        """The energy between ``other`` and this point (per source, never below 0)."""
        joules = {s: max(0.0, j - other.joules.get(s, 0.0)) for s, j in self.joules.items()}
        return EnergyPoint(self.t_us, joules, max(0, self.covered_us - other.covered_us))


@dataclass(slots=True)
class Probe:
    """The cumulative energy at ``t_us``: ``point`` is set once samples on both sides of the
    time are in (or :meth:`EnergyMeter.finish` settles it)."""

    t_us: int
    point: EnergyPoint | None = None


@dataclass(slots=True)
class EnergyMeter:
    """Cumulative energy per source over a stream of power records (see the module)."""

    wraps: int = 0
    """Counter wrap-arounds seen (RAPL's ``max_energy_range_uj``)."""
    resets: int = 0
    """Counters that went back without a range to wrap at (restarted)."""
    sources: set[str] = field(default_factory=set)
    """Sources that gave a figure that counts (a counter or a power reading)."""
    _prev: dict[tuple[str, str], tuple[int, int | None, int | None]] = field(default_factory=dict)
    _cum: dict[str, float] = field(default_factory=dict)
    _covered: int = 0
    _last_t: int | None = None
    _times: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _points: deque[EnergyPoint] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _pending: list[Probe] = field(default_factory=list)
    _nvml_records: bool = False

    @property
    def latest(self) -> EnergyPoint | None:
        return self._points[-1] if self._points else None

    def add(self, p: PowerSample) -> None:
        """Fold one power record. A reading no later than the same reading's last is ignored;
        records of one instant (from several samplers) make one point."""
        if not self._nvml_records and any(r.source == "nvml" for r in p.readings):
            self._nvml_records = True
        self._add(p)

    def _add(self, p: PowerSample) -> None:
        t = p.t_us
        counted = False
        for r in p.readings:
            if r.total and (r.energy_uj is not None or r.power_uw is not None):
                counted |= self._reading(r, t)
        if self._last_t is not None and t < self._last_t:
            return  # an older record (another sampler's, late): its energy is in from here on
        if self._last_t is not None and counted and t > self._last_t:
            self._covered += t - self._last_t
        point = EnergyPoint(t, dict(self._cum), self._covered)
        if self._last_t == t and self._points:
            self._points[-1] = point  # another sampler's record of the same instant
        else:
            self._times.append(t)
            self._points.append(point)
        self._last_t = t
        if self._pending:
            still = []
            for pr in self._pending:
                if pr.t_us < t:  # at t itself, another sampler's record may follow
                    pr.point = self._at(pr.t_us)
                else:
                    still.append(pr)
            self._pending = still

    def add_gpu(self, g: GpuSample) -> None:
        """A GPU sample's power, as the ``nvml`` reading ``gpu<index>``, for traces without
        NVML power records (format 1.2 and older, or a collector without the energy counter
        call): ignored once a power record of source ``nvml`` has been seen."""
        if self._nvml_records or g.power_mw is None or g.power_mw < 0:
            return
        r = PowerReading("nvml", f"gpu{g.index}", power_uw=g.power_mw * 1000)
        self._add(PowerSample((r,), t_us=g.t_us))

    def _reading(self, r: PowerReading, t: int) -> bool:
        """Add the reading's energy since its previous one; whether it had one to add from."""
        key = (r.source, r.name)
        prev = self._prev.get(key)
        if prev is not None and t <= prev[0]:
            return False
        self._prev[key] = (t, r.energy_uj, r.power_uw)
        self.sources.add(r.source)
        self._cum.setdefault(r.source, 0.0)
        got = reading_joules(prev, r, t)
        if got is None:
            return False
        joules, what = got
        if what == "wrap":
            self.wraps += 1
        elif what == "reset":
            self.resets += 1
        self._cum[r.source] += joules
        return True

    def probe(self, t_us: int) -> Probe:
        """The cumulative energy at ``t_us``, now if samples past it are in, else later."""
        pr = Probe(t_us)
        if self._last_t is not None and t_us <= self._last_t:
            pr.point = self._at(t_us)
        else:
            self._pending.append(pr)
        return pr

    def finish(self) -> None:
        """End of the stream: probes past the last sample take the last sample's energy."""
        for pr in self._pending:
            pr.point = self._at(pr.t_us)
        self._pending = []

    def _at(self, t_us: int) -> EnergyPoint | None:
        if not self._points:
            return None
        i = bisect.bisect_left(self._times, t_us)
        if i == 0:
            first = self._points[0]
            return EnergyPoint(t_us, first.joules, first.covered_us)
        if i >= len(self._points):
            last = self._points[-1]
            return EnergyPoint(t_us, last.joules, last.covered_us)
        a, b = self._points[i - 1], self._points[i]
        f = (t_us - a.t_us) / (b.t_us - a.t_us)
        joules = {
            s: a.joules.get(s, 0.0) + (j - a.joules.get(s, 0.0)) * f for s, j in b.joules.items()
        }
        return EnergyPoint(t_us, joules, a.covered_us + round((b.covered_us - a.covered_us) * f))
