"""What the dashboard draws, as pure functions of a ``RunState`` and a cursor.

Each function returns :class:`~edgescope_tui.widgets.chart.ChartSpec` values (plain data); the
screen hands them to its charts. Nothing here touches a widget, so the benchmarks and tests
build exactly what the screen shows without an App.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from edgescope_tracing.containers import container_of
from edgescope_tracing.signals import CLOCK_EVENT_REASONS, step_time_unit
from edgescope_tracing.text import escape as escape_text
from edgescope_tracing.thresholds import memory_level, temperature_level

from .chartspec import PALETTE, Band, ChartSpec, Line, fmt_bytes, fmt_number, fmt_offset
from .series import Series
from .state import RunState

__all__ = [
    "bands",
    "ticks",
    "batch_size",
    "metric_spec",
    "step_spec",
    "memory_spec",
    "thermal_spec",
    "system_specs",
    "overview_specs",
    "filter_keys",
    "metric_format",
    "run_place",
]

THROTTLE_BG = "#5f1f1f"
GAP_BG = "#5f0000"
EVENT_COLORS = ("#87d787", "#ffd75f", "#ff5f5f")
LEVEL_COLORS = EVENT_COLORS
"""A value's colour by its level against a detector's threshold: fine, warning, at the limit."""


def run_place(s: RunState, run: int) -> str | None:
    """Where the run runs, for the header: its container (``Docker container 4f2a1b3c9d0e``),
    else its cgroup (``cgroup /system.slice/train.service``); None where no sample said."""
    ps = s.proc.get(run)
    path = ps.cgroup_path if ps is not None else None
    if path is None and (info := s.runs.get(run)) is not None:
        where = info.device.get("cgroup")  # the SDK's own word, where no sample said
        path = where if isinstance(where, str) else None
    if not path or path == "/":
        return None
    box = container_of(path)
    return box.text if box is not None else f"cgroup {path}"


def time_fmt(t0: int) -> Callable[[float], str]:
    """Axis labels as time since ``t0``."""
    return lambda v: fmt_offset(v - t0)


def ms(v: float) -> str:
    return f"{fmt_number(v)} ms" if v < 1e4 else f"{fmt_number(v / 1e3)} s"


def mean_tail(s: Series, end: int, k: int = 50) -> float | None:
    """The mean of the last ``k`` finite values before ``end``."""
    vals = [v for v in s.y[max(0, end - k) : end] if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def bands(s: RunState, end: int | None) -> tuple[Band, ...]:
    bands = [Band(sp.start_us, sp.end_us, THROTTLE_BG, sp.source) for sp in s.spans(end)]
    for g in s.stream.gaps.view():
        bands.append(Band(g.t_us, g.end_us or (s.stream.last_us or g.t_us), GAP_BG, "gap"))
    return tuple(bands)


def ticks(s: RunState, end: int | None) -> tuple[tuple[float, str], ...]:
    return tuple(
        (float(e.t_us), EVENT_COLORS[min(max(e.severity, 0), 2)]) for e in s.events_until(end)
    )


def filter_keys(keys: list[str], text: str) -> list[str]:
    """The metric keys whose name holds every word of ``text`` (any case); all for none."""
    words = text.lower().split()
    return [k for k in keys if all(w in k.lower() for w in words)]


def batch_size(s: RunState, run: int) -> float | None:
    info = s.runs.get(run)
    if info is None:
        return None
    for k in ("batch_size", "batch", "global_batch_size"):
        v = info.config.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def metric_spec(s: RunState, run: int, key: str, end: int | None) -> ChartSpec:
    series = s.metrics.get((run, key)) or Series.empty()
    n = series.count_until(end)
    log = (
        "loss" in key.lower()
        and not math.isnan(series.lo)
        and series.lo > 0
        and series.hi / series.lo > 100
    )
    sub = f"{series.non_finite} non-finite" if series.non_finite else ""
    last_step = series.x[n - 1] if n else None
    step = f"step {last_step:.0f}" if last_step is not None else ""
    fmt, scale = metric_format(key)
    shown = escape_text(key)  # a key from the trace: no control character to the terminal
    return ChartSpec(
        shown,
        (Line(shown, series, PALETTE[0], end=n, scale=scale),),
        log=log,
        fmt=fmt,
        subtitle=" ".join(x for x in (step, sub) if x),
    )


def metric_format(key: str) -> tuple[Callable[[float], str], float]:
    """How a metric's values read, and the factor from its logged unit to that: units where
    the name says them (a step time in ms, whatever unit it was logged in; byte counts in
    binary units); other metrics are plain numbers."""
    unit = step_time_unit(key)
    if unit is not None:
        return ms, unit * 1e3
    if _is_bytes(key):
        return fmt_bytes, 1.0
    return fmt_number, 1.0


def _is_bytes(key: str) -> bool:
    """A metric that counts bytes, by the names frameworks give them (``cuda_alloc``,
    ``cuda_max_alloc``, ``mem_bytes``, ``rss``)."""
    k = key.lower()
    return k.endswith(("_bytes", "_alloc", "_allocated", "_reserved")) or k in ("rss", "vram")


def step_spec(s: RunState, run: int, end: int | None) -> ChartSpec:
    st = s.step_seconds(run)
    if st is None:
        return ChartSpec("step time", empty="no step timing yet")
    n = st.count_until(end)
    mean = mean_tail(st, n)
    sub = ""
    if mean:
        sub = f"{1 / mean:.1f} steps/s"
        batch = batch_size(s, run)
        if batch:
            sub += f" · {fmt_number(batch / mean)} samples/s"
    per_step = s.joules_per_step(run, end)
    if per_step is not None:  # first: beside the step time, before what may be cut
        sub = f"{fmt_number(per_step)} J/step" + (f" · {sub}" if sub else "")
    return ChartSpec(
        "step time",
        (Line("step", st, PALETTE[1], end=n, scale=1000),),
        fmt=ms,
        subtitle=sub,
        robust=True,
    )


def memory_spec(s: RunState, run: int, end: int | None, t0: int, t1: int) -> ChartSpec:
    lines: list[Line] = []
    facts: list[str] = []
    hlines: list[tuple[float, str, str]] = []
    p = s.proc.get(run)
    if p is not None and len(p.rss):
        n = p.rss.count_until(end)
        lines.append(Line("RSS", p.rss, PALETTE[0], end=n))
        if n:
            facts.append(f"RSS {fmt_bytes(p.rss.y[n - 1])}")
        if p.rss_peak:
            facts.append(f"peak {fmt_bytes(p.rss_peak)}")
    if p is not None and len(p.cgroup):
        lines.append(Line("cgroup", p.cgroup, PALETTE[2], end=p.cgroup.count_until(end)))
    alerts: list[tuple[str, str]] = []
    if p is not None and p.cgroup_limit:
        hlines.append((float(p.cgroup_limit), f"limit {fmt_bytes(p.cgroup_limit)}", "red"))
        facts.append(f"cgroup limit {fmt_bytes(p.cgroup_limit)}")
        n = p.cgroup.count_until(end)
        if n:
            used = p.cgroup.y[n - 1]
            level = memory_level(used, p.cgroup_limit)
            share = used / p.cgroup_limit
            alerts.append((f"cgroup at {share:.0%} of its limit", LEVEL_COLORS[level]))
    for i, g in sorted(p.gpu_mem.items()) if p is not None else ():
        n = g.count_until(end)
        lines.append(Line(f"GPU{i}", g, PALETTE[5 + i % 2], end=n))
        if n:
            facts.append(f"GPU{i} {fmt_bytes(g.y[n - 1])}")
    for key, label, color in (
        ("cuda_alloc", "CUDA", PALETTE[1]),
        ("cuda_max_alloc", "CUDA peak", PALETTE[3]),
    ):
        ser = s.metrics.get((run, key))
        if ser is not None and len(ser):
            n = ser.count_until(end)
            lines.append(Line(label, ser, color, end=n))
            if key == "cuda_max_alloc" and n:
                peak = ser.minmax(0, n)
                if peak is not None:
                    facts.append(f"CUDA peak {fmt_bytes(peak[1])}")
    if not lines and len(s.system.mem_used):
        lines.append(
            Line("used", s.system.mem_used, PALETTE[0], s.system.mem_used.count_until(end))
        )
        if s.system.mem_total:
            hlines.append((float(s.system.mem_total), "total", "red"))
    return ChartSpec(
        "memory",
        tuple(lines),
        x0=t0,
        x1=t1,
        by_time=True,
        fmt=fmt_bytes,
        x_fmt=time_fmt(t0),
        hlines=tuple(hlines),
        # the peaks first: on a narrow terminal the end of the line is what is cut
        subtitle=" · ".join(sorted(facts, key=lambda f: "peak" not in f)),
        alerts=tuple(alerts),
        y_floor=0.0,
        peak=True,
        empty="no memory samples",
        ticks=ticks(s, end),
    )


def trip_alerts(s: RunState, end: int | None) -> tuple[tuple[str, str], ...]:
    """The zone nearest its trip point at ``end``, coloured as the detectors judge it
    (:func:`edgescope_tracing.thresholds.temperature_level`); nothing without trip points."""
    worst: tuple[float, str, float, float] | None = None
    for name, trip in s.thermal.zone_trips.items():
        z = s.thermal.zones.get(name)
        n = z.count_until(end) if z is not None else 0
        if z is None or not n:
            continue
        temp = z.y[n - 1]
        if worst is None or temp - trip > worst[0]:
            worst = (temp - trip, name, temp, trip)
    if worst is None:
        return ()
    _, name, temp, trip = worst
    level = temperature_level(temp, trip, s.thermal.zone_hyst.get(name, 0.0))
    return ((f"{name} {temp:.1f}°C of {trip:.0f}°C trip", LEVEL_COLORS[level]),)


def thermal_spec(s: RunState, end: int | None, t0: int, t1: int) -> ChartSpec:
    lines: list[Line] = []
    facts: list[str] = []
    colors = iter(PALETTE * 4)
    for idx, g in s.gpus.items():
        if len(g.temp_c):
            n = g.temp_c.count_until(end)
            lines.append(Line(f"gpu{idx}", g.temp_c, next(colors), end=n))
        idle = CLOCK_EVENT_REASONS[0x1]  # gpu_idle: a reason, but not one worth showing
        reasons = ", ".join(r for r in g.reasons if r != idle) or "none"
        facts.append(f"gpu{idx} reasons: {reasons}")
    for name, z in s.thermal.zones.items():
        lines.append(Line(name, z, next(colors), end=z.count_until(end)))
    spans = s.spans(end)
    facts.append(f"throttled: {len(spans)} period(s)" if spans else "not throttled")
    alerts = trip_alerts(s, end)
    hlines = tuple(
        (trip, f"{name} trip {trip:.0f}°C", "red")
        for name, trip in list(s.thermal.zone_trips.items())[:1]
    )
    return ChartSpec(
        "thermal °C",
        tuple(lines),
        x0=t0,
        x1=t1,
        by_time=True,
        x_fmt=time_fmt(t0),
        bands=bands(s, end),
        ticks=ticks(s, end),
        subtitle=" · ".join(facts),
        alerts=alerts,
        hlines=hlines,
        empty="no thermal samples",
    )


def system_specs(s: RunState, run: int, end: int | None, t0: int, t1: int) -> dict[str, ChartSpec]:
    """The system tab: throughput, clocks (throttled periods shaded), power, CPU."""
    out: dict[str, ChartSpec] = {}
    st = s.step_seconds(run)
    if st is not None:
        batch = batch_size(s, run)
        n = st.count_until(end)
        title = "throughput samples/s" if batch else "throughput steps/s"
        spec = ChartSpec(
            title,
            (Line("rate", st, PALETTE[2], end=n, invert=True, scale=batch or 1.0),),
            robust=True,
        )
    else:
        spec = ChartSpec("throughput", empty="no step timing yet")
    out["throughput"] = spec
    clocks: list[Line] = []
    power: list[Line] = []
    hl: list[tuple[float, str, str]] = []
    facts: list[str] = []
    for idx, g in s.gpus.items():
        if len(g.sm_clock_mhz):
            n = g.sm_clock_mhz.count_until(end)
            clocks.append(Line(f"gpu{idx} SM", g.sm_clock_mhz, PALETTE[idx % 7], end=n))
            if g.max_sm_clock_mhz:
                facts.append(f"gpu{idx} max {g.max_sm_clock_mhz} MHz")
        if len(g.power_w):
            n = g.power_w.count_until(end)
            power.append(Line(f"gpu{idx}", g.power_w, PALETTE[(idx + 1) % 7], end=n))
        if g.power_limit_w:
            hl.append((g.power_limit_w, f"limit {g.power_limit_w:.0f} W", "red"))
    # Power records' sources; NVML's is drawn per GPU above from the same figures.
    for i, (source, series) in enumerate(sorted(s.power.sources.items())):
        if source != "nvml" and len(series):
            color = PALETTE[(i + 3) % 7]
            power.append(Line(source, series, color, end=series.count_until(end)))
    for name, watts in sorted(s.power.limits.items()):
        if name.startswith("rapl "):
            hl.append((watts, f"{name.removeprefix('rapl ')} limit {watts:.3g} W", "red"))
    energy = s.power.energy_j
    k = energy.count_until(end)
    power_sub = f"energy {fmt_number(energy.y[k - 1])} J" if k else ""
    if len(s.thermal.cpu_mhz):
        clocks.append(
            Line("CPU", s.thermal.cpu_mhz, PALETTE[4], end=s.thermal.cpu_mhz.count_until(end))
        )
    tf = time_fmt(t0)
    out["clocks"] = ChartSpec(
        "clocks MHz",
        tuple(clocks),
        bands=bands(s, end),
        subtitle=" · ".join(facts),
        empty="no clock samples",
        x0=t0,
        x1=t1,
        by_time=True,
        x_fmt=tf,
    )
    out["power"] = ChartSpec(
        "power W",
        tuple(power),
        hlines=tuple(hl),
        subtitle=power_sub,
        empty="no power samples",
        y_floor=0.0,
        x0=t0,
        x1=t1,
        by_time=True,
        x_fmt=tf,
    )
    cpu = (
        Line("CPU %", s.system.cpu_percent, PALETTE[5], end=s.system.cpu_percent.count_until(end)),
    )
    out["cpu"] = ChartSpec(
        "CPU %",
        cpu if len(s.system.cpu_percent) else (),
        y_floor=0.0,
        empty="no CPU samples",
        x0=t0,
        x1=t1,
        by_time=True,
        x_fmt=tf,
    )
    return out


def overview_specs(
    s: RunState, run: int, end: int | None, t0: int, t1: int
) -> dict[str, ChartSpec]:
    """The overview: the first metric (loss first), step time, memory, thermal."""
    keys = s.metric_keys(run)
    if keys:
        loss = metric_spec(s, run, keys[0], end)
    else:
        loss = ChartSpec("loss", empty="no metrics logged yet")
    return {
        "loss": loss,
        "step": step_spec(s, run, end),
        "memory": memory_spec(s, run, end, t0, t1),
        "thermal": thermal_spec(s, end, t0, t1),
    }
