"""What a device row shows, folded from the head of its collector's stream (pure, no I/O).

Throttle signals are named as :mod:`edgescope_tracing.signals` names them, with the source in
front: ``gpu sw_power_cap``, ``pi under_voltage``, ``cpu thermal throttle`` (x86 counters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgescope_tracing import (
    GpuSample,
    Keyframe,
    Record,
    RunEnd,
    RunStart,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.signals import (
    GPU_THROTTLE_MASK,
    PI_THROTTLED_NOW_MASK,
    clock_event_reason_names,
    pi_throttled_flags,
)

__all__ = ["DeviceFacts"]


@dataclass
class DeviceFacts:
    """Runs, hottest temperature, memory and throttle signals at the head of a stream."""

    runs: dict[int, str] = field(default_factory=dict)
    temp_c: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    throttled: tuple[str, ...] = ()
    samples: int = 0
    """System, thermal and GPU samples seen: 0 means the figures are not known yet."""
    _counters: dict[str, int] = field(default_factory=dict)
    _zone_temp: float | None = None
    _gpu_temp: dict[int, float] = field(default_factory=dict)
    _gpu_throttle: dict[int, tuple[str, ...]] = field(default_factory=dict)
    _cpu_throttle: tuple[str, ...] = ()

    def add(self, rec: Record) -> None:
        if isinstance(rec, Keyframe):
            self.runs = {r.run: r.name for r in rec.runs}
        elif isinstance(rec, RunStart):
            self.runs[rec.run] = rec.name
        elif isinstance(rec, RunEnd):
            self.runs.pop(rec.run, None)
        elif isinstance(rec, SystemSample):
            self.samples += 1
            if rec.mem_total is not None:
                self.mem_used, self.mem_total = rec.mem_used, rec.mem_total
        elif isinstance(rec, ThermalSample):
            self.samples += 1
            temps = [z.temp_c for z in rec.zones]
            self._zone_temp = max(temps) if temps else None
            self._cpu_throttle = self._thermal_throttle(rec.throttle)
        elif isinstance(rec, GpuSample):
            self.samples += 1
            if rec.temp_c is not None:
                self._gpu_temp[rec.index] = rec.temp_c
            mask = (rec.clock_event_reasons or 0) & GPU_THROTTLE_MASK
            self._gpu_throttle[rec.index] = tuple(
                f"gpu {name}" for name in clock_event_reason_names(mask)
            )
        else:
            return
        temps = [t for t in (self._zone_temp, *self._gpu_temp.values()) if t is not None]
        self.temp_c = max(temps) if temps else None
        names: list[str] = list(self._cpu_throttle)
        for reasons in self._gpu_throttle.values():
            names.extend(r for r in reasons if r not in names)
        self.throttled = tuple(names)

    def _thermal_throttle(self, throttle: dict[str, int]) -> tuple[str, ...]:
        out: list[str] = []
        pi = throttle.get("pi.throttled")
        if pi is not None:
            out.extend(f"pi {name}" for name in pi_throttled_flags(pi & PI_THROTTLED_NOW_MASK))
        rising = False
        for key, value in throttle.items():
            if key.endswith("_throttle_count"):
                before = self._counters.get(key)
                self._counters[key] = value
                if before is not None and value > before:
                    rising = True
        if rising:
            out.append("cpu thermal throttle")
        return tuple(out)
