"""What the views show: ``RunState``, a pure fold of records.

``fold(state, item) -> state`` takes a record or a source :class:`Status` and returns a new
frozen state; the old one stays valid (series and logs share append-only storage, see
:mod:`edgescope_tui.series`). Many records at a time go through a :class:`StateBuilder`, a
draft that is frozen once (when the view redraws) rather than once per record. Widgets render
a state and a cursor time; nothing here knows of Textual, files or sockets, so all of it is
tested without an App.

What is derived on the way:

- step time: from a logged ``step_time``/``step_ns``-style metric when there is one, else from
  the time between consecutive steps of the run's first metric; throughput is its inverse.
- throttled periods as spans: NVML clock-event reasons that slow the GPU (power cap, thermal,
  hardware slowdown, power brake, board limit, reliability), a Raspberry Pi's current
  throttled flags, x86 ``*throttle_count`` counters that went up since the previous sample,
  or a board's RAPL power limit holding its CPU clocks down (``board``, ``power_cap``).
  Reasons and flags are named as :mod:`edgescope_tracing.signals` names them (``sw_power_cap``,
  ``under_voltage``), the names the collector's anomaly messages use.
- power and energy: watts per source (:func:`edgescope_tracing.energy.source_power_w`) and
  the device's cumulative energy in joules, from power records (or, in traces without NVML
  power records, from the GPU samples' power), by the rules of :mod:`edgescope_tracing.energy`;
  :meth:`RunState.joules_per_step` is a run's energy per step so far.
- gaps: a jump in sequence numbers (records lost or no longer retained) or damage a source
  reported, placed in time between the records around it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from edgescope_tracing import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    PowerReading,
    PowerSample,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.energy import (
    board_power_cap,
    device_total,
    reading_joules,
    source_power_w,
)
from edgescope_tracing.signals import (
    GPU_THROTTLE_MASK,
    PI_THROTTLED_NOW_MASK,
    clock_event_reason_names,
    derive_step_times,
    pi_throttled_flags,
    step_time_unit,
)
from edgescope_tracing.thresholds import TRIP_KINDS

from .series import Log, Series
from .sources.base import Status

__all__ = [
    "RunInfo",
    "Gap",
    "Span",
    "GpuState",
    "ProcState",
    "PidState",
    "log_at",
    "StackWindow",
    "StackNode",
    "RunState",
    "SystemState",
    "ThermalState",
    "PowerState",
    "StackState",
    "StreamState",
    "StateBuilder",
    "fold",
    "fold_all",
    "stack_tree",
    "top_functions",
]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as its start (or a keyframe's restatement) and end described it."""

    run: int
    run_id: str
    name: str
    host: str
    pid: int
    start_us: int
    end_us: int | None = None
    exit_code: int | None = None
    dropped: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    device: Mapping[str, Any] = field(default_factory=dict)
    cause: str | None = None
    """Why the run ended, where its run end says (the OOM killer)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records known to be missing, or bytes that could not be read, at about ``t_us``."""

    t_us: int
    reason: str
    first_seq: int | None = None
    last_seq: int | None = None
    end_us: int | None = None
    """When the records after the gap resume (None until they do)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A throttled period of one signal source (``gpu0``, ``cpu``, ``pi``)."""

    source: str
    start_us: int
    end_us: int
    reasons: tuple[str, ...]
    open: bool = False
    """Still throttled at the last sample."""


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU's history."""

    index: int
    name: str
    temp_c: Series = field(default_factory=Series.empty)
    power_w: Series = field(default_factory=Series.empty)
    sm_clock_mhz: Series = field(default_factory=Series.empty)
    mem_clock_mhz: Series = field(default_factory=Series.empty)
    util_gpu: Series = field(default_factory=Series.empty)
    mem_used: Series = field(default_factory=Series.empty)
    power_limit_w: float | None = None
    max_sm_clock_mhz: int | None = None
    mem_total: int | None = None
    reasons: tuple[str, ...] = ()
    """Clock-event reasons at the last sample, by name."""


@dataclass(frozen=True, slots=True)
class ProcState:
    """A run's process memory: its main process's RSS over time and peak (VmHWM; each
    child's are in ``RunState.procs``), the cgroup's figures."""

    rss: Series = field(default_factory=Series.empty)
    rss_peak: int | None = None
    cgroup: Series = field(default_factory=Series.empty)
    cgroup_peak: int | None = None
    cgroup_limit: int | None = None
    oom_kills: int | None = None
    cpu_percent: float | None = None
    main_pid: int | None = None
    """The process whose RSS ``rss`` is: the first of the run's that was sampled."""
    cgroup_path: str | None = None
    """The run's cgroup, as its process samples name it (format 1.3): its container."""
    gpu_mem: Mapping[int, Series] = field(default_factory=dict)
    """Per GPU index: the GPU memory the run's processes use there (bytes, summed over them),
    from gpu records' ``processes`` (format 1.1; NVML only)."""


