"""Memory detectors: growth towards the limit, reclaim throttling at memory.high, and the OOM
killer (which also says why a run it ended ended: :meth:`OomKill.end_cause`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edgescope_tracing.causes import memory_limit_file, oom_kill_cause
from edgescope_tracing.records import Event, ProcessSample, Record, RunEnd, SystemSample
from edgescope_tracing.thresholds import OOM_LIKELY_SHARE

from .base import MiB, anomaly, duration, mib
from .stats import linear_fit

__all__ = ["MemoryGrowth", "MemoryHigh", "OomKill"]

SIGKILL_CODES = (-9, 137)
"""How a SIGKILL shows in ``RunEnd.exit_code``: a return code (-9), or 128 + 9."""


@dataclass
class _MemState:
    points: deque[tuple[int, float]] = field(default_factory=deque)
    pending_t: int | None = None
    pending_rss: int = 0
    pending_cg: int | None = None
    pending_limit: int | None = None
    warned: bool = False
    grew_warned: bool = False


class MemoryGrowth:
    """Memory growing towards the limit: a least-squares fit over ``window_s`` projects when
    the run's cgroup reaches its limit (or, without a limit, when its processes' RSS eats the
    memory still available); an event when that is within ``horizon_s``.

    A fit needs ``min_points`` samples over at least a third of the window, an r² of at least
    ``min_r2`` (steady growth, not noise), and growth of at least ``min_growth`` bytes over
    the window. One event per episode: it re-arms when the projection moves beyond twice the
    horizon.

    A leak on a machine with plenty of memory is hours from the limit, so the same steady fit
    is also measured against the run itself: an event (severity 1) when its usage grew over the
    window by at least ``baseline_ratio`` of what it used at the window's start (and by
    ``min_growth``), once per episode. Growth of a run that is large already (a model loading)
    is a small share of it; a leak in a small run is not.

    Reads ``ProcessSample`` (and ``SystemSample`` for available memory); emits
    ``memory_growth``, severity 1 (2 when the limit is less than a fifth of the horizon away).
    Thresholds (defaults): ``horizon_s`` 600 s, ``window_s`` 60 s, ``min_points`` 10,
    ``min_r2`` 0.8, ``min_growth`` 16 MiB over the window, ``baseline_ratio`` 0.5 (+50 %).
    """

    name = "memory_growth"

    def __init__(
        self,
        horizon_s: float = 600.0,
        window_s: float = 60.0,
        min_points: int = 10,
        min_r2: float = 0.8,
        min_growth: int = 16 * MiB,
        baseline_ratio: float = 0.5,
    ) -> None:
        self.baseline_ratio = baseline_ratio
        self.horizon_s = horizon_s
        self.window_us = int(window_s * 1e6)
        self.min_points = min_points
        self.min_r2 = min_r2
        self.min_growth = min_growth
        self._runs: dict[int, _MemState] = {}
        self._available: int | None = None

    def flush(self) -> list[Event]:
        """Nothing is held back for context."""
        return []

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
            headroom: float | None = st.pending_limit - usage
        else:
            headroom = self._available
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
                st.warned = st.grew_warned = False
            return None
        if headroom is None:
            return self._grown(run, st, t, usage, slope, r2)
        eta = max(0.0, headroom) / slope
        if eta > 2 * self.horizon_s:
            st.warned = False
        if st.warned or eta > self.horizon_s or r2 < self.min_r2:
            return None if st.warned else self._grown(run, st, t, usage, slope, r2)
        st.warned = True
        rate = f"{slope / MiB:.1f} MiB/s"
        if limited:
            assert st.pending_limit is not None
            what = f"reaches its {mib(st.pending_limit)} cgroup limit"
            whose = "cgroup memory"
        else:
            what = f"uses up the {mib(headroom)} still available"
            whose = "processes' memory"
        return anomaly(
            "memory_growth",
            f"run {run}'s {whose} grows {rate}: at this rate it {what} in {duration(eta)}",
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

    def _grown(
        self, run: int, st: _MemState, t: int, usage: float, slope: float, r2: float
    ) -> Event | None:
        """The run's own steady growth over the window, far from any limit: said once per
        episode."""
        base = st.points[0][1]
        grown = slope * (st.points[-1][0] - st.points[0][0]) / 1e6
        enough = max(self.min_growth, base * self.baseline_ratio)
        if st.grew_warned or r2 < self.min_r2 or grown < enough:
            return None
        st.grew_warned = True
        span = duration((st.points[-1][0] - st.points[0][0]) / 1e6)
        share = f" (+{100 * grown / base:.0f} %)" if base > 0 else ""
        return anomaly(
            "memory_growth",
            f"run {run}'s memory grows steadily, {slope / MiB:.1f} MiB/s: up {mib(int(grown))}"
            f"{share} in {span}, to {mib(int(usage))}; far from a limit yet, but a leak grows "
            "like this",
            run,
            1,
            t,
            usage=int(usage),
            window_start=int(base),
            slope_bps=round(slope),
            r2=round(r2, 3),
        )


@dataclass
class _HighState:
    first: int
    """The counter when the episode began (or at the run's first sample)."""
    last: int
    last_rise_t: int | None = None
    episode_t: int | None = None
    """When the current episode's event was given (None: no episode)."""


class MemoryHigh:
    """The run's cgroup went over its ``memory.high``: the kernel throttles its processes and
    makes them reclaim memory on every allocation beyond it, which slows them down without
    killing anything (cgroup v2).

    Reads ``ProcessSample`` (``memory_high_events``, the ``high`` counter of ``memory.events``);
    emits ``memory_high``, severity 1, at the first rise of the counter in an episode; the
    episode ends when the counter has not risen for ``quiet_s`` (30 s), and the next rise is a
    new event.
    """

    name = "memory_high"

    def __init__(self, quiet_s: float = 30.0) -> None:
        self.quiet_us = int(quiet_s * 1e6)
        self._runs: dict[tuple[int, str | None], _HighState] = {}
        """(run, cgroup path) -> its counter: a run's processes may be in several cgroups."""

    def flush(self) -> list[Event]:
        """Nothing is held back for context."""
        return []

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        for key in [k for k in self._runs if k[0] == run]:
            del self._runs[key]

    def feed(self, rec: Record) -> list[Event]:
        if not isinstance(rec, ProcessSample) or rec.run < 0 or rec.memory_high_events is None:
            return []
        n = rec.memory_high_events
        st = self._runs.get((rec.run, rec.cgroup))
        if st is None:
            self._runs[(rec.run, rec.cgroup)] = _HighState(n, n)
            return []
        if n < st.last:  # the counter restarted (the cgroup was made anew)
            st.first = st.last = n
            return []
        t = rec.t_us
        if n == st.last:
            quiet = st.last_rise_t is not None and t - st.last_rise_t >= self.quiet_us
            if st.episode_t is not None and quiet:
                st.episode_t = None  # the episode is over: the next rise is a new one
                st.first = n
            return []
        st.last, st.last_rise_t = n, t
        if st.episode_t is not None:
            return []
        st.episode_t = t
        rose = n - st.first
        high = f" ({mib(rec.memory_high)})" if rec.memory_high is not None else ""
        usage = f" at {mib(rec.cgroup_current)}" if rec.cgroup_current is not None else ""
        return [
            anomaly(
                self.name,
                f"run {rec.run}'s cgroup is over its memory.high{high}{usage}: the kernel "
                f"throttled it into reclaim {rose} time{'s' if rose > 1 else ''}, which slows "
                "every allocation",
                rec.run,
                1,
                t,
                high_events=n,
                rose=rose,
                memory_high=rec.memory_high,
                cgroup_current=rec.cgroup_current,
                cgroup=rec.cgroup,
            )
        ]


@dataclass
class _OomState:
    counts: dict[str | None, int] = field(default_factory=dict)
    """Cgroup path -> its ``oom_kill`` counter at the last sample: a run's processes may be in
    several cgroups, each with its own counter; kills before the run's first sample there are
    not the run's."""
    killed: ProcessSample | None = None
    """The sample in which a kill was counted (its limit is the one that was reached)."""
    last: ProcessSample | None = None
    """The last sample with cgroup memory figures."""
    live: ProcessSample | None = None
    """The last of those taken while the process lived (the collector's last read at the
    run's end comes after the kill has let the memory go)."""


class OomKill:
    """The OOM killer struck in the run's cgroup, or the run died of SIGKILL at its limit.

    Reads ``ProcessSample`` (``oom_kills``, the cgroup's counter, followed per cgroup) and
    ``RunEnd``; emits ``oom_kill``, severity 2. Thresholds: any rise of the counter; a SIGKILL
    (exit -9 or 137) with the cgroup at 90 % of its limit or more in the last sample.

    :meth:`end_cause` gives the words for the run's ``RunEnd.cause`` from the same state.
    """

    name = "oom_kill"

    def __init__(self) -> None:
        self._runs: dict[int, _OomState] = {}

    def flush(self) -> list[Event]:
        """Nothing is held back for context."""
        return []

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._runs.pop(run, None)

    def end_cause(self, end: RunEnd) -> str | None:
        """Why the run ended, where the OOM killer ended it (None: it did not, or the run ended
        itself with exit code 0). Call before the run end is fed."""
        st = self._runs.get(end.run)
        if st is None or end.exit_code == 0 or st.last is None:
            return None
        if st.killed is not None:
            k = st.killed
            survived = end.exit_code is not None and end.exit_code not in SIGKILL_CODES
            return oom_kill_cause(k.cgroup_limit, k.cgroup_version, survived=survived)
        live = st.live or st.last
        if end.exit_code in SIGKILL_CODES and _share(live) >= OOM_LIKELY_SHARE:
            return oom_kill_cause(live.cgroup_limit, live.cgroup_version, likely=True)
        return None

    def feed(self, rec: Record) -> list[Event]:
        if isinstance(rec, ProcessSample) and rec.run >= 0:
            return self._sample(rec)
        if isinstance(rec, RunEnd) and rec.exit_code in SIGKILL_CODES:
            known = self._runs.get(rec.run)
            if known is None or known.killed is not None:
                return []  # no figures to go on, or the counter said it already
            last = known.live or known.last
            if last and last.cgroup_current and last.cgroup_limit:
                share = _share(last)
                if share >= OOM_LIKELY_SHARE:
                    return [
                        anomaly(
                            "oom_kill",
                            f"run {rec.run} was killed (SIGKILL) with its cgroup at "
                            f"{share:.0%} of its {mib(last.cgroup_limit)} limit: most likely "
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

    def _sample(self, rec: ProcessSample) -> list[Event]:
        st = self._runs.setdefault(rec.run, _OomState())
        alive = st.live
        if rec.cgroup_current is not None or rec.cgroup_limit is not None:
            st.last = rec
            if rec.rss is not None:
                st.live = rec
        if rec.oom_kills is None:
            return []
        before = st.counts.get(rec.cgroup)
        st.counts[rec.cgroup] = rec.oom_kills
        if before is None or rec.oom_kills <= before:
            return []  # the first sample there, the same count, or a counter that restarted
        n = rec.oom_kills - before
        st.killed = rec
        usage = ""
        # What the cgroup used when it was killed: the kill lets memory go at once, so the
        # sample before it may say more than this one.
        current = max(rec.cgroup_current or 0, alive.cgroup_current or 0 if alive else 0)
        if current and rec.cgroup_limit:
            file = memory_limit_file(rec.cgroup_version).replace("memory limit", "limit")
            usage = f" at {mib(current)} of its {mib(rec.cgroup_limit)} {file}"
        return [
            anomaly(
                "oom_kill",
                f"the OOM killer killed {n} process{'es' if n > 1 else ''} in run "
                f"{rec.run}'s cgroup{usage}",
                rec.run,
                2,
                rec.t_us,
                killed=n,
                oom_kills=rec.oom_kills,
                cgroup_current=current or None,
                cgroup_limit=rec.cgroup_limit,
                cgroup=rec.cgroup,
            )
        ]


def _share(p: ProcessSample) -> float:
    if not p.cgroup_current or not p.cgroup_limit:
        return 0.0
    return p.cgroup_current / p.cgroup_limit
