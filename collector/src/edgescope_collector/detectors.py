"""Detectors: from the stream of records to the events that say what went wrong.

Each detector is a small fold: ``feed(record) -> list[Event]``, deterministic, no I/O, no
clock (times come from the records). :class:`Detectors` runs all of them over one stream and
:func:`detect` runs a fresh set over a sequence of records, a pure function of it. The
statistics they stand on (:func:`median`, :func:`robust_z`, :func:`linear_fit`) and the
search for a coinciding cause (:func:`coinciding_signals`) are pure functions, public and
tested on their own.

Every event has ``kind="anomaly"``, a message a person can act on, a severity (0 info,
1 warning, 2 error) and ``detail`` with ``detector`` naming which one spoke and the figures
it saw (JSON-safe: non-finite numbers are written as strings). :class:`Detectors` passes every
event through a :class:`RateLimit` (5 a minute per detector and run): what it holds back is
counted and said in the next event, or in a summary event at the run's end.

- :class:`NonFiniteLoss`: a loss metric became NaN or infinite (once until it is finite again).
- :class:`LossSpike`: a loss value far above its recent values by a robust z-score (median and
  MAD over a trailing window), at most one event per cooldown of steps.
- :class:`StepTimeRegression`: the median of the last few step times is ``factor`` times the
  median before them, at least 1 ms, for at least 1 s (a sustained slowdown, not one slow step
  or a burst of a tiny model's microsecond steps); the event names what
  coincides: a throttle counter or flag, a CPU frequency drop, a temperature at a trip point,
  GPU clock-event throttling, memory pressure, swap, CPU contention. Step time is a logged
  ``step_time``-style metric, or else the time between steps of the run's first metric.
- :class:`MemoryGrowth`: the run's memory (cgroup, else the RSS of its processes) grows so
  that, at the fitted rate, it reaches the cgroup limit (else exhausts available memory)
  within a horizon.
- :class:`OomKill`: the OOM killer killed a process in the run's cgroup (``oom_kill`` rose),
  or the run ended by SIGKILL with its memory at the limit.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from edgescope_tracing.records import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.signals import (
    STEP_TIME_KEYS,
    clock_event_reason_names,
    gpu_throttled,
    pi_throttled_flags,
    step_time_unit,
)

from .samplers.thermal import PASSIVE_COOLING

__all__ = [
    "Detectors",
    "RateLimit",
    "detect",
    "NonFiniteLoss",
    "LossSpike",
    "StepTimeRegression",
    "MemoryGrowth",
    "OomKill",
    "Signal",
    "coinciding_signals",
    "median",
    "robust_z",
    "linear_fit",
    "is_loss_key",
    "step_time_unit",
    "STEP_TIME_KEYS",
]

MiB = 1 << 20


def is_loss_key(key: str) -> bool:
    """``loss``, ``train/loss``, ``val_loss``, ``loss/train``: the metric is a loss."""
    k = key.lower()
    return k == "loss" or k.endswith(("/loss", "_loss", ".loss")) or k.startswith("loss/")


def median(xs: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def robust_z(value: float, window: Sequence[float]) -> float:
    """How many robust standard deviations ``value`` lies above the window's median.

    The spread is the median absolute deviation scaled by 1.4826 (so that it equals the
    standard deviation for normal data), floored at a millionth of the median's size so that
    a flat window does not make every wiggle infinite.
    """
    med = median(window)
    mad = median([abs(x - med) for x in window]) * 1.4826
    spread = max(mad, abs(med) * 1e-6, 1e-300)
    return (value - med) / spread


def linear_fit(ts: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``(slope, intercept, r2)`` of ys over ts (at least two distinct ts)."""
    n = len(ts)
    mt = sum(ts) / n
    my = sum(ys) / n
    stt = sum((t - mt) ** 2 for t in ts)
    sty = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    if stt == 0:
        return 0.0, my, 0.0
    slope = sty / stt
    r2 = (sty * sty) / (stt * syy) if syy > 0 else 1.0
    return slope, my - slope * mt, r2


