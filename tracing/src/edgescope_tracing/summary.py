"""What a trace holds, in one pass: the data behind ``edgescope inspect``.

A pure fold over records plus the reader's damage list; no printing here. The fold streams: it
keeps counts, extremes and bounded lists (the first and last :data:`EVENTS_KEPT` events, up to
:data:`EVENT_GROUPS` groups of like events, :data:`CRASHES_KEPT` events with their
tracebacks, :data:`FUNCTIONS_KEPT` function names), never the records, so its memory does not
grow with the file. What a bound left out is counted and said.

Per run it keeps what a post-mortem needs: how it ended (:func:`exit_words` names a signal),
the last record's time and the last step (where a run that never ended stopped), why it ended
where its run end says (the OOM killer), the memory peaks (VmHWM, cgroup peak and limit, OOM
kills), its cgroup and container with the CPU quota's throttling and memory.high and, over
the trace, the GPUs' memory peaks and the functions most often on top of the sampled stacks.
"""

from __future__ import annotations

import math
import re
import signal
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._frames import Damage
from .containers import Container, container_of
from .energy import EnergyMeter, EnergyPoint, Probe
from .reader import TraceReader
from .records import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    PowerSample,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StackSamples,
)

__all__ = [
    "CgroupSummary",
    "EventGroup",
    "MemoryPeaks",
    "MetricSummary",
    "RunEnergy",
    "RunSummary",
    "TraceSummary",
    "summarize",
    "summarize_file",
    "end_state",
    "exit_words",
    "event_traceback",
    "iso_time",
    "json_float",
]

EVENTS_KEPT = 100
"""Events kept from the start of the trace, and as many from its end."""
EVENT_GROUPS = 1000
"""Groups of like events kept; events of further groups are counted, not grouped."""
CRASHES_KEPT = 10
"""Events with a traceback kept whole (the first ones: the first crash is the cause)."""
RUNS_KEPT = 10_000
"""Runs summarized; runs beyond are counted (``runs_other``). A device's store over months."""
METRIC_KEYS_KEPT = 10_000
"""Metric keys summarized; values of further keys are counted (``metric_values_other``)."""
EPOCH_KEYS = frozenset({"epoch", "train/epoch", "trainer/epoch"})
"""Metric keys read as the epoch number: where it changes, an epoch ended."""
MARKS_KEPT = 1000
"""Marks of a run whose energy is given (the first ones); further marks are counted."""
FUNCTIONS_KEPT = 50_000
"""Distinct function names counted for the top functions; samples beyond are counted apart."""

KIND_NAMES: dict[type, str] = {
    RunStart: "run_start",
    RunEnd: "run_end",
    Metrics: "metrics",
    Event: "event",
    Keyframe: "keyframe",
    StackSamples: "stacks",
}


def kind_name(rec: Record) -> str:
    """The snake_case name of a record's kind, as ``inspect --json`` and ``tail --json`` use."""
    name = KIND_NAMES.get(type(rec))
    if name is None:
        name = type(rec).__name__.removesuffix("Sample").lower()
    return name


def iso_time(t_us: int | None) -> str | None:
    """ISO 8601 in UTC; None where there is no time or it is no date (before 1 or after 9999)."""
    if t_us is None:
        return None
    try:
        return datetime.fromtimestamp(t_us / 1e6, UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError, OSError):
        return None


