"""What coincides with a slowdown: the run's cgroup CPU quota and memory.high, throttling,
frequency caps, trip points, GPU clock events, memory pressure, swap, CPU contention; searched
in the samples around it.

The one home of the causal wording: the collector's step-time detector names the cause of a slow
step with it, and every reader of a trace (``inspect``, ``rounds``, the TUI) names the cause of a
slow round or window with the same phrases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .energy import BoardPowerCap, board_power_cap
from .records import (
    GpuSample,
    PowerSample,
    ProcessSample,
    Record,
    SystemSample,
    ThermalSample,
)
from .signals import (
    PASSIVE_COOLING,
    clock_event_reason_names,
    gpu_throttled,
    pi_throttled_flags,
)
from .thresholds import (
    CGROUP_NEAR_LIMIT,
    CLOCK_LOW_SHARE,
    TRIP_KINDS,
    scaling_capped,
    trip_reached,
)

__all__ = [
    "CAUSE_SAMPLES",
    "NO_SIGNAL",
    "MiB",
    "Signal",
    "coinciding_signals",
    "cpu_quota_text",
    "explain",
    "memory_limit_file",
    "mib",
    "oom_kill_cause",
    "power_cap_text",
]

MiB = 1 << 20

CAUSE_SAMPLES = (ThermalSample, SystemSample, GpuSample, ProcessSample, PowerSample)
"""The record kinds :func:`coinciding_signals` reads: what a reader keeps around a slow window."""

NO_SIGNAL = "no throttle, frequency, temperature or memory signal coincides"
"""What a slowdown with no coinciding signal is said with."""

QUOTA_SHARE = 0.2
"""A slowdown is put down to the CPU quota when the run's cgroup was throttled in at least this
share of its enforcement periods meanwhile: a fifth of the periods cut short is a fifth of the
time the run could not run at all, more than the noise of a shared board."""
QUOTA_MIN_PERIODS = 5
"""Periods that must have passed (half a second at the default 100 ms) for a share to mean
anything."""


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


def power_cap_text(cap: BoardPowerCap) -> str:
    """``package-0 at 15.0 W of its 15 W limit (RAPL), cpu0 at 1200 MHz of 4700 MHz``."""
    return (
        f"{cap.reading} at {cap.power_uw / 1e6:.1f} W of its {cap.limit_uw / 1e6:.3g} W limit "
        f"(RAPL), cpu{cap.cpu} at {cap.khz / 1000:.0f} MHz of {cap.max_khz / 1000:.0f} MHz"
    )


def cpu_quota_text(quota_us: int, period_us: int, version: int | None) -> str:
    """A CPU quota in words, with the file it comes from: ``cpu.max 1 CPU``,
    ``cpu.cfs_quota_us 0.5 CPU``, ``cpu.max 2 CPUs``."""
    cpus = quota_us / period_us if period_us > 0 else 0.0
    n = f"{cpus:.0f}" if abs(cpus - round(cpus)) < 0.005 else f"{cpus:.2g}"
    file = "cpu.cfs_quota_us" if version == 1 else "cpu.max"
    return f"{file} {n} CPU{'s' if cpus >= 1.5 else ''}"


def memory_limit_file(version: int | None) -> str:
    """The file that holds a cgroup's hard memory limit: ``memory.max`` (v2),
    ``memory.limit_in_bytes`` (v1), ``memory limit`` where the trace does not say (before 1.3)."""
    return {1: "memory.limit_in_bytes", 2: "memory.max"}.get(version or 0, "memory limit")


def oom_kill_cause(
    limit: int | None, version: int | None, *, likely: bool = False, survived: bool = False
) -> str:
    """Why a run ended when the kernel's OOM killer ended it (``RunEnd.cause``): ``killed by the
    kernel OOM killer: cgroup memory.max 512 MiB reached``. ``likely``: no OOM-kill counter
    said so (an old kernel's v1 cgroup), only a SIGKILL at the limit. ``survived``: the run's
    first process was not the one killed, and ended (failed) after a process of the run was."""
    if survived:
        head = "failed after the kernel OOM killer killed a process of the run"
    elif likely:
        head = "most likely killed by the kernel OOM killer"
    else:
        head = "killed by the kernel OOM killer"
    if limit is None:
        return head
    return f"{head}: cgroup {memory_limit_file(version)} {mib(limit)} reached"


def _cgroup_signals(procs: list[ProcessSample], base: ProcessSample | None) -> list[Signal]:
    """CPU-quota throttling and memory.high reclaim of the run's cgroup over the window: the
    rise of its counters from the last sample before (else the first inside) to the last."""
    out: list[Signal] = []
    with_cpu = [p for p in procs if p.cpu_periods is not None and p.cpu_throttled is not None]
    if with_cpu:
        last = with_cpu[-1]
        b = base if base is not None and base.cgroup == last.cgroup else None
        if b is None or b.cpu_periods is None or b.cpu_throttled is None:
            b = with_cpu[0]
        assert b.cpu_periods is not None and b.cpu_throttled is not None
        assert last.cpu_periods is not None and last.cpu_throttled is not None
        periods = last.cpu_periods - b.cpu_periods
        throttled = last.cpu_throttled - b.cpu_throttled
        if periods >= QUOTA_MIN_PERIODS and throttled > 0 and throttled / periods >= QUOTA_SHARE:
            share = throttled / periods
            quota = ""
            if last.cpu_quota_us is not None and last.cpu_period_us:
                words = cpu_quota_text(last.cpu_quota_us, last.cpu_period_us, last.cgroup_version)
                quota = f" ({words})"
            waited = None
            if last.cpu_throttled_us is not None and b.cpu_throttled_us is not None:
                waited = last.cpu_throttled_us - b.cpu_throttled_us
            out.append(
                Signal(
                    "cpu_quota",
                    f"the run's cgroup was CPU-throttled {share:.0%} of periods{quota}",
                    {
                        "share": round(share, 3),
                        "periods": periods,
                        "throttled": throttled,
                        "throttled_us": waited,
                        "quota_us": last.cpu_quota_us,
                        "period_us": last.cpu_period_us,
                        "cgroup": last.cgroup,
                    },
                )
            )
    with_high = [p for p in procs if p.memory_high_events is not None]
    if with_high:
        last = with_high[-1]
        b = base if base is not None and base.memory_high_events is not None else with_high[0]
        assert b.memory_high_events is not None and last.memory_high_events is not None
        rose = last.memory_high_events - b.memory_high_events
        if rose > 0:
            high = f" {mib(last.memory_high)}" if last.memory_high is not None else ""
            out.append(
                Signal(
                    "memory_high",
                    f"the run's cgroup over its memory.high{high}, reclaim-throttled {rose} "
                    f"time{'s' if rose > 1 else ''}",
                    {"high_events": rose, "memory_high": last.memory_high},
                )
            )
    return out


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
    power = [r for r in inside if isinstance(r, PowerSample)]
    base_proc = before.get(ProcessSample)
    # The run's own cgroup first: a quota that throttles it is the cause, whatever else shows.
    out: list[Signal] = _cgroup_signals(
        procs, base_proc if isinstance(base_proc, ProcessSample) else None
    )

    cap = _power_cap(power, thermal)
    if cap is not None:
        out.append(
            Signal(
                "power_cap",
                f"power-capped: {power_cap_text(cap)}",
                {"reading": cap.reading, "power_uw": cap.power_uw, "limit_uw": cap.limit_uw},
            )
        )

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
            low = CLOCK_LOW_SHARE
            if now < low * top and (now < low * was or scaling_capped(f)):
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
                if kind in TRIP_KINDS and trip_reached(z.temp_c, trip_c, hyst_c):
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
        if (
            p.cgroup_current
            and p.cgroup_limit
            and p.cgroup_current >= CGROUP_NEAR_LIMIT * p.cgroup_limit
        ):
            share = p.cgroup_current / p.cgroup_limit
            out.append(
                Signal(
                    "cgroup_limit",
                    f"the run's cgroup at {share:.0%} of its {mib(p.cgroup_limit)} limit",
                    {"current": p.cgroup_current, "limit": p.cgroup_limit},
                )
            )
    if cap is not None:  # the power cap already names the CPU's frequency
        out = [s for s in out if s.kind != "frequency"]
    return out


def _power_cap(power: list[PowerSample], thermal: list[ThermalSample]) -> BoardPowerCap | None:
    """The board's power cap at a power sample and the thermal sample of the same instant."""
    by_time = {th.t_us: th for th in thermal}
    for p in reversed(power):
        th = by_time.get(p.t_us)
        cap = board_power_cap(p, th) if th is not None else None
        if cap is not None:
            return cap
    return None


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