@dataclass(frozen=True, slots=True)
class PidState:
    """One process of a run over time, from its process samples: what a process table shows at
    the cursor. Figures that change every sample are series (x and t: the time); those that
    seldom change are logs of ``(t_us, value)`` with an entry only when the value changed."""

    run: int
    pid: int
    ppid: int | None = None
    command: str | None = None
    seen: Log[int] = field(default_factory=Log.empty)
    """When it was sampled (µs), in order."""
    cpu: Series = field(default_factory=Series.empty)
    """CPU % (100 = one core)."""
    rss: Series = field(default_factory=Series.empty)
    rss_peak: Log[tuple[int, int]] = field(default_factory=Log.empty)
    threads: Log[tuple[int, int]] = field(default_factory=Log.empty)
    states: Log[tuple[int, str]] = field(default_factory=Log.empty)
    """The kernel's state letter."""
    gpu_mem: Mapping[int, Series] = field(default_factory=dict)
    """Per GPU index: the GPU memory it uses there (bytes), where the driver says."""

    def series(self) -> list[Series]:
        return [self.cpu, self.rss, *self.gpu_mem.values()]

    def seen_until(self, t_us: int | None) -> int:
        """How many samples were taken at or before ``t_us`` (all for None)."""
        if t_us is None:
            return self.seen.n
        return bisect_right(self.seen.items, t_us, 0, self.seen.n)


_LT = TypeVar("_LT")


def log_at(log: Log[tuple[int, _LT]], t_us: int | None) -> _LT | None:
    """The value of a change log in force at ``t_us`` (the newest for None)."""
    n = log.n
    if t_us is not None:
        n = bisect_right(log.items, (t_us, _MAX), 0, n)
    return log.items[n - 1][1] if n else None


class _Max:
    """Greater than any value: ``(t, _MAX)`` sorts after every ``(t, value)``."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True


_MAX: Any = _Max()


def _log_from(log: Log[tuple[int, _LT]], t_us: float) -> Log[tuple[int, _LT]]:
    """The entries from the one in force at ``t_us`` on (history before it let go)."""
    items = log.view()
    i = max(0, bisect_right([t for t, _ in items], t_us) - 1)
    kept = items[i:]
    return Log(kept, len(kept))


@dataclass(frozen=True, slots=True)
class StackWindow:
    """One batch of stack samples."""

    t_us: int
    run: int
    backend: str
    period_us: int
    samples: tuple[tuple[tuple[StackFrame, ...], int], ...]


@dataclass(frozen=True, slots=True)
class StackNode:
    """A node of the merged stack tree: a function, its inclusive count, its callees."""

    name: str
    count: int
    children: tuple[StackNode, ...] = ()


@dataclass(frozen=True, slots=True)
class SystemState:
    """The device as a whole: memory and CPU over time."""

    mem_used: Series = field(default_factory=Series.empty)
    mem_total: int | None = None
    cpu_percent: Series = field(default_factory=Series.empty)


@dataclass(frozen=True, slots=True)
class ThermalState:
    """Heat and what it does: zone temperatures, CPU frequency, throttled periods."""

    zones: Mapping[str, Series] = field(default_factory=dict)
    """Thermal zone temperatures (°C) over time."""
    zone_trips: Mapping[str, float] = field(default_factory=dict)
    """The lowest passive/hot/critical trip point of each zone."""
    cpu_mhz: Series = field(default_factory=Series.empty)
    """Mean current CPU frequency."""
    cpu_max_mhz: float | None = None
    throttle: Log[Span] = field(default_factory=Log.empty)
    """Closed throttled periods, in order of their end."""
    throttle_open: Mapping[str, Span] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    """Last throttle counters and flags as sampled."""
    zone_hyst: Mapping[str, float] = field(default_factory=dict)
    """The hysteresis of each zone's trip in ``zone_trips``."""


@dataclass(frozen=True, slots=True)
class PowerState:
    """Power per source and the device's energy over time (see the module)."""

    sources: Mapping[str, Series] = field(default_factory=dict)
    """Watts per source (``rapl``, ``ina3221``, ``nvml``, ...) over time."""
    limits: Mapping[str, float] = field(default_factory=dict)
    """Power limits in watts by reading (``rapl package-0``), as last sampled."""
    energy_j: Series = field(default_factory=Series.empty)
    """The device's cumulative energy (J) since the first power figure, over time."""
    joules: Mapping[str, float] = field(default_factory=dict)
    """Cumulative joules per source, now."""
    last: Mapping[tuple[str, str], tuple[int, int | None, int | None]] = field(default_factory=dict)
    """Each reading's last ``(t_us, energy_uj, power_uw)``, to add the next one from."""
    nvml_records: bool = False
    """Power records of NVML came: GPU samples' power no longer counts for energy."""
    instant: tuple[int, PowerSample | None, ThermalSample | None] = (0, None, None)
    """The power and thermal records of the latest instant, to tell whether a power limit
    held the CPU clocks down then (a ``board`` throttled period)."""


@dataclass(frozen=True, slots=True)
class StackState:
    """Stack samples: the windows in time order, and counts over the whole trace."""

    windows: Log[StackWindow] = field(default_factory=Log.empty)
    total: int = 0
    self_counts: Mapping[str, int] = field(default_factory=dict)
    """Samples per function as the innermost frame, over the whole trace."""


@dataclass(frozen=True, slots=True)
class StreamState:
    """The stream of records itself: how much came, over what time, what is missing."""

    records: int = 0
    first_us: int | None = None
    last_us: int | None = None
    last_seq: int | None = None
    gaps: Log[Gap] = field(default_factory=Log.empty)
    status: Status | None = None
    """The source's last word on itself (live, disconnected, ended...)."""
    trimmed_us: int | None = None
    """History before this time was let go to bound memory (a long live session)."""
    live_from_event: int | None = None
    """How many events had been folded when the source last said it was live: the events
    after them arrived live (the alerts' line between history and news); None: never live."""


