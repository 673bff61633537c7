"""What coincides with a slowdown: throttling, frequency caps, trip points, GPU clock events,
memory pressure, swap, CPU contention; searched in the samples around it.

The one home of the causal wording: the collector's step-time detector names the cause of a slow
step with it, and every reader of a trace (``inspect``, ``rounds``, the TUI) names the cause of a
slow round or window with the same phrases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .records import GpuSample, ProcessSample, Record, SystemSample, ThermalSample
from .signals import (
    PASSIVE_COOLING,
    clock_event_reason_names,
    gpu_throttled,
    pi_throttled_flags,
)

__all__ = ["NO_SIGNAL", "MiB", "Signal", "coinciding_signals", "explain", "mib"]

MiB = 1 << 20

NO_SIGNAL = "no throttle, frequency, temperature or memory signal coincides"
"""What a slowdown with no coinciding signal is said with."""


def mib(n: float) -> str:
    """Bytes for people, in binary units: ``512 MiB``, ``1.5 GiB``."""
    return f"{n / (1 << 30):.1f} GiB" if abs(n) >= 1 << 30 else f"{n / MiB:.0f} MiB"


@dataclass(frozen=True)
class Signal:
    """Something that can explain a slowdown, with a phrase for the event's message."""

    kind: str
    text: str
    detail: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "text": self.text, **self.detail}


def _hottest(th: ThermalSample) -> float | None:
    temps = [z.temp_c for z in th.zones]
    return max(temps) if temps else None


