"""A trace's values as rows, and the CSV and JSON lines writers of ``edgescope export``.

UI-free and CLI-free: the ``edgescope export`` command and the TUI's save dialog both write
through here, so the two files are the same. The output is *long*: one row per value, so every
metric and every device figure fits the same columns and pandas, DuckDB or a spreadsheet can
pivot it as they like::

    series   metric, or with --system: system, process, thermal, gpu, power
    run      the run's name ("" for device-wide figures)
    run_id   the run's unique id ("" for device-wide figures)
    key      the metric's key (``loss``), or the figure's dotted name (``gpu0.temp_c``)
    step     the step of a metric value ("" for device figures)
    time     ISO 8601, UTC, microseconds
    t_us     the same instant in integer microseconds since the Unix epoch
    value    the number, exactly as stored (shortest round-trip form; nan, inf)

With ``--events``, events come too (anomalies, marks, log lines, a crash's exception), one row
each, with a ninth column::

    series   event
    key      the event's kind (``anomaly``, ``exception``, ``log``, ...)
    value    its severity: 0 info, 1 warning, 2 error
    text     its message; an exception's traceback follows on the next lines

Without ``--events`` a trace that holds events says so on stderr (how many, and how many carry a
crash's traceback), so that a crash is never left out unsaid.

CSV has that header row; JSON lines carry the same names in each object, with ``null`` for
an absent step and the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` where a float is
not finite (JSON has no such numbers). ``pandas.read_csv(OUT)`` and
``pandas.read_json(OUT, lines=True, precise_float=True)`` read them back exactly.

Device figures keep their source in the key: ``system.cpu_percent``, ``system.cpu3.percent``,
``system.psi.memory.some.avg10``, ``process.<pid>.rss``, ``thermal.<zone>.temp_c``,
``cpufreq.cpu<n>.cur_khz``, ``cooling.<name>.cur_state``, ``throttle.<counter>``,
``sensors.<name>`` (e.g. ``sensors.hwmon.ina3221.in1``, in V, A, W or RPM),
``gpu<index>.power_mw``, ``gpu<index>.process.<pid>.mem_used`` (bytes),
``power.<source>.<reading>.power_uw`` (µW), ``.energy_uj`` (µJ, the raw counter: it wraps at
``.range_uj``), ``.limit_uw`` (e.g. ``power.rapl.package-0.energy_uj``,
``power.ina3221.ina3221/VDD_IN.power_uw``). Figures a source did not have are left out, not
written as empty.

Text cells (run names, keys, messages) are the trace writer's: CSV writes their control
characters as visible escapes (``\\x1b``) and puts ``'`` before a cell that a spreadsheet would
take for a formula (``=``, ``+``, ``-``, ``@``); JSON lines keep every character, with those a
terminal would act on written as ``\\uXXXX`` (:mod:`edgescope_tracing.text`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Literal, NamedTuple

from .records import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    PowerReading,
    PowerSample,
    ProcessSample,
    Record,
    RunStart,
    SystemSample,
    ThermalSample,
)
from .summary import event_traceback

__all__ = [
    "COLUMNS",
    "EVENT_COLUMNS",
    "EventCount",
    "Row",
    "event_text",
    "rows",
    "write_csv",
    "write_jsonl",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

COLUMNS = ("series", "run", "run_id", "key", "step", "time", "t_us", "value")
EVENT_COLUMNS = (*COLUMNS, "text")
"""The columns with ``--events``."""

Series = Literal["metric", "system", "process", "thermal", "gpu", "power", "event"]


class Row(NamedTuple):
    """One exported value, the row every export format writes (CSV, JSON lines, Parquet). A
    named tuple, not a dataclass: an export makes one per value (some 100,000 per trace MB),
    and a tuple is made three times as fast as a frozen dataclass."""

    series: Series
    run: str
    run_id: str
    key: str
    step: int | None
    t_us: int
    value: float
    text: str = ""
    """An event's message (and traceback); empty for values."""


def event_text(e: Event) -> str:
    """An event's message, and the traceback a crash stored with it on the lines after."""
    tb = event_traceback(e)
    return e.message if tb is None else f"{e.message}\n{tb.rstrip()}"


@dataclass(slots=True)
class EventCount:
    """The events a trace holds that an export without ``--events`` leaves out."""

    events: int = 0
    tracebacks: int = 0


def _record_fields(cls: type, *skip: str) -> tuple[str, ...]:
    """A record class's fields in order, less ``t_us``, ``seq`` and ``skip``: the figures a row
    is made of."""
    leave = {"t_us", "seq", *skip}
    return tuple(f.name for f in fields(cls) if f.name not in leave)


# processes is (pid, bytes) pairs, not one figure: rows of their own in _device_rows.
_GPU_FIELDS = _record_fields(GpuSample, "index", "name", "processes")
# per_cpu_percent and psi are not one figure each: rows of their own in _device_rows.
_SYSTEM_FIELDS = _record_fields(SystemSample, "per_cpu_percent", "psi")
# the parent, state and command say which process it is, not how it is doing, and cgroup is the
# cgroup's path (the run's container): text, not figures, so no rows
_PROCESS_FIELDS = _record_fields(ProcessSample, "run", "pid", "ppid", "state", "command", "cgroup")
# source and name are in the key; total says how readers sum, not a figure.
_POWER_FIELDS = _record_fields(PowerReading, "source", "name", "total")