@dataclass(frozen=True, slots=True)
class RunState:
    """Everything folded so far, grouped by concern. Keyed by run number where it belongs to a
    run."""

    runs: Mapping[int, RunInfo] = field(default_factory=dict)
    metrics: Mapping[tuple[int, str], Series] = field(default_factory=dict)
    """Per (run, metric key): x is the step, t the time in µs."""
    step_time: Mapping[int, Series] = field(default_factory=dict)
    """Per run, seconds per step (x is the step), derived from step timestamps; under
    ``-1 - run``, the same from a logged step-time metric."""
    step_clock: Mapping[int, tuple[str, float, float]] = field(default_factory=dict)
    """Per run: the metric that times steps, and its last (step, time)."""
    proc: Mapping[int, ProcState] = field(default_factory=dict)
    pid_runs: Mapping[int, int] = field(default_factory=dict)
    """The run of each pid seen: a run's own pid and those of its process samples."""
    procs: Mapping[tuple[int, int], PidState] = field(default_factory=dict)
    """Per (run, pid): that process's history, for the process table."""
    gpus: Mapping[int, GpuState] = field(default_factory=dict)
    system: SystemState = field(default_factory=SystemState)
    thermal: ThermalState = field(default_factory=ThermalState)
    power: PowerState = field(default_factory=PowerState)
    stacks: StackState = field(default_factory=StackState)
    events: Log[Event] = field(default_factory=Log.empty)
    stream: StreamState = field(default_factory=StreamState)

    # --- questions the views ask -------------------------------------------------------------

    def metric_keys(self, run: int | None = None) -> list[str]:
        """Metric keys, loss-like keys first, then in order of appearance."""
        keys: list[str] = []
        for r, k in self.metrics:
            if (run is None or r == run) and k not in keys:
                keys.append(k)
        return sorted(keys, key=lambda k: (0 if "loss" in k.lower() else 1, keys.index(k)))

    def step_seconds(self, run: int) -> Series | None:
        """Seconds per step for ``run``: the logged metric when there is one, else derived."""
        return self.step_time.get(-1 - run) or self.step_time.get(run)

    def joules_per_step(self, run: int, until: int | None = None) -> float | None:
        """The device's energy per step of ``run`` from its start to ``until`` (µs; the last
        sample for None) or its end, over its steps so far; None without energy or steps."""
        info = self.runs.get(run)
        st = self.step_seconds(run)
        e = self.power.energy_j
        if info is None or st is None or len(e) < 2:
            return None
        if info.end_us is not None and (until is None or until > info.end_us):
            until = info.end_us
        n = st.count_until(until)
        k = e.count_until(until)
        if n == 0 or k < 2 or e.t[k - 1] <= info.start_us:
            return None
        steps = st.x[n - 1] - st.x[0] + 1
        t1 = e.t[k - 1] if until is None else float(until)
        joules = _energy_at(e, t1) - _energy_at(e, float(info.start_us))
        return joules / steps if steps > 0 and joules > 0 else None

    def spans(self, until: int | None = None) -> list[Span]:
        """Throttled periods up to ``until`` (µs), open ones ending at the last sample."""
        th = self.thermal
        out = [s for s in th.throttle.view() if until is None or s.start_us <= until]
        out += [s for s in th.throttle_open.values() if until is None or s.start_us <= until]
        if until is not None:
            out = [replace(s, end_us=min(s.end_us, until)) for s in out]
        return sorted(out, key=lambda s: s.start_us)

    def events_until(self, until: int | None = None) -> list[Event]:
        evs = self.events.view()
        if until is None:
            return evs
        return evs[: bisect_right([e.t_us for e in evs], until)]

    def stack_windows(self, t0: int | None = None, t1: int | None = None) -> list[StackWindow]:
        wins = self.stacks.windows.view()
        times = [w.t_us for w in wins]
        i = 0 if t0 is None else bisect_left(times, t0)
        j = len(wins) if t1 is None else bisect_right(times, t1)
        return wins[i:j]


def _energy_at(e: Series, t: float) -> float:
    """The cumulative energy at ``t``, linear between samples (the first or last beyond)."""
    i = bisect_left(e.t, t, 0, e.n)
    if i == 0:
        return e.y[0]
    if i >= e.n:
        return e.y[e.n - 1]
    t0, t1 = e.t[i - 1], e.t[i]
    return e.y[i - 1] + (e.y[i] - e.y[i - 1]) * (t - t0) / (t1 - t0)


def _span_t(rec: Record) -> tuple[int, int]:
    if isinstance(rec, Metrics) and rec.times_us:
        return min(rec.t_us or rec.times_us[0], rec.times_us[0]), rec.times_us[-1]
    return rec.t_us, rec.t_us


def _run_info(r: RunStart, old: RunInfo | None) -> RunInfo:
    if old is not None and old.run_id == r.run_id:
        return old
    return RunInfo(r.run, r.run_id, r.name, r.host, r.pid, r.t_us, config=r.config, device=r.device)


_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")