def coinciding_signals(
    context: Sequence[Record], since_us: int, until_us: int, run: int = -1
) -> list[Signal]:
    """The throttle, frequency, temperature, GPU and memory signals seen in
    ``[since_us, until_us]``, compared with the last samples before ``since_us``.

    ``context`` holds samples (thermal, system, GPU, process) in time order; records of other
    kinds and of other runs' processes are ignored. Most telling signals come first.
    """
    before: dict[type, Record] = {}
    inside: list[Record] = []
    for r in context:
        if isinstance(r, ProcessSample) and r.run != run:
            continue
        if r.t_us < since_us:
            before[type(r)] = r
        elif r.t_us <= until_us:
            inside.append(r)
    thermal = [r for r in inside if isinstance(r, ThermalSample)]
    system = [r for r in inside if isinstance(r, SystemSample)]
    gpus = [r for r in inside if isinstance(r, GpuSample)]
    procs = [r for r in inside if isinstance(r, ProcessSample)]
    out: list[Signal] = []

    if thermal:
        last = thermal[-1]
        base = before.get(ThermalSample) or thermal[0]
        assert isinstance(base, ThermalSample)
        hot = max((t for t in (_hottest(th) for th in thermal) if t is not None), default=None)
        at = f" at {hot:.1f} °C" if hot is not None else ""
        rose = {
            k: v - base.throttle.get(k, 0)
            for k, v in last.throttle.items()
            if k.endswith("_count") and v > base.throttle.get(k, 0)
        }
        if rose:
            who = sorted({k.split(".")[0] for k in rose}, key=_natural)
            name = who[0] if len(who) == 1 else f"{who[0]} and {len(who) - 1} more"
            out.append(Signal("throttle_counter", f"{name} throttled{at}", {"rose": rose}))
        flags = sorted(
            {
                flag
                for th in thermal
                for flag in pi_throttled_flags(th.throttle.get("pi.throttled", 0))
                if not flag.endswith("_occurred")
            }
        )
        if flags:
            phrase = ", ".join(f.replace("_", " ") for f in flags)
            out.append(Signal("throttle_flag", f"Pi firmware: {phrase}{at}", {"flags": flags}))
        alarms = sorted(
            {
                k
                for th in thermal
                for k, v in th.throttle.items()
                if k.startswith("hwmon.") and k.endswith("_alarm") and v
            }
        )
        if alarms:
            out.append(Signal("hwmon_alarm", f"{alarms[0].removeprefix('hwmon.')} raised", {}))
        cooling = [
            c
            for th in thermal[-1:]
            for c in th.cooling
            if c.cur_state > 0 and c.name.startswith(PASSIVE_COOLING)
        ]
        if cooling:
            c = cooling[0]
            out.append(
                Signal(
                    "cooling",
                    f"{c.name} cooling at state {c.cur_state} of {c.max_state}",
                    {"device": c.name, "state": c.cur_state, "max_state": c.max_state},
                )
            )
        base_freq = {f.cpu: f.hw_khz or f.cur_khz for f in base.freqs}
        drops = []
        for f in last.freqs:
            now = f.hw_khz or f.cur_khz
            top = f.max_khz
            if not now or not top:
                continue
            was = base_freq.get(f.cpu) or top
            capped = f.scaling_max_khz is not None and f.scaling_max_khz < 0.9 * top
            if now < 0.85 * top and (now < 0.85 * was or capped):
                drops.append((now / top, f.cpu, now, top, was))
        if drops:
            _, cpu, now, top, was = min(drops)
            out.append(
                Signal(
                    "frequency",
                    f"cpu{cpu} at {now / 1000:.0f} MHz of {top / 1000:.0f} MHz",
                    {"cpu": cpu, "khz": now, "max_khz": top, "before_khz": was},
                )
            )
        trips = []
        for z in last.zones:
            for kind, trip_c, hyst_c in z.trips:
                if kind in ("passive", "hot", "critical") and z.temp_c >= trip_c - hyst_c:
                    trips.append((z.temp_c - trip_c, z.name, z.temp_c, kind, trip_c))
        if trips:
            _, zone, temp, kind, trip_c = max(trips)
            out.append(
                Signal(
                    "trip_point",
                    f"{zone} at {temp:.1f} °C ({kind} trip {trip_c:.1f} °C)",
                    {"zone": zone, "temp_c": temp, "trip": kind, "trip_c": trip_c},
                )
            )

    throttled_gpus: dict[int, set[str]] = {}
    for g in gpus:
        if gpu_throttled(g.clock_event_reasons):
            names = clock_event_reason_names(g.clock_event_reasons or 0)
            throttled_gpus.setdefault(g.index, set()).update(n for n in names if n != "gpu_idle")
    for index, reasons in sorted(throttled_gpus.items()):
        phrase = ", ".join(sorted(reasons))
        out.append(
            Signal(
                "gpu_throttle", f"GPU {index} {phrase}", {"gpu": index, "reasons": sorted(reasons)}
            )
        )

    if system:
        pressure = max(
            max(s.psi.get("memory.some.avg10", 0.0), s.psi.get("memory.some.now", 0.0))
            for s in system
        )
        if pressure >= 10.0:
            out.append(
                Signal(
                    "memory_pressure",
                    f"memory pressure {pressure:.0f}% (PSI)",
                    {"memory_some_pct": pressure},
                )
            )
        base_sys = before.get(SystemSample) or system[0]
        assert isinstance(base_sys, SystemSample)
        grew = (system[-1].swap_used or 0) - (base_sys.swap_used or 0)
        if grew >= 32 * MiB:
            out.append(Signal("swap", f"swap grew {mib(grew)}", {"swap_grew": grew}))
        contention = max(
            max(s.psi.get("cpu.some.avg10", 0.0), s.psi.get("cpu.some.now", 0.0)) for s in system
        )
        if contention >= 20.0:
            out.append(
                Signal(
                    "cpu_contention",
                    f"CPU contention {contention:.0f}% (PSI)",
                    {"cpu_some_pct": contention},
                )
            )
    for p in procs[-1:]:
        if p.cgroup_current and p.cgroup_limit and p.cgroup_current >= 0.95 * p.cgroup_limit:
            share = p.cgroup_current / p.cgroup_limit
            out.append(
                Signal(
                    "cgroup_limit",
                    f"the run's cgroup at {share:.0%} of its {mib(p.cgroup_limit)} limit",
                    {"current": p.cgroup_current, "limit": p.cgroup_limit},
                )
            )
    return out


def explain(head: str, signals: Sequence[Signal]) -> str:
    """A slowdown and its cause in one sentence: ``HEAD while S1, S2`` (the two most telling
    signals), or ``HEAD; no throttle, ... signal coincides``."""
    if signals:
        return f"{head} while " + ", ".join(s.text for s in signals[:2])
    return f"{head}; {NO_SIGNAL}"


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1