def json_float(v: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become the strings ``"NaN"``, ``"Infinity"``."""
    if v is None or math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


@dataclass(slots=True)
class MetricSummary:
    count: int = 0
    first: float | None = None
    last: float | None = None
    min: float | None = None
    max: float | None = None
    last_step: int | None = None
    non_finite: int = 0

    def add(self, m: Metrics) -> None:
        if not m.values:
            return
        if self.first is None:
            self.first = m.values[0]
        self.last = m.values[-1]
        self.count += len(m.values)
        last_step = max(m.steps)
        self.last_step = last_step if self.last_step is None else max(self.last_step, last_step)
        finite = [v for v in m.values if math.isfinite(v)]
        self.non_finite += len(m.values) - len(finite)
        if finite:
            lo, hi = min(finite), max(finite)
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)


def exit_words(code: int | None) -> str:
    """An exit code in words, a signal named: ``exit code 137 (killed by SIGKILL)``.

    A negative code is a return code for a signal (``-9``, as Python's ``subprocess`` gives);
    128 + N is the shell's convention for death by signal N.

    >>> exit_words(0), exit_words(143), exit_words(-9)
    ('exit code 0', 'exit code 143 (killed by SIGTERM)', 'killed by SIGKILL')
    """
    if code is None:
        return "exit code not recorded"
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    if 128 < code < 128 + 65:
        return f"exit code {code} (killed by {_signal_name(code - 128)})"
    return f"exit code {code}"


def end_state(
    exit_code: int | None, *, cause: str | None = None, lost_contact: str | None = None
) -> str:
    """How an ended run ended, in one word or two: ``finished`` (exit 0), ``failed`` (another
    code, a signal, or a ``cause`` such as the OOM killer), ``lost contact`` (the collector
    ended it when its producer vanished), ``ended`` (no exit code recorded).

    >>> end_state(0), end_state(137), end_state(None), end_state(None, lost_contact="gone")
    ('finished', 'failed', 'ended', 'lost contact')
    """
    if cause is not None:
        return "failed"
    if lost_contact is not None:
        return "lost contact"
    if exit_code is None:
        return "ended"
    return "finished" if exit_code == 0 else "failed"


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def event_traceback(e: Event) -> str | None:
    """The traceback an exception event carries (``detail["traceback"]``), if any."""
    tb = e.detail.get("traceback") if isinstance(e.detail, dict) else None
    return tb if isinstance(tb, str) and tb.strip() else None


_DIGITS = re.compile(r"\d+")


def fold_key(e: Event) -> tuple[Any, ...] | None:
    """Events with the same key are "like events", folded into one line by ``inspect``.

    Same kind, severity and run, and: the same detector (anomalies); else the same detail
    fields (``gpu not sampled: ...`` and ``thermal not sampled: ...`` both have ``source`` and
    ``skipped``); else, for events without detail, the same message up to its numbers. An
    event with a traceback (a crash) is never folded (None).
    """
    if e.kind == "exception" or event_traceback(e) is not None:
        return None
    detail = e.detail if isinstance(e.detail, dict) else {}
    detector = detail.get("detector")
    if isinstance(detector, str):
        shape: Any = ("detector", detector)
    elif detail:
        shape = ("fields", tuple(sorted(str(k) for k in detail)))
    else:
        shape = ("message", _DIGITS.sub("#", e.message)[:200])
    return (e.kind, e.severity, e.run, shape)


@dataclass(slots=True)
class EventGroup:
    """Like events (:func:`fold_key`): the first of them, how many, and when the last was."""

    first: Event
    count: int = 1
    last_t: int = 0


@dataclass(slots=True)
class MemoryPeaks:
    """The highest memory figures a run's process samples gave, in bytes (None: never given).

    ``rss_peak`` is the kernel's VmHWM of the run's largest process (``rss_peak_pid``).
    ``cgroup_peak`` is the highest cgroup peak the samples give: the collector's process sampler
    reports the run's own peak, not the cgroup's lifetime one
    (``edgescope_collector.samplers.process``).
    """

    rss: int | None = None
    rss_peak: int | None = None
    rss_peak_pid: int | None = None
    cgroup_peak: int | None = None
    cgroup_limit: int | None = None
    oom_kills: int | None = None

    def add(self, p: ProcessSample) -> None:
        self.rss = _max(self.rss, p.rss)
        hwm = p.rss_peak if p.rss_peak is not None else p.rss
        if hwm is not None and (self.rss_peak is None or hwm > self.rss_peak):
            self.rss_peak, self.rss_peak_pid = hwm, p.pid
        self.cgroup_peak = _max(self.cgroup_peak, p.cgroup_peak)
        if p.cgroup_limit is not None:
            self.cgroup_limit = p.cgroup_limit
        self.oom_kills = _max(self.oom_kills, p.oom_kills)

    def to_json(self) -> dict[str, int | None]:
        return {
            "rss_max": self.rss,
            "rss_peak": self.rss_peak,
            "rss_peak_pid": self.rss_peak_pid,
            "cgroup_peak": self.cgroup_peak,
            "cgroup_limit": self.cgroup_limit,
            "oom_kills": self.oom_kills,
        }


@dataclass(slots=True)
class CgroupSummary:
    """The run's cgroup over the run (format 1.3 process figures): where it ran, its CPU quota
    and how often that throttled it, its memory.high and how often it went over it.

    Counters are taken as their rise from the run's first sample to its last, in the same
    cgroup (a run that moves starts over in the new one).
    """

    path: str | None = None
    version: int | None = None
    quota_us: int | None = None
    period_us: int | None = None
    periods: tuple[int, int] | None = None
    """``nr_periods`` at the first and the last sample."""
    throttled: tuple[int, int] | None = None
    throttled_us: tuple[int, int] | None = None
    memory_high: int | None = None
    high_events: tuple[int, int] | None = None
    max_events: tuple[int, int] | None = None
    swap_peak: int | None = None

    def add(self, p: ProcessSample, own: bool = True) -> None:
        """Fold a sample of the run; ``own``: of the run's first process, whose cgroup is the
        run's (a child in a cgroup of its own does not move the run there)."""
        if p.cgroup is None or (not own and self.path not in (None, p.cgroup)):
            return
        if p.cgroup != self.path:
            self.path, self.version = p.cgroup, p.cgroup_version
            self.periods = self.throttled = self.throttled_us = None
            self.high_events = self.max_events = None
        self.quota_us, self.period_us = p.cpu_quota_us, p.cpu_period_us
        self.memory_high = p.memory_high
        self.periods = _span_of(self.periods, p.cpu_periods)
        self.throttled = _span_of(self.throttled, p.cpu_throttled)
        self.throttled_us = _span_of(self.throttled_us, p.cpu_throttled_us)
        self.high_events = _span_of(self.high_events, p.memory_high_events)
        self.max_events = _span_of(self.max_events, p.memory_max_events)
        self.swap_peak = _max(self.swap_peak, p.swap_current)

    @property
    def container(self) -> Container | None:
        return container_of(self.path)

    @staticmethod
    def rise(span: tuple[int, int] | None) -> int | None:
        return None if span is None else max(0, span[1] - span[0])

    @property
    def throttled_share(self) -> float | None:
        """The share of the run's enforcement periods in which its quota ran out."""
        periods, throttled = self.rise(self.periods), self.rise(self.throttled)
        if not periods or throttled is None:
            return None
        return throttled / periods

    def to_json(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        c = self.container
        share = self.throttled_share
        return {
            "path": self.path,
            "version": self.version,
            "container": c.to_json() if c is not None else None,
            "cpu_quota_us": self.quota_us,
            "cpu_period_us": self.period_us,
            "cpu_periods": self.rise(self.periods),
            "cpu_throttled": self.rise(self.throttled),
            "cpu_throttled_share": None if share is None else round(share, 4),
            "cpu_throttled_us": self.rise(self.throttled_us),
            "memory_high": self.memory_high,
            "memory_high_events": self.rise(self.high_events),
            "memory_max_events": self.rise(self.max_events),
            "swap_peak": self.swap_peak,
        }


def _span_of(span: tuple[int, int] | None, v: int | None) -> tuple[int, int] | None:
    if v is None or not isinstance(v, int):
        return span
    return (v, v) if span is None else (span[0], v)


def _max(a: int | None, b: int | None) -> int | None:
    if b is None or not isinstance(b, int):
        return a
    return b if a is None or b > a else a


@dataclass(frozen=True, slots=True)
class RunEnergy:
    """The device's energy over a run's time window, from its power records
    (:mod:`edgescope_tracing.energy`): per source, and per mark (epoch)."""

    joules: dict[str, float]
    """Per source (``rapl``, ``nvml``, ...)."""
    covered_us: int
    """Time of the window with power data."""
    steps: int | None
    """Steps of the run (last logged step - first + 1), None where it logged none."""
    marks: tuple[tuple[str, int, float], ...] = ()
    """``(text, t_us, joules)`` of each mark (a ``mark`` event, or a logged ``epoch`` that
    changed, as ``epoch N``): the energy since the previous mark (or the run's start) up to it;
    the last item, ``("end", t_us, joules)``, the rest of the run (``epoch N (to the end)``
    where epochs are logged)."""
    marks_other: int = 0

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())

    @property
    def wh(self) -> float:
        return self.total_j / 3600

    @property
    def mean_w(self) -> float | None:
        return self.total_j / (self.covered_us / 1e6) if self.covered_us > 0 else None

    @property
    def per_step_j(self) -> float | None:
        return self.total_j / self.steps if self.steps else None

    def to_json(self) -> dict[str, Any]:
        return {
            "energy_j": self.total_j,
            "energy_wh": self.wh,
            "mean_power_w": self.mean_w,
            "covered_s": self.covered_us / 1e6,
            "steps": self.steps,
            "energy_j_per_step": self.per_step_j,
            "by_source_j": dict(sorted(self.joules.items())),
            "marks": [{"mark": text, "t": iso_time(t), "energy_j": j} for text, t, j in self.marks],
            "marks_not_given": self.marks_other,
        }


@dataclass(slots=True)
class RunSummary:
    run: int
    id: str
    name: str
    host: str
    pid: int
    start: int
    end: int | None = None
    exit_code: int | None = None
    dropped: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    last_t: int | None = None
    """The time of the run's last record (where a run that never ended stopped)."""
    last_step: int | None = None
    lost_contact: str | None = None
    """Why the collector ended the run itself (its producer vanished), from its event."""
    memory: MemoryPeaks = field(default_factory=MemoryPeaks)
    first_step: int | None = None
    energy: RunEnergy | None = None
    """None where no power source covered the run's time window."""
    cgroup: CgroupSummary = field(default_factory=CgroupSummary)
    cause: str | None = None
    """Why the run ended, where its run end says (format 1.3): the OOM killer, for one."""
    _vanished: tuple[int, str] | None = None
    _e_start: Probe | None = None
    _e_end: Probe | None = None
    _e_marks: list[tuple[str, Probe]] = field(default_factory=list)
    _e_marks_other: int = 0
    _epoch: float | None = None

    def mark_energy(self, text: str, probe: Probe) -> None:
        """A point the run's energy is split at (a mark, the end of a logged epoch)."""
        if len(self._e_marks) < MARKS_KEPT:
            self._e_marks.append((text, probe))
        else:
            self._e_marks_other += 1

    @property
    def ended(self) -> bool:
        return self.end is not None

    def seen(self, t_us: int) -> None:
        if t_us and (self.last_t is None or t_us > self.last_t):
            self.last_t = t_us

    @property
    def state(self) -> str:
        """``finished`` (exit 0), ``failed`` (another code, or a ``cause`` such as the OOM
        killer), ``ended`` (no code recorded),
        ``lost contact`` (the collector ended it: its producer vanished), ``lost`` (no end)."""
        if self.end is None:
            return "lost"
        return end_state(self.exit_code, cause=self.cause, lost_contact=self.lost_contact)


@dataclass(slots=True)
class TraceSummary:
    format_version: str
    bytes: int
    records: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    runs: list[RunSummary] = field(default_factory=list)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    events_total: int = 0
    event_kinds: Counter[str] = field(default_factory=Counter)
    events_head: list[Event] = field(default_factory=list)
    events_tail: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    groups: dict[Any, EventGroup] = field(default_factory=dict)
    """Like events by :func:`fold_key`, in the order of their first event."""
    ungrouped: int = 0
    """Events of groups beyond :data:`EVENT_GROUPS` (counted in ``event_kinds`` only)."""
    crashes: list[Event] = field(default_factory=list)
    """Events that carry a traceback (an exception the SDK caught, the stderr tail of a command
    that failed under ``edgescope record``): the first :data:`CRASHES_KEPT`."""
    crashes_total: int = 0
    stack_samples: int = 0
    stack_backends: set[str] = field(default_factory=set)
    stack_notes: list[str] = field(default_factory=list)
    """Why there are no stacks, or what they can name (``no_stacks``/``stacks_note`` in an
    event's detail, as ``record`` writes them): the first :data:`CRASHES_KEPT`, each once."""
    functions_self: Counter[str] = field(default_factory=Counter)
    functions_total: Counter[str] = field(default_factory=Counter)
    functions_other: int = 0
    runs_other: int = 0
    """Run starts beyond :data:`RUNS_KEPT` runs, counted only."""
    metric_values_other: int = 0
    """Values of metric keys beyond :data:`METRIC_KEYS_KEPT`, counted only."""
    """Samples whose function did not fit in :data:`FUNCTIONS_KEPT` names."""
    gpu_memory: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    """GPU index -> (name, peak memory used, memory total), over the trace's GPU samples."""
    energy_sources: list[str] = field(default_factory=list)
    """Sources of the trace's power records that gave a figure (``rapl``, ``nvml``, ...)."""
    energy_wraps: int = 0
    energy_resets: int = 0
    damage: list[Damage] = field(default_factory=list)
    first_t: int | None = None
    last_t: int | None = None
    indexed: bool = False

    @property
    def events(self) -> list[Event]:
        """The events kept: all of them up to ``2 * EVENTS_KEPT``, else the first and last."""
        return [*self.events_head, *self.events_tail]

    @property
    def events_omitted(self) -> int:
        return self.events_total - len(self.events_head) - len(self.events_tail)

    @property
    def damaged_frames(self) -> int:
        return sum(1 for d in self.damage if not d.truncated)

    @property
    def truncated(self) -> bool:
        return any(d.truncated for d in self.damage)

    def top_functions(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """``(function, self samples, total samples)``, most often on top of the stack first."""
        ranked = sorted(
            self.functions_total,
            key=lambda k: (-self.functions_self.get(k, 0), -self.functions_total[k], k),
        )
        return [(k, self.functions_self.get(k, 0), self.functions_total[k]) for k in ranked[:limit]]

    def _add_event(self, e: Event) -> None:
        self.events_total += 1
        self.event_kinds[e.kind] += 1
        detail = e.detail if isinstance(e.detail, dict) else {}
        note = detail.get("no_stacks") or detail.get("stacks_note")
        fresh = isinstance(note, str) and note not in self.stack_notes
        if fresh and isinstance(note, str) and len(self.stack_notes) < CRASHES_KEPT:
            self.stack_notes.append(note)
        if len(self.events_head) < EVENTS_KEPT:
            self.events_head.append(e)
        else:
            self.events_tail.append(e)
        if event_traceback(e) is not None:
            self.crashes_total += 1
            if len(self.crashes) < CRASHES_KEPT:
                self.crashes.append(e)
        key = fold_key(e)
        if key is None:
            key = ("single", self.events_total)
        g = self.groups.get(key)
        if g is not None:
            g.count += 1
            g.last_t = max(g.last_t, e.t_us)
        elif len(self.groups) < EVENT_GROUPS:
            self.groups[key] = EventGroup(e, 1, e.t_us)
        else:
            self.ungrouped += 1

    def _add_stacks(self, rec: StackSamples) -> None:
        for stack, n in rec.samples:
            self.stack_samples += n
            if not stack:
                continue
            names = {f.function for f in stack}
            if (
                any(name not in self.functions_total for name in names)
                and len(self.functions_total) + len(names) > FUNCTIONS_KEPT
            ):
                self.functions_other += n
                continue
            self.functions_self[stack[-1].function] += n
            for name in names:
                self.functions_total[name] += n
        self.stack_backends.add(rec.backend)

    def _add_gpu(self, g: GpuSample) -> None:
        if g.mem_used is None:
            return
        old = self.gpu_memory.get(g.index)
        if old is None or g.mem_used > old[1]:
            self.gpu_memory[g.index] = (g.name, g.mem_used, g.mem_total)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "bytes": self.bytes,
            "records": self.records,
            "kinds": dict(sorted(self.kinds.items())),
            "runs": [
                {
                    "id": r.id,
                    "name": r.name,
                    "host": r.host,
                    "pid": r.pid,
                    "start": iso_time(r.start),
                    "end": iso_time(r.end),
                    "exit_code": r.exit_code,
                    "exit": exit_words(r.exit_code) if r.ended else None,
                    "state": r.state,
                    "lost_contact": r.lost_contact,
                    "dropped": r.dropped,
                    "last_record": iso_time(r.last_t),
                    "last_step": r.last_step,
                    "memory": r.memory.to_json(),
                    **(
                        {
                            "energy_j": r.energy.total_j,
                            "energy_j_per_step": r.energy.per_step_j,
                            "energy": r.energy.to_json(),
                        }
                        if r.energy is not None
                        else {}
                    ),
                    "cause": r.cause,
                    "cgroup": r.cgroup.to_json(),
                }
                for r in self.runs
            ],
            "energy_sources": list(self.energy_sources),
            "energy_counter_wraps": self.energy_wraps,
            "energy_counter_resets": self.energy_resets,
            "metrics": {
                k: {
                    "count": m.count,
                    "first": json_float(m.first),
                    "last": json_float(m.last),
                    "min": json_float(m.min),
                    "max": json_float(m.max),
                    "last_step": m.last_step,
                    "non_finite": m.non_finite,
                }
                for k, m in sorted(self.metrics.items())
            },
            "events": [_event_json(e) for e in self.events],
            "events_total": self.events_total,
            "events_omitted": self.events_omitted,
            "event_kinds": dict(sorted(self.event_kinds.items())),
            "crashes": [_event_json(e) for e in self.crashes],
            "crashes_total": self.crashes_total,
            "stacks": {
                "samples": self.stack_samples,
                "backend": sorted(self.stack_backends),
                "notes": list(self.stack_notes),
                "top_functions": [
                    {"function": f, "self": n_self, "total": n_total}
                    for f, n_self, n_total in self.top_functions()
                ],
                "samples_not_counted_by_function": self.functions_other,
            },
            "gpu_memory": [
                {"index": i, "name": name, "peak_used": peak, "total": total}
                for i, (name, peak, total) in sorted(self.gpu_memory.items())
            ],
            "damaged_frames": self.damaged_frames,
            "truncated": self.truncated,
            "damage": [
                {
                    "offset": d.offset,
                    "length": d.length,
                    "reason": d.reason,
                    "truncated": d.truncated,
                }
                for d in self.damage
            ],
            "indexed": self.indexed,
            "runs_not_summarized": self.runs_other,
            "metric_values_not_summarized": self.metric_values_other,
            "start": iso_time(self.first_t),
            "end": iso_time(self.last_t),
        }


def _event_json(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": iso_time(e.t_us),
        "kind": e.kind,
        "message": e.message,
        "severity": e.severity,
        "run": e.run,
    }
    tb = event_traceback(e)
    if tb is not None:
        out["traceback"] = tb
    return out


def summarize_file(reader: TraceReader) -> TraceSummary:
    """Read a whole trace file and summarize it, damage and index included."""
    s = summarize(reader, format_version="{}.{}".format(*reader.version), size=reader.size)
    s.damage = list(reader.damage)
    s.indexed = reader.indexed
    return s


def summarize(records: Iterable[Record], *, format_version: str, size: int) -> TraceSummary:
    """Fold records into a summary (damage is the caller's to add)."""
    s = TraceSummary(format_version=format_version, bytes=size)
    meter = EnergyMeter()
    runs: dict[str, RunSummary] = {}
    by_ref: dict[int, RunSummary] = {}
    for rec in records:
        s.records += 1
        s.kinds[kind_name(rec)] += 1
        t = rec.t_us
        if t:
            s.first_t = t if s.first_t is None else min(s.first_t, t)
            s.last_t = t if s.last_t is None else max(s.last_t, t)
        if isinstance(rec, Metrics):
            ms = s.metrics.get(rec.key)
            if ms is None and len(s.metrics) < METRIC_KEYS_KEPT:
                ms = s.metrics[rec.key] = MetricSummary()
            if ms is not None:
                ms.add(rec)
            else:
                s.metric_values_other += len(rec.values)
            if rec.times_us:
                s.last_t = max(s.last_t or 0, rec.times_us[-1])
            rs = by_ref.get(rec.run)
            if rs is not None and rec.steps:
                rs.seen(max(rec.times_us))
                top, low = max(rec.steps), min(rec.steps)
                rs.last_step = top if rs.last_step is None else max(rs.last_step, top)
                rs.first_step = low if rs.first_step is None else min(rs.first_step, low)
                if rec.key in EPOCH_KEYS:
                    _epochs(rs, rec, meter)
        elif isinstance(rec, RunStart | Keyframe):
            for r in (rec,) if isinstance(rec, RunStart) else rec.runs:
                if r.run_id not in runs:
                    if len(runs) >= RUNS_KEPT:
                        s.runs_other += isinstance(rec, RunStart)
                        by_ref.pop(r.run, None)
                        continue
                    runs[r.run_id] = RunSummary(
                        r.run, r.run_id, r.name, r.host, r.pid, r.t_us, config=r.config
                    )
                    where = r.device.get("cgroup") if isinstance(r.device, dict) else None
                    if isinstance(where, str):
                        runs[r.run_id].cgroup.path = where  # until a sample says more
                    runs[r.run_id].seen(r.t_us)
                    runs[r.run_id]._e_start = meter.probe(r.t_us)
                    s.runs.append(runs[r.run_id])
                by_ref[r.run] = runs[r.run_id]
        elif isinstance(rec, RunEnd):
            rs = by_ref.get(rec.run)
            if rs is not None:
                rs.end, rs.exit_code, rs.dropped = rec.t_us, rec.exit_code, rec.dropped
                rs._e_end = meter.probe(rec.t_us)
                rs.cause = rec.cause
                if rec.exit_code is None and rs._vanished and rs._vanished[0] == rec.t_us:
                    rs.lost_contact = rs._vanished[1]
        elif isinstance(rec, Event):
            s._add_event(rec)
            rs = by_ref.get(rec.run) if rec.run >= 0 else None
            if rs is not None:
                _vanished(rs, rec)
                if rec.kind == "mark" and rs.end is None:
                    rs.mark_energy(rec.message, meter.probe(rec.t_us))
        elif isinstance(rec, ProcessSample):
            rs = by_ref.get(rec.run)
            if rs is not None:
                rs.memory.add(rec)
                rs.cgroup.add(rec, own=rec.pid == rs.pid)
                rs.seen(rec.t_us)
        elif isinstance(rec, StackSamples):
            s._add_stacks(rec)
            rs = by_ref.get(rec.run)
            if rs is not None:
                rs.seen(rec.t_us)
        elif isinstance(rec, GpuSample):
            s._add_gpu(rec)
            meter.add_gpu(rec)
        elif isinstance(rec, PowerSample):
            meter.add(rec)
    _settle_energy(s, meter)
    return s


def _epochs(rs: RunSummary, m: Metrics, meter: EnergyMeter) -> None:
    """A logged epoch number that changes ends the epoch before it: the run's energy is split
    there, as at a mark, and the span is named ``epoch N``."""
    for t, v in zip(m.times_us, m.values, strict=True):
        if not math.isfinite(v):
            continue
        if rs._epoch is not None and v != rs._epoch:
            rs.mark_energy(f"epoch {rs._epoch:g}", meter.probe(t))
        rs._epoch = v


def _settle_energy(s: TraceSummary, meter: EnergyMeter) -> None:
    """Each run's energy over its window: from its start to its end (or, for a run that never
    ended, to its last record), where some power source covered the window."""
    for rs in s.runs:
        if rs._e_end is None:
            rs._e_end = meter.probe(rs.last_t if rs.last_t is not None else rs.start)
    meter.finish()
    s.energy_sources = sorted(meter.sources)
    s.energy_wraps, s.energy_resets = meter.wraps, meter.resets
    for rs in s.runs:
        start = rs._e_start.point if rs._e_start is not None else None
        end = rs._e_end.point if rs._e_end is not None else None
        if start is None or end is None:
            continue
        span = end.minus(start)
        if span.covered_us <= 0:
            continue
        marks = []
        prev: EnergyPoint = start
        for text, pr in rs._e_marks:
            if pr.point is None or pr.point.t_us > end.t_us:
                continue
            marks.append((text, pr.point.t_us, pr.point.minus(prev).total))
            prev = pr.point
        if marks:
            last = "end" if rs._epoch is None else f"epoch {rs._epoch:g} (to the end)"
            marks.append((last, end.t_us, end.minus(prev).total))
        steps = (
            rs.last_step - rs.first_step + 1
            if rs.last_step is not None and rs.first_step is not None
            else None
        )
        rs.energy = RunEnergy(span.joules, span.covered_us, steps, tuple(marks), rs._e_marks_other)


def _vanished(rs: RunSummary, e: Event) -> None:
    """Note the event a collector's ingest writes, with the same time, just before the
    ``RunEnd(exit_code=None)`` it gives a run whose producer vanished (its detail holds the
    producer's ``pid`` and the ``reason``); other events of the run only move its last time."""
    detail = e.detail if isinstance(e.detail, dict) else {}
    reason = detail.get("reason")
    if e.kind == "anomaly" and isinstance(reason, str) and "pid" in detail and rs.end is None:
        rs._vanished = (e.t_us, reason)
    else:
        rs.seen(e.t_us)