def _evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for the frozen slotted classes here, at a fraction of its cost."""
    cls = type(obj)
    new = object.__new__(cls)
    for name in cls.__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, changes[name] if name in changes else getattr(obj, name))
    return new


class _Cow(Generic[_K, _V]):
    """A mapping of a frozen state, copied the first time it is written after a freeze."""

    __slots__ = ("_m", "_owned")

    def __init__(self, m: Mapping[_K, _V]) -> None:
        self._m = m
        self._owned = False

    def get(self, key: _K) -> _V | None:
        return self._m.get(key)

    def view(self) -> Mapping[_K, _V]:
        """For reading only."""
        return self._m

    def w(self) -> dict[_K, _V]:
        """For writing: a copy of its own once per freeze."""
        if not self._owned:
            self._m = dict(self._m)
            self._owned = True
        assert isinstance(self._m, dict)
        return self._m

    def freeze(self) -> Mapping[_K, _V]:
        """What a frozen state holds; the next write copies again."""
        self._owned = False
        return self._m


class StateBuilder:
    """A draft of a :class:`RunState` that records are applied to in place.

    :meth:`freeze` returns a new frozen state and leaves the base state untouched: the draft
    copies a mapping the first time it changes it after a freeze, and series and logs are
    append-only and shared. Folding many records through one draft costs one ``RunState`` per
    freeze instead of one per record: a live feed freezes only when it redraws. The draft has a
    typed attribute for each field of the state's groups.
    """

    def __init__(self, base: RunState | None = None) -> None:
        base = base if base is not None else RunState()
        self.runs = _Cow(base.runs)
        self.metrics = _Cow(base.metrics)
        self.step_time = _Cow(base.step_time)
        self.step_clock = _Cow(base.step_clock)
        self.proc = _Cow(base.proc)
        self.pid_runs = _Cow(base.pid_runs)
        self.procs = _Cow(base.procs)
        self.gpus = _Cow(base.gpus)
        sy, th, st, sm = base.system, base.thermal, base.stacks, base.stream
        self.mem_used: Series = sy.mem_used
        self.mem_total: int | None = sy.mem_total
        self.cpu_percent: Series = sy.cpu_percent
        self.zones = _Cow(th.zones)
        self.zone_trips = _Cow(th.zone_trips)
        self.cpu_mhz: Series = th.cpu_mhz
        self.cpu_max_mhz: float | None = th.cpu_max_mhz
        self.throttle: Log[Span] = th.throttle
        self.throttle_open = _Cow(th.throttle_open)
        self.counters = _Cow(th.counters)
        pw = base.power
        self.power_sources = _Cow(pw.sources)
        self.power_limits = _Cow(pw.limits)
        self.energy_j: Series = pw.energy_j
        self.joules = _Cow(pw.joules)
        self.power_last = _Cow(pw.last)
        self.nvml_records: bool = pw.nvml_records
        self.power_instant = pw.instant
        self.zone_hyst = _Cow(th.zone_hyst)
        self.windows: Log[StackWindow] = st.windows
        self.stack_total: int = st.total
        self.self_counts = _Cow(st.self_counts)
        self.events: Log[Event] = base.events
        self.records: int = sm.records
        self.first_us: int | None = sm.first_us
        self.last_us: int | None = sm.last_us
        self.last_seq: int | None = sm.last_seq
        self.gaps: Log[Gap] = sm.gaps
        self.status: Status | None = sm.status
        self.trimmed_us: int | None = sm.trimmed_us
        self.live_from_event: int | None = sm.live_from_event
        self._frozen: RunState | None = base
        self._points = sum(s.n for s in self._all_series())

    @property
    def points(self) -> int:
        """About how many values are held: the points of the series of the state it started
        from (or was trimmed to), then each metric value and each other record as it comes."""
        return self._points

    def freeze(self) -> RunState:
        """The state as it stands, frozen (the same object until something is applied)."""
        if self._frozen is None:
            self._frozen = RunState(
                runs=self.runs.freeze(),
                metrics=self.metrics.freeze(),
                step_time=self.step_time.freeze(),
                step_clock=self.step_clock.freeze(),
                proc=self.proc.freeze(),
                pid_runs=self.pid_runs.freeze(),
                procs=self.procs.freeze(),
                gpus=self.gpus.freeze(),
                system=SystemState(self.mem_used, self.mem_total, self.cpu_percent),
                thermal=ThermalState(
                    self.zones.freeze(),
                    self.zone_trips.freeze(),
                    self.cpu_mhz,
                    self.cpu_max_mhz,
                    self.throttle,
                    self.throttle_open.freeze(),
                    self.counters.freeze(),
                    self.zone_hyst.freeze(),
                ),
                power=PowerState(
                    self.power_sources.freeze(),
                    self.power_limits.freeze(),
                    self.energy_j,
                    self.joules.freeze(),
                    self.power_last.freeze(),
                    self.nvml_records,
                    self.power_instant,
                ),
                stacks=StackState(self.windows, self.stack_total, self.self_counts.freeze()),
                events=self.events,
                stream=StreamState(
                    self.records,
                    self.first_us,
                    self.last_us,
                    self.last_seq,
                    self.gaps,
                    self.status,
                    self.trimmed_us,
                    self.live_from_event,
                ),
            )
        return self._frozen

    def trim(self, keep: float = 0.5) -> None:
        """Keep the newest ``keep`` share of every series and of the stack windows.

        For a long live session: memory stays bounded, and ``trimmed_us`` says from when
        history is still there. Events, gaps and throttled periods are kept whole (they are
        few).
        """
        self._frozen = None
        kept: list[float] = []

        def cut(s: Series) -> Series:
            t = s.tail(int(s.n * keep))
            if t.n:
                kept.append(t.t[0])
            return t

        metrics, step_time, zones = self.metrics.w(), self.step_time.w(), self.zones.w()
        for mk, ms in metrics.items():
            metrics[mk] = cut(ms)
        for sk, ss in step_time.items():
            step_time[sk] = cut(ss)
        for zk, zs in zones.items():
            zones[zk] = cut(zs)
        self.mem_used = cut(self.mem_used)
        self.cpu_percent = cut(self.cpu_percent)
        self.energy_j = cut(self.energy_j)
        sources = self.power_sources.w()
        for wk, ws in sources.items():
            sources[wk] = cut(ws)
        self.cpu_mhz = cut(self.cpu_mhz)
        proc = self.proc.w()
        for k, p in proc.items():
            gpu_mem = {i: cut(g) for i, g in p.gpu_mem.items()}
            proc[k] = _evolve(p, rss=cut(p.rss), cgroup=cut(p.cgroup), gpu_mem=gpu_mem)
        procs = self.procs.w()
        for pk, ps in list(procs.items()):
            times = ps.seen.view()
            times = times[len(times) - int(len(times) * keep) :]
            if not times:  # nothing of it left in the kept history
                del procs[pk]
                continue
            first = times[0]
            # the values in force at the first kept sample, and every change after it
            procs[pk] = _evolve(
                ps,
                seen=Log(times, len(times)),
                cpu=cut(ps.cpu),
                rss=cut(ps.rss),
                rss_peak=_log_from(ps.rss_peak, first),
                threads=_log_from(ps.threads, first),
                states=_log_from(ps.states, first),
                gpu_mem={i: cut(g) for i, g in ps.gpu_mem.items()},
            )
        gpus = self.gpus.w()
        for k, g in gpus.items():
            series = ("temp_c", "power_w", "sm_clock_mhz", "mem_clock_mhz", "util_gpu", "mem_used")
            gpus[k] = _evolve(g, **{n: cut(getattr(g, n)) for n in series})
        windows = self.windows.view()[len(self.windows) - int(len(self.windows) * keep) :]
        self.windows = Log(windows, len(windows))
        if windows:
            kept.append(windows[0].t_us)
        if kept:
            start = int(min(kept))
            self.trimmed_us = start
            self.first_us = max(self.first_us or start, start)
        self._points = sum(s.n for s in self._all_series())

    def _all_series(self) -> list[Series]:
        out = [*self.metrics.view().values(), *self.step_time.view().values()]
        out += [*self.zones.view().values(), self.mem_used, self.cpu_percent, self.cpu_mhz]
        out += [*self.power_sources.view().values(), self.energy_j]
        for p in self.proc.view().values():
            out += [p.rss, p.cgroup, *p.gpu_mem.values()]
        for ps in self.procs.view().values():
            out += ps.series()
        for g in self.gpus.view().values():
            out += [g.temp_c, g.power_w, g.sm_clock_mhz, g.mem_clock_mhz, g.util_gpu, g.mem_used]
        return out

    def forget_seq(self) -> None:
        """Records were passed over on purpose (a seek): the next one is not after a gap."""
        self.last_seq = None

    def apply(self, item: Record | Status) -> None:
        """Fold one record or status into the draft."""
        self._frozen = None
        if isinstance(item, Status):
            self._status(item)
            return
        _FOLDS[type(item)](self, item)
        self._points += len(item.values) if isinstance(item, Metrics) else 1
        t0, t1 = _span_t(item)
        gaps = self.gaps
        seq = item.seq
        prev = self.last_seq
        last = self.last_us
        is_open = bool(gaps) and gaps[-1].end_us is None
        if prev is not None and seq > prev + 1:
            if is_open:
                gap = gaps[-1]
                if gap.first_seq is None:
                    gap = _evolve(gap, first_seq=prev + 1, last_seq=seq - 1)
                self.gaps = gaps.replace_last(_evolve(gap, end_us=t0))
            else:
                what = f"records {prev + 1}-{seq - 1}" if seq > prev + 2 else f"record {prev + 1}"
                self.gaps = gaps.append(Gap(last or t0, f"{what} missing", prev + 1, seq - 1, t0))
        elif is_open and t0:
            self.gaps = gaps.replace_last(_evolve(gaps[-1], end_us=t0))
        if t0:
            first = self.first_us
            self.first_us = t0 if first is None or t0 < first else first
            self.last_us = t1 if last is None or t1 > last else last
        self.last_seq = seq if prev is None or seq > prev else prev
        self.records += 1

    def _status(self, st: Status) -> None:
        if st.state == "live":
            self.live_from_event = len(self.events)
        if st.state != "gap":
            self.status = st
            return
        first, last = st.gap if st.gap is not None else (None, None)
        gap = Gap(self.last_us or 0, st.message or "records missing", first, last)
        self.gaps = self.gaps.append(gap)


def _fold_run_start(b: StateBuilder, r: RunStart) -> None:
    b.runs.w()[r.run] = _run_info(r, b.runs.get(r.run))
    _pid_run(b, r.pid, r.run)


def _pid_run(b: StateBuilder, pid: int, run: int) -> None:
    if b.pid_runs.get(pid) != run:
        b.pid_runs.w()[pid] = run


def _fold_keyframe(b: StateBuilder, k: Keyframe) -> None:
    if k.runs:
        runs = b.runs.w()
        for r in k.runs:
            runs[r.run] = _run_info(r, runs.get(r.run))
            _pid_run(b, r.pid, r.run)


def _fold_run_end(b: StateBuilder, e: RunEnd) -> None:
    info = b.runs.get(e.run)
    if info is not None:
        b.runs.w()[e.run] = _evolve(
            info, end_us=e.t_us, exit_code=e.exit_code, dropped=e.dropped, cause=e.cause
        )


def _fold_metrics(b: StateBuilder, m: Metrics) -> None:
    if not m.values:
        return
    key = (m.run, m.key)
    metrics = b.metrics.w()
    old = metrics.get(key) or Series.empty()
    if len(m.values) == 1:  # one value a record, as a live stream often sends them
        metrics[key] = old.append(m.steps[0], m.times_us[0], m.values[0])
    else:
        metrics[key] = old.extend(m.steps, m.times_us, m.values)
    unit = step_time_unit(m.key)
    if unit is not None:
        # A logged step time: kept in seconds under the run's negative slot.
        slot = -1 - m.run
        step_time = b.step_time.w()
        st = step_time.get(slot) or Series.empty()
        values = m.values if unit == 1.0 else [v * unit for v in m.values]
        if len(values) == 1:
            step_time[slot] = st.append(m.steps[0], m.times_us[0], values[0])
        else:
            step_time[slot] = st.extend(m.steps, m.times_us, values)
        return
    before = b.step_clock.get(m.run)
    points, clock = derive_step_times(m.key, m.steps, m.times_us, before)
    if clock is None or clock is before:
        return
    b.step_clock.w()[m.run] = clock
    xs = [p[0] for p in points]
    ts = [p[1] for p in points]
    ys = [p[2] for p in points]
    if ys:
        step_time = b.step_time.w()
        st = step_time.get(m.run) or Series.empty()
        step_time[m.run] = st.append(xs[0], ts[0], ys[0]) if len(ys) == 1 else st.extend(xs, ts, ys)


def _fold_process(b: StateBuilder, p: ProcessSample) -> None:
    _pid_run(b, p.pid, p.run)
    proc = b.proc.w()
    ps = proc.get(p.run) or ProcState()
    t = float(p.t_us)
    changes: dict[str, Any] = {}
    # The run's RSS line is one process's, the first sampled (the collector samples a run's
    # own process first in each sweep): its children (each in the process table) would
    # otherwise take turns in one series and draw as a band between their values.
    main_pid = ps.main_pid
    if main_pid is None:
        changes["main_pid"] = main_pid = p.pid
    main = main_pid == p.pid
    if p.rss is not None and main:
        changes["rss"] = ps.rss.append(t, t, float(p.rss))
    if p.rss_peak is not None and main:
        changes["rss_peak"] = max(p.rss_peak, ps.rss_peak or 0)
    if p.cgroup_current is not None:
        changes["cgroup"] = ps.cgroup.append(t, t, float(p.cgroup_current))
    if p.cgroup_peak is not None:
        changes["cgroup_peak"] = max(p.cgroup_peak, ps.cgroup_peak or 0)
    if p.cgroup_limit is not None:
        changes["cgroup_limit"] = p.cgroup_limit
    if p.oom_kills is not None:
        changes["oom_kills"] = p.oom_kills
    if p.cpu_percent is not None:
        changes["cpu_percent"] = p.cpu_percent
    if p.cgroup is not None and p.cgroup != ps.cgroup_path:
        info = b.runs.get(p.run)  # the run's first process says where the run is
        if ps.cgroup_path is None or info is None or info.pid == p.pid:
            changes["cgroup_path"] = p.cgroup
    proc[p.run] = _evolve(ps, **changes)
    _fold_pid(b, p, t)


def _fold_pid(b: StateBuilder, p: ProcessSample, t: float) -> None:
    """The sample into its process's own history (the process table)."""
    key = (p.run, p.pid)
    procs = b.procs.w()
    old = procs.get(key) or PidState(p.run, p.pid)
    pc: dict[str, Any] = {"seen": old.seen.append(p.t_us)}
    if p.ppid is not None and p.ppid != old.ppid:
        pc["ppid"] = p.ppid
    if p.command is not None and p.command != old.command:
        pc["command"] = p.command
    if p.cpu_percent is not None:
        pc["cpu"] = old.cpu.append(t, t, p.cpu_percent)
    if p.rss is not None:
        pc["rss"] = old.rss.append(t, t, float(p.rss))
    # seldom-changing figures: an entry only when the value changes
    for name, value in (("rss_peak", p.rss_peak), ("threads", p.threads), ("states", p.state)):
        log = getattr(old, name)
        if value is not None and (not log.n or log.items[log.n - 1][1] != value):
            pc[name] = log.append((p.t_us, value))
    procs[key] = _evolve(old, **pc)


