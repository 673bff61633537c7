"""Prometheus exposition: the collector's current values on ``/metrics`` for a Prometheus scrape.

``edgescope collector --prometheus 127.0.0.1:9464`` serves them. The exporter observes the one
pipeline (:attr:`.Pipeline.observers`): every record that enters the stream is folded into a
:class:`MetricsState` of current values, and a custom ``prometheus_client`` collector on a
private :class:`~prometheus_client.CollectorRegistry` turns that state into metric families at
each scrape. ``prometheus_client`` writes the text: the Prometheus text format, or OpenMetrics
when the scraper's ``Accept`` header asks for it (``prometheus_client.exposition``).

Who may scrape: the same rule as the stream port. Loopback by default; another address needs the
collector's ``--token-file``, and every request must then carry that token as a bearer token
(``Authorization: Bearer TOKEN``: what Prometheus' ``authorization`` scrape setting sends, with
``credentials_file`` pointing at the same token file). A missing or wrong token is answered 401;
the token is compared in constant time (:func:`hmac.compare_digest`).

Names follow node_exporter where it has the figure (``node_`` becomes ``edgescope_``), DCGM's
exporter for GPUs (in base units), and edgescope's own for runs::

    device (from the latest sample of each source)
    edgescope_thermal_zone_temp_celsius{zone,type}       zone: the recorded zone name (unique),
                                                         type: its sysfs type (name less ".N")
    edgescope_thermal_zone_trip_point_celsius{zone,type,point,trip_type}
    edgescope_cpu_scaling_frequency_hertz{cpu}           scaling_cur_freq (the governor's)
    edgescope_cpu_scaling_frequency_max_hertz{cpu}       scaling_max_freq (lowered when capped)
    edgescope_cpu_frequency_hertz{cpu}                   cpuinfo_cur_freq (the hardware's)
    edgescope_cpu_frequency_max_hertz{cpu}               cpuinfo_max_freq
    edgescope_cpu_core_throttles_total{cpu}              x86 thermal_throttle counters
    edgescope_cpu_core_throttle_seconds_total{cpu}
    edgescope_cpu_package_throttles_total{package}
    edgescope_cpu_package_throttle_seconds_total{package}
    edgescope_cooling_device_cur_state{name,type}        edgescope_cooling_device_max_state
    edgescope_cooling_device_transitions_total{name,type}
    edgescope_cooling_device_throttle_seconds_total{name,type}   time a passive device throttled
    edgescope_pi_throttled{flag}                         the Pi firmware's bits, 0 or 1 each
    edgescope_hwmon_alarm{chip,sensor}                   0 or 1
    edgescope_hwmon_in_volts{chip,sensor}                also _curr_amps, _power_watt, _fan_rpm
    edgescope_throttle{key}, edgescope_sensor{key}       what the names above do not cover
    edgescope_pressure_{cpu,memory,io}_waiting_seconds_total    PSI "some"
    edgescope_pressure_{cpu,memory,io}_stalled_seconds_total    PSI "full"
    edgescope_load1, _load5, _load15; edgescope_memory_{total,available,used}_bytes;
    edgescope_memory_swap_{total,used}_bytes; edgescope_cpu_utilization_ratio{cpu} ("all" too);
    edgescope_disk_{read,written}_bytes_per_second; edgescope_network_{receive,transmit}_...
    edgescope_gpu_temperature_celsius{gpu,model_name}    DCGM_FI_DEV_GPU_TEMP
    edgescope_gpu_power_usage_watts, _power_limit_watts  DCGM_FI_DEV_POWER_USAGE
    edgescope_gpu_sm_clock_hertz, _mem_clock_hertz (and _max_)  DCGM_FI_DEV_SM_CLOCK, _MEM_CLOCK
    edgescope_gpu_utilization_ratio, _mem_copy_utilization_ratio   DCGM_FI_DEV_GPU_UTIL, ...
    edgescope_gpu_framebuffer_used_bytes, _total_bytes   DCGM_FI_DEV_FB_USED
    edgescope_gpu_clock_event_reasons (the NVML bitmask), edgescope_gpu_throttled (0 or 1)

    runs (run: the run's id, name: its name; a run is kept while it runs and, once it ended,
    until MAX_ENDED_RUNS later runs have ended)
    edgescope_run_running{run,name}                      1 while it runs, 0 once it ended
    edgescope_run_step{run,name}                         the highest step logged
    edgescope_run_metric{run,name,metric}                the last value of each metric
    edgescope_run_step_time_seconds{run,name}            the last step time (its step-time
                                                         metric, else derived from step times)
    edgescope_run_memory_rss_bytes{run,name}             its processes' RSS, summed
    edgescope_run_memory_peak_bytes{run,name,source}     vmhwm: its largest VmHWM; cgroup: the
                                                         cgroup's peak during the run
    edgescope_run_memory_limit_bytes{run,name}           the cgroup limit that bites
    edgescope_run_cgroup_memory_bytes{run,name}          the cgroup's memory now
    edgescope_run_oom_kills_total{run,name}

    events
    edgescope_events_total{kind,severity}                every event since the exporter started

The cardinality cap: at most :data:`MAX_RUN_METRIC_SERIES` ``edgescope_run_metric`` series at
once (all kept runs together). A metric that would go beyond it is not exposed; it is counted in
``edgescope_run_metric_series_left_out_total`` (one per run and metric left out, never silently)
and said once per run in the collector's log, and ``edgescope_run_metric_series_limit`` says the
cap. Event kinds beyond :data:`MAX_EVENT_KINDS` are counted under ``kind="other"``.

PSI totals: a trace keeps PSI as the share of each interval stalled (``memory.some.now``), not
the kernel's running total, so the ``_seconds_total`` counters add up share times interval from the
samples since the exporter started; their ``rate()`` is the kernel's stall share.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from edgescope_tracing import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.signals import (
    PI_THROTTLED_BITS,
    StepClock,
    derive_step_times,
    gpu_throttled,
    step_time_unit,
)
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import make_wsgi_app

from .errors import CollectorError

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "MAX_ENDED_RUNS",
    "MAX_EVENT_KINDS",
    "MAX_RUN_METRIC_SERIES",
    "MetricsState",
    "PrometheusExporter",
    "families",
]

log = logging.getLogger("edgescope.collector")

MAX_RUN_METRIC_SERIES = 1000
"""The most ``edgescope_run_metric`` series exposed at once, all kept runs together."""

MAX_ENDED_RUNS = 8
"""Ended runs kept on ``/metrics`` (their last values), oldest ended dropped first."""

MAX_EVENT_KINDS = 64
"""Distinct event kinds counted by name; later kinds are counted under ``other``."""

_THROTTLE_X86 = re.compile(r"^(cpu|package)(\d+)\.(core|package)_throttle_(count|total_time_ms)$")
_HWMON_SENSOR = re.compile(r"^hwmon\.(.+)\.((in|curr|power|fan)\d+)$")
_HWMON_ALARM = re.compile(r"^hwmon\.(.+)\.(\w+_alarm)$")
_HWMON_UNITS = {"in": "in_volts", "curr": "curr_amps", "power": "power_watt", "fan": "fan_rpm"}
_PSI_NAMES = {"some": "waiting", "full": "stalled"}


@dataclass(slots=True)
class _Run:
    """What the exporter keeps of one run."""

    run_id: str
    name: str
    running: bool = True
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)
    step_time: float | None = None
    timed_by_metric: bool = False
    clock: StepClock | None = None
    processes: dict[int, ProcessSample] = field(default_factory=dict)
    cgroup_peak: int | None = None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    system: SystemSample | None
    thermal: ThermalSample | None
    gpus: tuple[GpuSample, ...]
    runs: tuple[_Run, ...]
    """Copies: the scrape reads them while the event loop goes on folding."""
    psi_seconds: dict[str, float]
    transitions: dict[str, int]
    events: dict[tuple[str, int], int]
    left_out: int
    limit: int


class MetricsState:
    """The current values, folded from records (:meth:`observe`, on the event loop) and read
    at each scrape (:meth:`snapshot`, in the HTTP server's thread), under one lock."""

    def __init__(self, *, max_series: int = MAX_RUN_METRIC_SERIES) -> None:
        self.max_series = max_series
        self._lock = threading.Lock()
        self._system: SystemSample | None = None
        self._thermal: ThermalSample | None = None
        self._gpus: dict[int, GpuSample] = {}
        self._runs: OrderedDict[int, _Run] = OrderedDict()
        self._series = 0
        self._left_out = 0
        self._psi_seconds: dict[str, float] = {}
        self._transitions: dict[str, int] = {}
        self._events: dict[tuple[str, int], int] = {}
        self._kinds: set[str] = set()

    def observe(self, rec: Record) -> None:
        with self._lock:
            if isinstance(rec, Metrics):
                self._metrics(rec)
            elif isinstance(rec, ProcessSample):
                run = self._runs.get(rec.run)
                if run is not None:
                    run.processes[rec.pid] = rec
                    if rec.cgroup_peak is not None:
                        run.cgroup_peak = max(run.cgroup_peak or 0, rec.cgroup_peak)
            elif isinstance(rec, ThermalSample):
                for c in rec.cooling:
                    self._transitions[c.name] = self._transitions.get(c.name, 0) + c.transitions
                self._thermal = rec
            elif isinstance(rec, SystemSample):
                self._system_sample(rec)
            elif isinstance(rec, GpuSample):
                self._gpus[rec.index] = rec
            elif isinstance(rec, Event):
                kind = rec.kind
                if kind not in self._kinds:
                    if len(self._kinds) < MAX_EVENT_KINDS:
                        self._kinds.add(kind)
                    else:
                        kind = "other"
                key = (kind, rec.severity)
                self._events[key] = self._events.get(key, 0) + 1
            elif isinstance(rec, RunStart):
                self._start(rec)
            elif isinstance(rec, RunEnd):
                self._end(rec.run)
            elif isinstance(rec, Keyframe):
                for rs in rec.runs:
                    if rs.run not in self._runs:
                        self._start(rs)

    def _start(self, rs: RunStart) -> None:
        old = self._runs.pop(rs.run, None)
        if old is not None:
            self._series -= len(old.metrics)
        self._runs[rs.run] = _Run(rs.run_id or str(rs.run), rs.name)

    def _end(self, number: int) -> None:
        run = self._runs.get(number)
        if run is None or not run.running:
            return
        run.running = False
        run.processes.clear()
        self._runs.move_to_end(number)
        ended = [n for n, r in self._runs.items() if not r.running]
        for n in ended[: max(0, len(ended) - MAX_ENDED_RUNS)]:
            self._series -= len(self._runs.pop(n).metrics)

    def _metrics(self, rec: Metrics) -> None:
        run = self._runs.get(rec.run)
        if run is None or not rec.values:
            return
        key = rec.key
        exposed = True
        if key not in run.metrics:
            if self._series >= self.max_series:
                exposed = False
                if key not in run.left_out:
                    run.left_out.add(key)
                    self._left_out += 1
                    if len(run.left_out) == 1:
                        log.warning(
                            "prometheus: run %r has more metrics than the %d series exposed at "
                            "once; %r and any later ones are counted in "
                            "edgescope_run_metric_series_left_out_total, not exposed",
                            run.name,
                            self.max_series,
                            key,
                        )
            else:
                self._series += 1
        if exposed:
            run.metrics[key] = rec.values[-1]
        last = max(rec.steps)
        run.step = last if run.step is None else max(run.step, last)
        unit = step_time_unit(rec.key)
        if unit is not None:
            run.step_time = rec.values[-1] * unit
            run.timed_by_metric = True
        elif not run.timed_by_metric:
            points, run.clock = derive_step_times(rec.key, rec.steps, rec.times_us, run.clock)
            if points:
                run.step_time = points[-1][2]

    def _system_sample(self, rec: SystemSample) -> None:
        prev = self._system
        dt = (rec.t_us - prev.t_us) / 1e6 if prev is not None else 0.0
        if dt > 0:
            for key, share in rec.psi.items():
                if key.endswith(".now"):
                    self._psi_seconds[key] = self._psi_seconds.get(key, 0.0) + share / 100 * dt
        self._system = rec

    def snapshot(self) -> _Snapshot:
        with self._lock:
            return _Snapshot(
                system=self._system,
                thermal=self._thermal,
                gpus=tuple(self._gpus[i] for i in sorted(self._gpus)),
                runs=tuple(
                    replace(r, metrics=dict(r.metrics), processes=dict(r.processes), left_out=set())
                    for r in self._runs.values()
                ),
                psi_seconds=dict(self._psi_seconds),
                transitions=dict(self._transitions),
                events=dict(self._events),
                left_out=self._left_out,
                limit=self.max_series,
            )


# --- metric families -----------------------------------------------------------------------


class _Families:
    """Metric families by name, made on first use, yielded in the order first used."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: Iterable[str] = (), unit: str = "") -> Any:
        fam = self.by_name.get(name)
        if fam is None:
            fam = GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)
            self.by_name[name] = fam
        return fam

    def counter(self, name: str, doc: str, labels: Iterable[str] = (), unit: str = "") -> Any:
        fam = self.by_name.get(name)
        if fam is None:
            fam = CounterMetricFamily(name, doc, labels=list(labels), unit=unit)
            self.by_name[name] = fam
        return fam


def _zone_type(name: str) -> str:
    base, dot, n = name.rpartition(".")
    return base if dot and n.isdigit() else name


def _thermal(f: _Families, t: ThermalSample) -> None:
    zl = ("zone", "type")
    for z in t.zones:
        labels = [z.name, _zone_type(z.name)]
        f.gauge(
            "edgescope_thermal_zone_temp_celsius", "Thermal zone temperature.", zl, "celsius"
        ).add_metric(labels, z.temp_c)
        for i, (kind, temp, _hyst) in enumerate(z.trips):
            f.gauge(
                "edgescope_thermal_zone_trip_point_celsius",
                "Thermal zone trip point temperature.",
                (*zl, "point", "trip_type"),
                "celsius",
            ).add_metric([*labels, str(i), kind], temp)
    for fr in t.freqs:
        cpu = [str(fr.cpu)]
        for attr, name, doc in (
            ("cur_khz", "scaling_frequency", "Frequency the governor requested (scaling_cur)."),
            ("scaling_max_khz", "scaling_frequency_max", "Highest frequency allowed now."),
            ("hw_khz", "frequency", "Frequency the hardware runs at (cpuinfo_cur)."),
            ("max_khz", "frequency_max", "Highest frequency of the CPU (cpuinfo_max)."),
        ):
            v = getattr(fr, attr)
            if v is not None:
                f.gauge(f"edgescope_cpu_{name}_hertz", doc, ("cpu",), "hertz").add_metric(
                    cpu, v * 1000
                )
    for c in t.cooling:
        labels = [c.name, _zone_type(c.name)]
        cl = ("name", "type")
        f.gauge("edgescope_cooling_device_cur_state", "Cooling device state.", cl).add_metric(
            labels, c.cur_state
        )
        f.gauge("edgescope_cooling_device_max_state", "Cooling device max state.", cl).add_metric(
            labels, c.max_state
        )
    for key, v in t.throttle.items():
        _throttle(f, key, v)
    for key, v in t.sensors.items():
        m = _HWMON_SENSOR.match(key)
        if m:
            unit = _HWMON_UNITS[m.group(3)]
            f.gauge(
                f"edgescope_hwmon_{unit}",
                f"Hardware monitor {unit.replace('_', ' in ')}.",
                ("chip", "sensor"),
            ).add_metric([m.group(1), m.group(2)], v)
        else:
            f.gauge("edgescope_sensor", "Other sensor reading, base units.", ("key",)).add_metric(
                [key], v
            )


def _throttle(f: _Families, key: str, v: int) -> None:
    m = _THROTTLE_X86.match(key)
    if m:
        _, number, scope, what = m.groups()
        labels = ("cpu",) if scope == "core" else ("package",)
        if what == "count":
            f.counter(
                f"edgescope_cpu_{scope}_throttles",
                f"Times the {scope} was throttled for heat (thermal_throttle).",
                labels,
            ).add_metric([number], v)
        else:
            f.counter(
                f"edgescope_cpu_{scope}_throttle_seconds",
                f"Time the {scope} was throttled for heat (thermal_throttle).",
                labels,
                "seconds",
            ).add_metric([number], v / 1000)
        return
    if key.endswith(".cooling_ms"):
        name = key[: -len(".cooling_ms")]
        f.counter(
            "edgescope_cooling_device_throttle_seconds",
            "Time a passive cooling device held its processor above state 0.",
            ("name", "type"),
            "seconds",
        ).add_metric([name, _zone_type(name)], v / 1000)
        return
    if key == "pi.throttled":
        fam = f.gauge("edgescope_pi_throttled", "Raspberry Pi firmware throttled bits.", ("flag",))
        for bit, name in PI_THROTTLED_BITS.items():
            fam.add_metric([name], v >> bit & 1)
        return
    m = _HWMON_ALARM.match(key)
    if m:
        f.gauge(
            "edgescope_hwmon_alarm", "Hardware monitor alarm (0 or 1).", ("chip", "sensor")
        ).add_metric([m.group(1), m.group(2)], v)
        return
    f.gauge("edgescope_throttle", "Other throttle counter or flag.", ("key",)).add_metric([key], v)


def _system(f: _Families, s: SystemSample, psi_seconds: dict[str, float]) -> None:
    for attr, name, doc, scale in (
        ("load1", "load1", "1m load average.", 1.0),
        ("load5", "load5", "5m load average.", 1.0),
        ("load15", "load15", "15m load average.", 1.0),
        ("mem_total", "memory_total_bytes", "Memory in all.", 1.0),
        ("mem_available", "memory_available_bytes", "Memory available (MemAvailable).", 1.0),
        ("mem_used", "memory_used_bytes", "Memory used (total less available).", 1.0),
        ("swap_total", "memory_swap_total_bytes", "Swap in all.", 1.0),
        ("swap_used", "memory_swap_used_bytes", "Swap used.", 1.0),
        ("disk_read_bps", "disk_read_bytes_per_second", "Disk reads.", 1.0),
        ("disk_write_bps", "disk_written_bytes_per_second", "Disk writes.", 1.0),
        ("net_rx_bps", "network_receive_bytes_per_second", "Network received.", 1.0),
        ("net_tx_bps", "network_transmit_bytes_per_second", "Network sent.", 1.0),
    ):
        v = getattr(s, attr)
        if v is not None:
            f.gauge(f"edgescope_{name}", doc).add_metric([], v * scale)
    util = "edgescope_cpu_utilization_ratio"
    doc = "Share of the CPU busy over the last interval (cpu=all: the whole device)."
    if s.cpu_percent is not None:
        f.gauge(util, doc, ("cpu",)).add_metric(["all"], s.cpu_percent / 100)
    for i, v in enumerate(s.per_cpu_percent):
        f.gauge(util, doc, ("cpu",)).add_metric([str(i)], v / 100)
    for key, seconds in sorted(psi_seconds.items()):
        resource, kind, _ = key.split(".", 2)
        what = _PSI_NAMES.get(kind)
        if what is None:
            continue
        f.counter(
            f"edgescope_pressure_{resource}_{what}_seconds",
            f"Time tasks were {what} for {resource} (PSI {kind}), summed from the samples.",
            unit="seconds",
        ).add_metric([], seconds)


def _gpu(f: _Families, g: GpuSample) -> None:
    labels = [str(g.index), g.name]
    gl = ("gpu", "model_name")
    for attr, name, doc, scale in (
        ("temp_c", "temperature_celsius", "GPU temperature.", 1.0),
        ("power_mw", "power_usage_watts", "GPU power draw.", 1e-3),
        ("power_limit_mw", "power_limit_watts", "GPU power limit.", 1e-3),
        ("sm_clock_mhz", "sm_clock_hertz", "SM clock.", 1e6),
        ("mem_clock_mhz", "mem_clock_hertz", "Memory clock.", 1e6),
        ("max_sm_clock_mhz", "max_sm_clock_hertz", "Highest SM clock.", 1e6),
        ("max_mem_clock_mhz", "max_mem_clock_hertz", "Highest memory clock.", 1e6),
        ("util_gpu", "utilization_ratio", "Share of time a kernel ran.", 1e-2),
        (
            "util_mem",
            "mem_copy_utilization_ratio",
            "Share of time memory was read or written.",
            1e-2,
        ),
        ("mem_used", "framebuffer_used_bytes", "GPU memory used.", 1.0),
        ("mem_total", "framebuffer_total_bytes", "GPU memory in all.", 1.0),
        ("clock_event_reasons", "clock_event_reasons", "NVML clock-event reasons bitmask.", 1.0),
    ):
        v = getattr(g, attr)
        if v is not None:
            f.gauge(f"edgescope_gpu_{name}", doc, gl).add_metric(labels, v * scale)
    if g.clock_event_reasons is not None:
        f.gauge(
            "edgescope_gpu_throttled", "1 when a power or thermal reason slows the GPU.", gl
        ).add_metric(labels, int(gpu_throttled(g.clock_event_reasons)))


def _runs(f: _Families, snap: _Snapshot) -> None:
    rl = ("run", "name")
    f.gauge(
        "edgescope_run_metric_series_limit", "The most edgescope_run_metric series exposed."
    ).add_metric([], snap.limit)
    f.counter(
        "edgescope_run_metric_series_left_out",
        "Run metrics not exposed because of the series limit (one per run and metric).",
    ).add_metric([], snap.left_out)
    for run in snap.runs:
        labels = [run.run_id, run.name]
        f.gauge("edgescope_run_running", "1 while the run runs, 0 once it ended.", rl).add_metric(
            labels, int(run.running)
        )
        if run.step is not None:
            f.gauge("edgescope_run_step", "The highest step the run logged.", rl).add_metric(
                labels, run.step
            )
        fam = f.gauge(
            "edgescope_run_metric",
            "The last value of each metric the run logged.",
            (*rl, "metric"),
        )
        for key, v in run.metrics.items():
            fam.add_metric([*labels, key], v)
        if run.step_time is not None:
            f.gauge(
                "edgescope_run_step_time_seconds", "The run's last step time.", rl, "seconds"
            ).add_metric(labels, run.step_time)
        _memory(f, labels, run, tuple(run.processes.values()))


def _memory(f: _Families, labels: list[str], run: _Run, procs: tuple[ProcessSample, ...]) -> None:
    rl = ("run", "name")
    if not procs:
        if run.cgroup_peak is not None:
            f.gauge(
                "edgescope_run_memory_peak_bytes", "The run's memory peak.", (*rl, "source")
            ).add_metric([*labels, "cgroup"], run.cgroup_peak)
        return
    latest = max(p.t_us for p in procs)
    now = [p for p in procs if p.t_us == latest]
    rss = [p.rss for p in now if p.rss is not None]
    if rss:
        f.gauge(
            "edgescope_run_memory_rss_bytes", "The RSS of the run's processes, summed.", rl
        ).add_metric(labels, sum(rss))
    peak = f.gauge("edgescope_run_memory_peak_bytes", "The run's memory peak.", (*rl, "source"))
    hwm = [p.rss_peak for p in now if p.rss_peak is not None]
    if hwm:
        peak.add_metric([*labels, "vmhwm"], max(hwm))
    if run.cgroup_peak is not None:
        peak.add_metric([*labels, "cgroup"], run.cgroup_peak)
    for attr, name, doc in (
        ("cgroup_limit", "edgescope_run_memory_limit_bytes", "The cgroup memory limit that bites."),
        ("cgroup_current", "edgescope_run_cgroup_memory_bytes", "The run's cgroup memory now."),
    ):
        values = [getattr(p, attr) for p in now if getattr(p, attr) is not None]
        if values:
            f.gauge(name, doc, rl).add_metric(labels, min(values))
    ooms = [p.oom_kills for p in now if p.oom_kills is not None]
    if ooms:
        f.counter("edgescope_run_oom_kills", "OOM kills in the run's cgroup.", rl).add_metric(
            labels, max(ooms)
        )


def families(snap: _Snapshot) -> list[Metric]:
    """The metric families of a snapshot (what one scrape returns)."""
    f = _Families()
    if snap.thermal is not None:
        _thermal(f, snap.thermal)
        for c in snap.thermal.cooling:
            f.counter(
                "edgescope_cooling_device_transitions",
                "Cooling device state changes seen since the exporter started.",
                ("name", "type"),
            ).add_metric([c.name, _zone_type(c.name)], snap.transitions.get(c.name, 0))
    if snap.system is not None:
        _system(f, snap.system, snap.psi_seconds)
    for g in snap.gpus:
        _gpu(f, g)
    _runs(f, snap)
    ev = f.counter(
        "edgescope_events", "Events since the exporter started, by kind.", ("kind", "severity")
    )
    for (kind, severity), n in sorted(snap.events.items()):
        ev.add_metric([kind, str(severity)], n)
    return list(f.by_name.values())


class _Scrape:
    """The custom collector registered on the exporter's private registry."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from families(self.state.snapshot())


# --- the HTTP side -------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape; the threads never hold the collector's exit."""

    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one a second would fill the log)."""


def _guarded(app: WSGIApplication, token: bytes | None) -> WSGIApplication:
    """``app`` on ``/metrics`` only, behind the bearer token when there is one."""

    def authorized(header: str) -> bool:
        if token is None:
            return True
        scheme, _, given = header.strip().partition(" ")
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        # WSGI hands headers over decoded as latin-1: encoding back gives the bytes sent.
        ok = hmac.compare_digest(given.strip().encode("latin-1", "replace"), token)
        return scheme.lower() == "bearer" and ok

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") not in ("/metrics", "/metrics/"):
            body = b"not found: edgescope serves /metrics\n"
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [body]
        if not authorized(str(environ.get("HTTP_AUTHORIZATION", ""))):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", 'Bearer realm="edgescope"'),
                ],
            )
            return [b"unauthorized: send the collector's token as a bearer token\n"]
        return app(environ, start_response)

    return guarded


class PrometheusExporter:
    """``/metrics`` on ``host:port``: :meth:`observe` each record, :meth:`start`, :meth:`close`."""

    def __init__(
        self,
        host: str,
        port: int,
        token: bytes | None,
        *,
        max_series: int = MAX_RUN_METRIC_SERIES,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.token = token
        self.state = MetricsState(max_series=max_series)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Scrape(self.state))
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def observe(self) -> Callable[[Record], None]:
        """What the pipeline calls with each record."""
        return self.state.observe

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self.requested_port
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Listen and serve in a daemon thread; CollectorError if the address cannot be had."""
        import socket

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(_Server):
            address_family = family

        app = _guarded(make_wsgi_app(self.registry), self.token)
        try:
            self._httpd = make_server(self.host, self.requested_port, app, Server, _Quiet)
        except OSError as e:
            raise CollectorError(
                f"--prometheus: cannot listen on {self.host}:{self.requested_port}: "
                f"{(e.strerror or str(e)).lower()}"
            ) from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="prometheus", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
