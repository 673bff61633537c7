"""Step-time regressions: a sustained slowdown, and the signal that coincides with it."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edgescope_tracing.causes import coinciding_signals, explain
from edgescope_tracing.records import (
    Event,
    GpuSample,
    Metrics,
    PowerSample,
    ProcessSample,
    Record,
    RunEnd,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.signals import (
    STEP_TIME_KEYS,
    StepClock,
    derive_step_times,
    step_time_unit,
)

from .base import anomaly, duration
from .stats import median

__all__ = ["StepTimeRegression", "STEP_TIME_KEYS", "step_time_unit"]


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

    Reads ``Metrics`` (a step-time key, else the run's first metric's steps) and the samples
    the causes are found in; emits ``step_time_regression``, severity 1 (0 for a recovery).

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
        self._clock: dict[int, StepClock] = {}
        """run -> (metric key whose steps clock the run, last step, its time)."""
        self._pending: list[_Pending] = []
        self.context: deque[Record] = deque()
        """Recent samples (thermal, system, GPU, process, power) to find causes in."""

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
        if isinstance(rec, ThermalSample | SystemSample | GpuSample | ProcessSample | PowerSample):
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
        points, clock = derive_step_times(
            rec.key, rec.steps, rec.times_us, self._clock.get(rec.run)
        )
        if clock is not None:
            self._clock[rec.run] = clock
        return [(int(s), int(t), v) for s, t, v in points]

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
                anomaly(
                    self.name,
                    f"step time back to {now / st.frozen_median:.1f}x median after "
                    f"{duration(lasted)}",
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
            message = explain(head, signals)
            out.append(
                anomaly(
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