def _fold_system(b: StateBuilder, x: SystemSample) -> None:
    t = float(x.t_us)
    if x.mem_used is not None:
        b.mem_used = b.mem_used.append(t, t, float(x.mem_used))
    if x.mem_total is not None:
        b.mem_total = x.mem_total
    if x.cpu_percent is not None:
        b.cpu_percent = b.cpu_percent.append(t, t, x.cpu_percent)


def _throttle(b: StateBuilder, source: str, t_us: int, reasons: tuple[str, ...]) -> None:
    """Open, extend or close ``source``'s throttled period at a sample."""
    current = b.throttle_open.get(source)
    if reasons:
        if current is None:
            span = Span(source, t_us, t_us, reasons, open=True)
        else:
            merged = current.reasons + tuple(r for r in reasons if r not in current.reasons)
            span = _evolve(current, end_us=t_us, reasons=merged)
        b.throttle_open.w()[source] = span
    elif current is not None:
        del b.throttle_open.w()[source]
        b.throttle = b.throttle.append(_evolve(current, end_us=t_us, open=False))


def _fold_gpu(b: StateBuilder, g: GpuSample) -> None:
    gpus = b.gpus.w()
    gs = gpus.get(g.index) or GpuState(g.index, g.name)
    t = float(g.t_us)
    gc: dict[str, Any] = {}
    if g.temp_c is not None:
        gc["temp_c"] = gs.temp_c.append(t, t, g.temp_c)
    if g.power_mw is not None:
        gc["power_w"] = gs.power_w.append(t, t, g.power_mw / 1000)
    if g.sm_clock_mhz is not None:
        gc["sm_clock_mhz"] = gs.sm_clock_mhz.append(t, t, float(g.sm_clock_mhz))
    if g.mem_clock_mhz is not None:
        gc["mem_clock_mhz"] = gs.mem_clock_mhz.append(t, t, float(g.mem_clock_mhz))
    if g.util_gpu is not None:
        gc["util_gpu"] = gs.util_gpu.append(t, t, g.util_gpu)
    if g.mem_used is not None:
        gc["mem_used"] = gs.mem_used.append(t, t, float(g.mem_used))
    if g.power_limit_mw is not None:
        gc["power_limit_w"] = g.power_limit_mw / 1000
    if g.max_sm_clock_mhz is not None:
        gc["max_sm_clock_mhz"] = g.max_sm_clock_mhz
    if g.mem_total is not None:
        gc["mem_total"] = g.mem_total
    if g.clock_event_reasons is not None:
        gc["reasons"] = clock_event_reason_names(g.clock_event_reasons)
        slow = clock_event_reason_names(g.clock_event_reasons & GPU_THROTTLE_MASK)
        _throttle(b, f"gpu{g.index}", g.t_us, slow)
    gpus[g.index] = _evolve(gs, **gc)
    if g.power_mw is not None and g.power_mw >= 0 and not b.nvml_records:
        reading = PowerReading("nvml", f"gpu{g.index}", power_uw=g.power_mw * 1000)
        _fold_energy(b, (reading,), g.t_us)
    if g.processes:
        _fold_gpu_processes(b, g, t)