def _fields(rec: Any, names: Iterable[str], prefix: str) -> Iterator[tuple[str, float]]:
    for name in names:
        v = getattr(rec, name)
        if v is not None:
            yield f"{prefix}{name}", v


def _device_rows(rec: Record) -> Iterator[tuple[Series, int, Iterator[tuple[str, float]]]]:
    """``(series, run, figures)`` of a device record; ``run`` is -1 for device-wide figures."""
    if isinstance(rec, SystemSample):
        yield "system", -1, _fields(rec, _SYSTEM_FIELDS, "system.")
        yield (
            "system",
            -1,
            iter([(f"system.cpu{i}.percent", v) for i, v in enumerate(rec.per_cpu_percent)]),
        )
        yield "system", -1, iter([(f"system.psi.{k}", v) for k, v in rec.psi.items()])
    elif isinstance(rec, ProcessSample):
        yield "process", rec.run, _fields(rec, _PROCESS_FIELDS, f"process.{rec.pid}.")
    elif isinstance(rec, GpuSample):
        yield "gpu", -1, _fields(rec, _GPU_FIELDS, f"gpu{rec.index}.")
        yield (
            "gpu",
            -1,
            iter([(f"gpu{rec.index}.process.{pid}.mem_used", m) for pid, m in rec.processes]),
        )
    elif isinstance(rec, ThermalSample):
        figures: list[tuple[str, float]] = [
            (f"thermal.{z.name}.temp_c", z.temp_c) for z in rec.zones
        ]
        for f in rec.freqs:
            figures.extend(
                _fields(
                    f, ("cur_khz", "hw_khz", "max_khz", "scaling_max_khz"), f"cpufreq.cpu{f.cpu}."
                )
            )
        for c in rec.cooling:
            figures.extend(
                _fields(c, ("cur_state", "max_state", "transitions"), f"cooling.{c.name}.")
            )
        figures.extend((f"throttle.{k}", v) for k, v in rec.throttle.items())
        figures.extend((f"sensors.{k}", v) for k, v in rec.sensors.items())
        yield "thermal", -1, iter(figures)
    elif isinstance(rec, PowerSample):
        for r in rec.readings:
            yield "power", -1, _fields(r, _POWER_FIELDS, f"power.{r.source}.{r.name}.")


def _run_names(runs: dict[int, RunStart], run: int) -> tuple[str, str]:
    if run < 0:
        return "", ""
    start = runs.get(run)
    return (start.name, start.run_id) if start else (f"run {run}", "")


def rows(
    records: Iterable[Record],
    *,
    system: bool = False,
    events: bool = False,
    left_out: EventCount | None = None,
) -> Iterator[Row]:
    """The rows of a trace, in stream order: metric values, device figures if ``system``,
    events if ``events`` (else counted into ``left_out``)."""
    runs: dict[int, RunStart] = {}
    for rec in records:
        if isinstance(rec, Event):
            if events:
                name, rid = _run_names(runs, rec.run)
                yield Row(
                    "event", name, rid, rec.kind, None, rec.t_us, rec.severity, event_text(rec)
                )
            elif left_out is not None:
                left_out.events += 1
                left_out.tracebacks += event_traceback(rec) is not None
            continue
        if isinstance(rec, RunStart):
            runs[rec.run] = rec
        elif isinstance(rec, Keyframe):
            for r in rec.runs:
                runs[r.run] = r
        elif isinstance(rec, Metrics):
            name, rid = _run_names(runs, rec.run)
            for step, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True):
                yield Row("metric", name, rid, rec.key, step, t, v)
        elif system:
            for series, run, figures in _device_rows(rec):
                name, rid = _run_names(runs, run)
                for key, v in figures:
                    yield Row(series, name, rid, key, None, rec.t_us, v)


def _iso(t_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=t_us)).isoformat(timespec="microseconds")


def _num_text(v: float) -> str:
    """The shortest text that reads back as the same number; ints stay ints."""
    if isinstance(v, int):
        return str(v)
    return repr(v)


def write_csv(out: IO[str], data: Iterable[Row], *, events: bool = False) -> int:
    """Write the header and the rows (with the ``text`` column if ``events``); returns how
    many rows. Text cells go through :func:`~edgescope_tracing.text.csv_cell`."""
    import csv

    from .text import csv_cell

    w = csv.writer(out, lineterminator="\n")
    w.writerow(EVENT_COLUMNS if events else COLUMNS)
    n = 0
    for r in data:
        row: list[str | int] = [
            r.series,
            csv_cell(r.run),
            csv_cell(r.run_id),
            csv_cell(r.key),
            "" if r.step is None else r.step,
            _iso(r.t_us),
            r.t_us,
            _num_text(r.value),
        ]
        if events:
            row.append(csv_cell(r.text))
        w.writerow(row)
        n += 1
    return n


def _json_num(v: float) -> float | str:
    if isinstance(v, int) or math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def write_jsonl(out: IO[str], data: Iterable[Row], *, events: bool = False) -> int:
    """One JSON object per row (with ``text`` if ``events``); returns how many rows."""
    import json

    from .text import json_safe

    dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
    n = 0
    for r in data:
        obj: dict[str, Any] = {
            "series": r.series,
            "run": r.run,
            "run_id": r.run_id,
            "key": r.key,
            "step": r.step,
            "time": _iso(r.t_us),
            "t_us": r.t_us,
            "value": _json_num(r.value),
        }
        if events:
            obj["text"] = r.text
        out.write(json_safe(dumps(obj)))
        out.write("\n")
        n += 1
    return n