def _mib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if abs(n) >= 1 << 30 else f"{n / MiB:.0f} MiB"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _json_safe(v: object) -> object:
    """Non-finite floats as strings ("inf", "nan"): event details must stay JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _anomaly(
    detector: str, message: str, run: int, severity: int, t_us: int, **detail: object
) -> Event:
    return Event(
        kind="anomaly",
        message=message,
        run=run,
        severity=severity,
        detail={"detector": detector, **{k: _json_safe(v) for k, v in detail.items()}},
        t_us=t_us,
    )


# ------------------------------------------------------------------------------------ loss


class NonFiniteLoss:
    """A loss metric turned NaN or infinite: one error event, again only after it recovers."""

    def __init__(self) -> None:
        self._bad: set[tuple[int, str]] = set()

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._bad = {k for k in self._bad if k[0] != run}

    def feed(self, rec: Record) -> list[Event]:
        if not isinstance(rec, Metrics) or not is_loss_key(rec.key):
            return []
        out = []
        key = (rec.run, rec.key)
        for step, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True):
            if math.isfinite(v):
                self._bad.discard(key)
            elif key not in self._bad:
                self._bad.add(key)
                out.append(
                    _anomaly(
                        "nonfinite_loss",
                        f"{rec.key} is {v} at step {step}",
                        rec.run,
                        2,
                        t,
                        key=rec.key,
                        step=step,
                        value=str(v),
                    )
                )
        return out


@dataclass
class _SpikeState:
    window: deque[float]
    since_stats: int = 0
    med: float = 0.0
    spread: float = 0.0
    last_event_step: int | None = None


class LossSpike:
    """A loss value ``threshold`` robust deviations above the median of the trailing window.

    The median and MAD are recomputed every ``refresh`` values (and whenever a value looks
    like a spike against the cached ones), which keeps the cost per value small at 1,000
    metrics a second.
    """

    def __init__(
        self,
        window: int = 100,
        threshold: float = 8.0,
        min_points: int = 20,
        cooldown_steps: int = 50,
        refresh: int = 16,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.min_points = min_points
        self.cooldown_steps = cooldown_steps
        self.refresh = refresh
        self._state: dict[tuple[int, str], _SpikeState] = {}

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._state = {k: v for k, v in self._state.items() if k[0] != run}

    def _stats(self, st: _SpikeState) -> None:
        w = list(st.window)
        st.med = median(w)
        mad = median([abs(x - st.med) for x in w]) * 1.4826
        st.spread = max(mad, abs(st.med) * 1e-6, 1e-300)
        st.since_stats = 0

    def feed(self, rec: Record) -> list[Event]:
        if not isinstance(rec, Metrics) or not is_loss_key(rec.key):
            return []
        key = (rec.run, rec.key)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _SpikeState(deque(maxlen=self.window))
        out = []
        for step, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True):
            if not math.isfinite(v):
                continue  # NonFiniteLoss speaks for these
            if len(st.window) >= self.min_points:
                if st.since_stats >= self.refresh:
                    self._stats(st)
                if (v - st.med) / st.spread > self.threshold:
                    self._stats(st)  # confirm against fresh figures
                    z = (v - st.med) / st.spread
                    cooled = (
                        st.last_event_step is None
                        or step - st.last_event_step >= self.cooldown_steps
                    )
                    if z > self.threshold and cooled:
                        st.last_event_step = step
                        out.append(
                            _anomaly(
                                "loss_spike",
                                f"{rec.key} spiked to {v:.4g} at step {step}, "
                                f"{v / st.med:.1f}x the median {st.med:.4g} of the last "
                                f"{len(st.window)} values (robust z {z:.0f})"
                                if st.med > 0
                                else f"{rec.key} spiked to {v:.4g} at step {step} "
                                f"(median {st.med:.4g}, robust z {z:.0f})",
                                rec.run,
                                1,
                                t,
                                key=rec.key,
                                step=step,
                                value=v,
                                median=st.med,
                                z=round(z, 1),
                            )
                        )
            st.window.append(v)
            st.since_stats += 1
            if len(st.window) == self.min_points:
                self._stats(st)
        return out


# ------------------------------------------------------------------------- coinciding signals


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
            out.append(Signal("swap", f"swap grew {_mib(grew)}", {"swap_grew": grew}))
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
                    f"the run's cgroup at {share:.0%} of its {_mib(p.cgroup_limit)} limit",
                    {"current": p.cgroup_current, "limit": p.cgroup_limit},
                )
            )
    return out


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


# ------------------------------------------------------------------------------ step time


@dataclass
class _StepState:
    baseline: deque[float]
    recent: deque[float]
    recent_t: deque[int]
    recent_steps: deque[int]
    seen: int = 0
    base_median: float | None = None
    since_median: int = 0
    slow_since: int | None = None
    """Time of the first slow step of a slowdown not yet long enough to be an event."""
    slow_step: int = 0
    regressed_at: int | None = None
    frozen_median: float = 0.0


@dataclass(frozen=True)
class _Pending:
    run: int
    step: int
    t_us: int
    since_us: int
    base: float
    now: float


class StepTimeRegression:
    """A sustained step-time slowdown, with the signal that coincides with it.

    Per run: the median of the last ``recent`` step times against the median of the
    ``window`` before them. After ``warmup`` steps (compilation, caches) and once the baseline
    holds ``min_baseline`` steps, a slowdown starts when the recent median reaches ``factor``
    times the baseline median and is at least ``min_step_s``; it becomes an event once it has
    lasted ``min_duration_s`` of stream time (a burst of slow steps is not a regression). The
    baseline is then frozen until the recent median falls back under ``recover`` times it,
    which gives an info event. The one recent median both decides and is reported: an event
    says the ratio that raised it.

    Thresholds (defaults):

    - ``factor`` 1.5, ``recover`` 1.2: a third slower is noise on a shared board; half again
      as slow is not.
    - ``min_step_s`` 1 ms: below it the step time is the logging call and the clock's
      microsecond, and a tiny model at 20k steps/s wobbles by multiples from one burst to the
      next (the GIL, a page fault) without anything being wrong.
    - ``min_duration_s`` 1 s: the slowdown must hold this long before it is an event.
    - ``recent`` 10 steps, ``window`` 200 steps, ``warmup`` 20, ``min_baseline`` 50.

    Steps of a fast model come many per sampler tick, so a slowdown is seen before the
    samples that explain it arrive: the event waits until the stream has moved ``grace_s``
    past the slowdown (or :meth:`flush`), then looks for coinciding signals from
    ``lookback_s`` before the first slow step to the end of the grace.
    """

    name = "step_time_regression"

    def __init__(
        self,
        window: int = 200,
        recent: int = 10,
        factor: float = 1.5,
        recover: float = 1.2,
        warmup: int = 20,
        min_baseline: int = 50,
        min_step_s: float = 1e-3,
        min_duration_s: float = 1.0,
        context_s: float = 120.0,
        lookback_s: float = 5.0,
        grace_s: float = 2.0,
    ) -> None:
        self.window = window
        self.recent = recent
        self.factor = factor
        self.recover = recover
        self.warmup = warmup
        self.min_baseline = min_baseline
        self.min_step_s = min_step_s
        self.min_duration_us = int(min_duration_s * 1e6)
        self.context_us = int(context_s * 1e6)
        self.lookback_us = int(lookback_s * 1e6)
        self.grace_us = int(grace_s * 1e6)
        self._runs: dict[int, _StepState] = {}
        self._explicit: set[int] = set()
        self._clock: dict[int, tuple[str, int, int]] = {}
        """run -> (metric key whose steps clock the run, last step, its time)."""
        self._pending: list[_Pending] = []
        self.context: deque[Record] = deque()
        """Recent samples (thermal, system, GPU, process) to find causes in."""

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended (after its pending events settled)."""
        self._runs.pop(run, None)
        self._explicit.discard(run)
        self._clock.pop(run, None)

    def _keep(self, rec: Record) -> None:
        self.context.append(rec)
        horizon = rec.t_us - self.context_us
        while self.context and self.context[0].t_us < horizon:
            self.context.popleft()

    def feed(self, rec: Record) -> list[Event]:
        out: list[Event] = []
        if isinstance(rec, ThermalSample | SystemSample | GpuSample | ProcessSample):
            self._keep(rec)
        elif isinstance(rec, Metrics) and rec.values:
            for step, t, seconds in self._step_times(rec):
                out.extend(self._step(rec.run, step, t, seconds))
        elif isinstance(rec, RunEnd):
            out.extend(self._settle(lambda p: p.run == rec.run))
        if self._pending:
            out.extend(self._settle(lambda p: rec.t_us >= p.t_us + self.grace_us))
        return out

    def flush(self) -> list[Event]:
        """Events still waiting for their grace (at the end of a stream)."""
        return self._settle(lambda p: True)

    def _step_times(self, rec: Metrics) -> list[tuple[int, int, float]]:
        unit = step_time_unit(rec.key)
        if unit is not None:
            if rec.run not in self._explicit:
                self._explicit.add(rec.run)
                self._runs.pop(rec.run, None)  # derived times were a stand-in: start over
            return [
                (s, t, v * unit)
                for s, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True)
                if math.isfinite(v) and v > 0
            ]
        if rec.run in self._explicit:
            return []
        clock = self._clock.get(rec.run)
        if clock is not None and clock[0] != rec.key:
            return []
        pairs = list(zip(rec.steps, rec.times_us, strict=True))
        if clock is None:
            last_step, last_t = pairs[0]
            pairs = pairs[1:]
        else:
            _, last_step, last_t = clock
        points = []
        for step, t in pairs:
            if step > last_step and t >= last_t:
                points.append((step, t, (t - last_t) / 1e6 / (step - last_step)))
                last_step, last_t = step, t
        self._clock[rec.run] = (rec.key, last_step, last_t)
        return points

    def _step(self, run: int, step: int, t: int, seconds: float) -> list[Event]:
        st = self._runs.get(run)
        if st is None:
            n = self.recent
            st = self._runs[run] = _StepState(
                deque(maxlen=self.window), deque(maxlen=n), deque(maxlen=n), deque(maxlen=n)
            )
        st.seen += 1
        if st.seen <= self.warmup:
            return []
        if len(st.recent) == self.recent and st.regressed_at is None and st.slow_since is None:
            st.baseline.append(st.recent[0])  # the oldest recent step joins the baseline
            st.since_median += 1
        st.recent.append(seconds)
        st.recent_t.append(t)
        st.recent_steps.append(step)
        if len(st.recent) < self.recent or len(st.baseline) < self.min_baseline:
            return []
        now = median(st.recent)
        if st.regressed_at is None:
            if st.base_median is None or st.since_median >= 20:
                st.base_median = median(st.baseline)
                st.since_median = 0
            # A zero baseline (steps logged within one microsecond) has no time to regress from.
            if st.base_median <= 0 or now < self.factor * st.base_median or now < self.min_step_s:
                st.slow_since = None
                return []
            if st.slow_since is None:
                # The median crossed when half the recent steps were slow: the first of those.
                st.slow_since = st.recent_t[self.recent // 2]
                st.slow_step = st.recent_steps[self.recent // 2]
            if t - st.slow_since < self.min_duration_us:
                return []
            base = median(st.baseline)  # exact, for the decision and the event alike
            st.base_median = base
            if base <= 0 or now < self.factor * base:
                return []
            st.regressed_at = st.slow_since
            st.slow_since = None
            st.frozen_median = base
            self._pending.append(
                _Pending(run, st.slow_step, t, st.regressed_at - self.lookback_us, base, now)
            )
            return []
        if now <= self.recover * st.frozen_median:
            events = self._settle(lambda p: p.run == run)
            lasted = (t - st.regressed_at) / 1e6
            st.regressed_at = None
            st.base_median = None
            events.append(
                _anomaly(
                    self.name,
                    f"step time back to {now / st.frozen_median:.1f}x median after "
                    f"{_duration(lasted)}",
                    run,
                    0,
                    t,
                    step=step,
                    recovered=True,
                    median_s=st.frozen_median,
                    recent_s=now,
                )
            )
            return events
        return []

    def _settle(self, due: Callable[[_Pending], bool]) -> list[Event]:
        ready = [p for p in self._pending if due(p)]
        if not ready:
            return []
        self._pending = [p for p in self._pending if not due(p)]
        context = list(self.context)
        out = []
        for p in ready:
            signals = coinciding_signals(context, p.since_us, p.t_us + self.grace_us, p.run)
            ratio = p.now / p.base
            head = f"step time {ratio:.1f}x median ({p.now * 1e3:.3g} ms vs {p.base * 1e3:.3g} ms)"
            if signals:
                message = f"{head} while " + ", ".join(s.text for s in signals[:2])
            else:
                message = f"{head}; no throttle, frequency, temperature or memory signal coincides"
            out.append(
                _anomaly(
                    "step_time_regression",
                    message,
                    p.run,
                    1,
                    p.t_us,
                    step=p.step,
                    ratio=round(ratio, 2),
                    median_s=p.base,
                    recent_s=p.now,
                    signals=[s.to_json() for s in signals],
                )
            )
        return out


# --------------------------------------------------------------------------------- memory


@dataclass
class _MemState:
    points: deque[tuple[int, float]] = field(default_factory=deque)
    pending_t: int | None = None
    pending_rss: int = 0
    pending_cg: int | None = None
    pending_limit: int | None = None
    warned: bool = False


class MemoryGrowth:
    """Memory growing towards the limit: a least-squares fit over ``window_s`` projects when
    the run's cgroup reaches its limit (or, without a limit, when its processes' RSS eats the
    memory still available); an event when that is within ``horizon_s``.

    A fit needs ``min_points`` samples over at least a third of the window, an r² of at least
    ``min_r2`` (steady growth, not noise), and growth of at least ``min_growth`` bytes over
    the window. One event per episode: it re-arms when the projection moves beyond twice the
    horizon.
    """

    def __init__(
        self,
        horizon_s: float = 600.0,
        window_s: float = 60.0,
        min_points: int = 10,
        min_r2: float = 0.8,
        min_growth: int = 16 * MiB,
    ) -> None:
        self.horizon_s = horizon_s
        self.window_us = int(window_s * 1e6)
        self.min_points = min_points
        self.min_r2 = min_r2
        self.min_growth = min_growth
        self._runs: dict[int, _MemState] = {}
        self._available: int | None = None

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._runs.pop(run, None)

    def feed(self, rec: Record) -> list[Event]:
        if isinstance(rec, SystemSample):
            if rec.mem_available is not None:
                self._available = rec.mem_available
            return []
        if not isinstance(rec, ProcessSample) or rec.run < 0:
            return []
        st = self._runs.setdefault(rec.run, _MemState())
        out: list[Event] = []
        if st.pending_t is not None and rec.t_us != st.pending_t:
            ev = self._tick(rec.run, st)
            if ev is not None:
                out.append(ev)
        if st.pending_t != rec.t_us:
            st.pending_t, st.pending_rss, st.pending_cg, st.pending_limit = rec.t_us, 0, None, None
        st.pending_rss += rec.rss or 0
        if rec.cgroup_current is not None:
            st.pending_cg = max(st.pending_cg or 0, rec.cgroup_current)
        if rec.cgroup_limit is not None:
            st.pending_limit = rec.cgroup_limit
        return out

    def _tick(self, run: int, st: _MemState) -> Event | None:
        t = st.pending_t
        assert t is not None
        limited = st.pending_cg is not None and st.pending_limit is not None
        usage = st.pending_cg if limited and st.pending_cg is not None else st.pending_rss
        if limited:
            assert st.pending_limit is not None
            headroom = st.pending_limit - usage
        elif self._available is not None:
            headroom = self._available
        else:
            return None
        st.points.append((t, float(usage)))
        while st.points and st.points[0][0] < t - self.window_us:
            st.points.popleft()
        if len(st.points) < self.min_points:
            return None
        span = st.points[-1][0] - st.points[0][0]
        if span < self.window_us / 3:
            return None
        ts = [(p[0] - st.points[0][0]) / 1e6 for p in st.points]
        ys = [p[1] for p in st.points]
        slope, _, r2 = linear_fit(ts, ys)
        if slope <= 0 or slope * span / 1e6 < self.min_growth:
            if slope <= 0:
                st.warned = False
            return None
        eta = max(0.0, headroom) / slope
        if eta > 2 * self.horizon_s:
            st.warned = False
        if st.warned or eta > self.horizon_s or r2 < self.min_r2:
            return None
        st.warned = True
        rate = f"{slope / MiB:.1f} MiB/s"
        if limited:
            assert st.pending_limit is not None
            what = f"reaches its {_mib(st.pending_limit)} cgroup limit"
            whose = "cgroup memory"
        else:
            what = f"uses up the {_mib(headroom)} still available"
            whose = "processes' memory"
        return _anomaly(
            "memory_growth",
            f"run {run}'s {whose} grows {rate}: at this rate it {what} in {_duration(eta)}",
            run,
            2 if eta < self.horizon_s / 5 else 1,
            t,
            usage=int(usage),
            headroom=int(headroom),
            limit=st.pending_limit if limited else None,
            slope_bps=round(slope),
            eta_s=round(eta, 1),
            r2=round(r2, 3),
        )


# ------------------------------------------------------------------------------------ OOM


class OomKill:
    """The OOM killer struck in the run's cgroup, or the run died of SIGKILL at its limit."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._last: dict[int, ProcessSample] = {}

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._count.pop(run, None)
        self._last.pop(run, None)

    def feed(self, rec: Record) -> list[Event]:
        if isinstance(rec, ProcessSample) and rec.run >= 0:
            self._last[rec.run] = rec
            if rec.oom_kills is None:
                return []
            before = self._count.get(rec.run)
            self._count[rec.run] = rec.oom_kills
            if before is None or rec.oom_kills <= before:
                return []
            n = rec.oom_kills - before
            usage = ""
            if rec.cgroup_current and rec.cgroup_limit:
                usage = f" at {_mib(rec.cgroup_current)} of its {_mib(rec.cgroup_limit)} limit"
            return [
                _anomaly(
                    "oom_kill",
                    f"the OOM killer killed {n} process{'es' if n > 1 else ''} in run "
                    f"{rec.run}'s cgroup{usage}",
                    rec.run,
                    2,
                    rec.t_us,
                    killed=n,
                    oom_kills=rec.oom_kills,
                    cgroup_current=rec.cgroup_current,
                    cgroup_limit=rec.cgroup_limit,
                )
            ]
        if isinstance(rec, RunEnd) and rec.exit_code in (-9, 137):
            last = self._last.get(rec.run)
            if last and last.cgroup_current and last.cgroup_limit:
                share = last.cgroup_current / last.cgroup_limit
                if share >= 0.9:
                    return [
                        _anomaly(
                            "oom_kill",
                            f"run {rec.run} was killed (SIGKILL) with its cgroup at "
                            f"{share:.0%} of its {_mib(last.cgroup_limit)} limit: most likely "
                            "the OOM killer",
                            rec.run,
                            2,
                            rec.t_us,
                            exit_code=rec.exit_code,
                            cgroup_current=last.cgroup_current,
                            cgroup_limit=last.cgroup_limit,
                        )
                    ]
        return []


# -------------------------------------------------------------------------------- together


class RateLimit:
    """At most ``limit`` events per ``window_s`` of stream time from each detector for each run.

    An event over the limit is held back and counted, never dropped silently: the next event
    that detector raises for that run says how many were held back (``detail["suppressed"]``),
    and :meth:`summaries` gives one info event per detector and run with a count still unsaid
    (at the run's end, and at the end of the stream). A recovery whose slowdown was held back
    is held back with it, so no event answers one that was never raised.

    Defaults: 5 events a minute; a detector that has more to say than that is repeating itself.
    """

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_us = int(window_s * 1e6)
        self._raised: dict[tuple[str, int], deque[int]] = {}
        self._held: dict[tuple[str, int], tuple[int, int]] = {}
        """(detector, run) -> (events held back since the last one raised, time of the last)."""
        self._last_held: set[tuple[str, int]] = set()

    def admit(self, e: Event) -> Event | None:
        """``e`` (with the count held back before it, if any) or None if it is held back."""
        key = (str(e.detail.get("detector", "")), e.run)
        times = self._raised.setdefault(key, deque())
        while times and times[0] <= e.t_us - self.window_us:
            times.popleft()
        follows_held = e.detail.get("recovered") is True and key in self._last_held
        if len(times) >= self.limit or follows_held:
            held, _ = self._held.get(key, (0, 0))
            self._held[key] = (held + 1, e.t_us)
            self._last_held.add(key)
            return None
        times.append(e.t_us)
        self._last_held.discard(key)
        held, _ = self._held.pop(key, (0, 0))
        if not held:
            return e
        return replace(
            e,
            message=f"{e.message} ({held} similar events held back before this one: "
            f"{self._rule()})",
            detail={**e.detail, "suppressed": held},
        )

    def summaries(self, run: int | None = None) -> list[Event]:
        """One event per detector (for ``run``, or every run) that has held events unsaid."""
        out = []
        for (detector, r), (held, t_us) in sorted(self._held.items()):
            if run is not None and r != run:
                continue
            what = detector.replace("_", " ")
            out.append(
                _anomaly(
                    detector,
                    f"{held} more {what} events were held back ({self._rule()})",
                    r,
                    0,
                    t_us,
                    suppressed=held,
                    summary=True,
                )
            )
        for e in out:
            del self._held[(str(e.detail["detector"]), e.run)]
        return out

    def forget(self, run: int) -> None:
        for d in (self._raised, self._held):
            for key in [k for k in d if k[1] == run]:
                del d[key]
        self._last_held = {k for k in self._last_held if k[1] != run}

    def _rule(self) -> str:
        return f"at most {self.limit} per {self.window_us / 1e6:g} s"


class Detectors:
    """All detectors over one stream: feed every record, collect the events (rate-limited)."""

    def __init__(self, rate_limit: RateLimit | None = None) -> None:
        self.nonfinite = NonFiniteLoss()
        self.spike = LossSpike()
        self.step_time = StepTimeRegression()
        self.memory = MemoryGrowth()
        self.oom = OomKill()
        self.limit = rate_limit or RateLimit()
        self._all = (self.nonfinite, self.spike, self.step_time, self.memory, self.oom)

    def feed(self, rec: Record) -> list[Event]:
        out: list[Event] = []
        for d in self._all:
            out.extend(d.feed(rec))
        out = self._admit(out)
        if isinstance(rec, RunEnd):
            out.extend(self.limit.summaries(rec.run))
            # A collector outlives thousands of runs: what each one needed goes with it.
            for d in self._all:
                d.forget(rec.run)
            self.limit.forget(rec.run)
        return out

    def flush(self) -> list[Event]:
        """Events held back for context (a step-time regression waits up to ``grace_s`` of
        stream time for the samples that explain it), and the counts the rate limit still
        holds: call once at the end of a stream."""
        return self._admit(self.step_time.flush()) + self.limit.summaries()

    def _admit(self, events: list[Event]) -> list[Event]:
        if not events:
            return events
        return [a for a in map(self.limit.admit, events) if a is not None]


def detect(records: Iterable[Record]) -> list[Event]:
    """The events a fresh set of detectors finds in ``records`` (a pure function)."""
    d = Detectors()
    events = [e for r in records for e in d.feed(r)]
    return events + d.flush()