def _fold_gpu_processes(b: StateBuilder, g: GpuSample, t: float) -> None:
    """Each run's share of this GPU's memory: the sum over the run's pids that use it."""
    pid_runs = b.pid_runs.view()
    per_run: dict[int, int] = {}
    for pid, used in g.processes:
        run = pid_runs.get(pid)
        if run is not None:
            per_run[run] = per_run.get(run, 0) + used
    procs = b.procs.view()
    if any((pid_runs.get(pid), pid) in procs for pid, _ in g.processes):
        w = b.procs.w()
        for pid, used in g.processes:
            key = (pid_runs.get(pid, -2), pid)
            pstate = w.get(key)
            if pstate is not None:
                ser = pstate.gpu_mem.get(g.index) or Series.empty()
                gm = {**pstate.gpu_mem, g.index: ser.append(t, t, float(used))}
                w[key] = _evolve(pstate, gpu_mem=gm)
    if not per_run:
        return
    proc = b.proc.w()
    for run, used in per_run.items():
        ps = proc.get(run) or ProcState()
        series = ps.gpu_mem.get(g.index) or Series.empty()
        gpu_mem = {**ps.gpu_mem, g.index: series.append(t, t, float(used))}
        proc[run] = _evolve(ps, gpu_mem=gpu_mem)


def _fold_thermal(b: StateBuilder, x: ThermalSample) -> None:
    t = float(x.t_us)
    if x.zones:
        zones = b.zones.w()
        trips = b.zone_trips.w()
        for z in x.zones:
            zones[z.name] = (zones.get(z.name) or Series.empty()).append(t, t, z.temp_c)
            limits = [(temp, hyst) for kind, temp, hyst in z.trips if kind in TRIP_KINDS]
            if limits:
                trip, hyst = min(limits)
                trips[z.name] = trip
                if b.zone_hyst.get(z.name) != hyst:
                    b.zone_hyst.w()[z.name] = hyst
    cur = [fr.cur_khz for fr in x.freqs if fr.cur_khz is not None]
    if cur:
        b.cpu_mhz = b.cpu_mhz.append(t, t, sum(cur) / len(cur) / 1000)
        maxes = [fr.max_khz for fr in x.freqs if fr.max_khz]
        if maxes:
            b.cpu_max_mhz = max(maxes) / 1000
    if x.throttle:
        cpu_reasons: list[str] = []
        pi_reasons: list[str] = []
        counters = b.counters.view()
        for name, value in x.throttle.items():
            before = counters.get(name)
            if name.endswith("throttled") and name.startswith("pi"):
                pi_reasons += pi_throttled_flags(value & PI_THROTTLED_NOW_MASK)
            elif before is not None and value > before:
                cpu_reasons.append(name)
        _throttle(b, "cpu", x.t_us, tuple(cpu_reasons))
        if any(n.startswith("pi") for n in x.throttle):
            _throttle(b, "pi", x.t_us, tuple(pi_reasons))
        b.counters.w().update(x.throttle)
    if b.power_instant[1] is not None:  # a board with RAPL: is its power limit holding it?
        _board_cap(b, None, x)


def _fold_power(b: StateBuilder, p: PowerSample) -> None:
    t = float(p.t_us)
    if any(r.source == "nvml" for r in p.readings):
        b.nvml_records = True
    sources = b.power_sources.w()
    for source, watts in source_power_w(p).items():
        sources[source] = (sources.get(source) or Series.empty()).append(t, t, watts)
    limits = {f"{r.source} {r.name}": r.limit_uw / 1e6 for r in p.readings if r.limit_uw}
    if limits:
        b.power_limits.w().update(limits)
    _fold_energy(b, p.readings, p.t_us)
    if any(r.source == "rapl" for r in p.readings):
        _board_cap(b, p, None)


def _board_cap(b: StateBuilder, power: PowerSample | None, thermal: ThermalSample | None) -> None:
    """A ``board`` throttled period while a power limit holds the CPU clocks down
    (:func:`edgescope_tracing.energy.board_power_cap`), once both records of an instant came."""
    t = power.t_us if power is not None else thermal.t_us if thermal is not None else 0
    at, p, th = b.power_instant
    if at != t:
        p, th = None, None
    p, th = power or p, thermal or th
    b.power_instant = (t, p, th)
    if p is not None and th is not None:
        _throttle(b, "board", t, ("power_cap",) if board_power_cap(p, th) else ())


def _fold_energy(b: StateBuilder, readings: Iterable[PowerReading], t_us: int) -> None:
    """Add the readings' energy since their previous ones to the cumulative energy."""
    last = b.power_last.w()
    joules = b.joules.w()
    added = False
    for r in readings:
        if not r.total or (r.energy_uj is None and r.power_uw is None):
            continue
        key = (r.source, r.name)
        prev = last.get(key)
        if prev is not None and t_us <= prev[0]:
            continue
        last[key] = (t_us, r.energy_uj, r.power_uw)
        got = reading_joules(prev, r, t_us)
        joules.setdefault(r.source, 0.0)
        if got is not None:
            joules[r.source] += got[0]
            added = True
    if not added and len(b.energy_j):
        return
    total = device_total(joules)
    e = b.energy_j
    t = float(t_us)
    if len(e) and e.t[e.n - 1] >= t:
        return  # another sampler's record of the same instant: its energy shows at the next
    b.energy_j = e.append(t, t, total)


def _fold_stacks(b: StateBuilder, x: StackSamples) -> None:
    counts = b.self_counts.w()
    total = 0
    for stack, n in x.samples:
        if stack:
            name = stack[-1].function
            counts[name] = counts.get(name, 0) + n
        total += n
    win = StackWindow(x.t_us, x.run, x.backend, x.period_us, x.samples)
    b.windows = b.windows.append(win)
    b.stack_total += total


def _fold_event(b: StateBuilder, e: Event) -> None:
    b.events = b.events.append(e)
    detail = e.detail if isinstance(e.detail, dict) else {}
    t0, t1 = detail.get("from_us"), detail.get("to_us")
    if e.kind == "gap" and type(t0) is int and type(t1) is int and t1 >= t0:
        # values the SDK had to drop (its sink took nothing): a gap over the time it lasted
        b.gaps = b.gaps.append(Gap(t0, e.message, end_us=t1))


_FOLDS: dict[type, Callable[[StateBuilder, Any], None]] = {
    RunStart: _fold_run_start,
    Keyframe: _fold_keyframe,
    RunEnd: _fold_run_end,
    Metrics: _fold_metrics,
    ProcessSample: _fold_process,
    SystemSample: _fold_system,
    GpuSample: _fold_gpu,
    ThermalSample: _fold_thermal,
    PowerSample: _fold_power,
    StackSamples: _fold_stacks,
    Event: _fold_event,
}


def fold(state: RunState, item: Record | Status) -> RunState:
    """The state after one more record (or source status). Pure: ``state`` is unchanged."""
    b = StateBuilder(state)
    b.apply(item)
    return b.freeze()


def fold_all(items: Iterable[Record | Status], state: RunState | None = None) -> RunState:
    """Fold records and statuses, from ``state`` or an empty state, through one draft."""
    b = StateBuilder(state)
    for item in items:
        b.apply(item)
    return b.freeze()


def top_functions(
    windows: list[StackWindow] | None, state: RunState, limit: int = 20
) -> list[tuple[str, int, int]]:
    """``(function, self samples, total samples)`` sorted by self samples.

    Over the given windows, or over the whole trace when ``windows`` is None.
    """
    self_c: dict[str, int] = {}
    total_c: dict[str, int] = {}
    wins = state.stacks.windows.view() if windows is None else windows
    for w in wins:
        for stack, n in w.samples:
            if not stack:
                continue
            leaf = stack[-1].function
            self_c[leaf] = self_c.get(leaf, 0) + n
            for name in {f.function for f in stack}:
                total_c[name] = total_c.get(name, 0) + n
    ranked = sorted(total_c, key=lambda k: (-self_c.get(k, 0), -total_c[k], k))
    return [(k, self_c.get(k, 0), total_c[k]) for k in ranked[:limit]]


def stack_tree(windows: list[StackWindow]) -> StackNode:
    """The merged call tree of the windows' samples (root first), for an icicle."""
    root: dict[str, Any] = {}
    total = 0
    for w in windows:
        for stack, n in w.samples:
            total += n
            node = root
            for f in stack:
                child = node.get(f.function)
                if child is None:
                    child = node[f.function] = [0, {}]
                child[0] += n
                node = child[1]

    def build(name: str, count: int, kids: dict[str, Any]) -> StackNode:
        children = tuple(
            sorted(
                (build(k, v[0], v[1]) for k, v in kids.items()),
                key=lambda c: (-c.count, c.name),
            )
        )
        return StackNode(name, count, children)

    return build("all", total, root)


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
