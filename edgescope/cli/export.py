"""``edgescope export FILE --format jsonl|csv|parquet [-o OUT] [--system]``: a trace's series out.

The output is *long*: one row per value, so every metric and every device figure fits the same
columns and pandas, DuckDB or a spreadsheet can pivot it as they like::

    series   metric, or with --system: system, process, thermal, gpu
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
``gpu<index>.power_mw``, ``gpu<index>.process.<pid>.mem_used`` (bytes). Figures a source did not
have are left out, not written as empty.

Text cells (run names, keys, messages) are the trace writer's: CSV writes their control
characters as visible escapes (``\\x1b``) and puts ``'`` before a cell that a spreadsheet would
take for a formula (``=``, ``+``, ``-``, ``@``); JSON lines keep every character, with those a
terminal would act on written as ``\\uXXXX`` (:mod:`edgescope_tracing.text`). ``-o OUT``
replaces a regular file only when the export is complete, writes through a FIFO or a character
device, and refuses a symbolic link (:mod:`edgescope_tracing.files`). FILE must be a regular
file: a FIFO is refused, not waited on.

Parquet (``--format parquet -o DIR_OR_FILE``, with pyarrow, the ``edgescope[parquet]`` extra)
has the same rows with typed columns: a directory of three tables, or one ``.parquet`` file of
this long table (:mod:`edgescope.cli._parquet` says which and the types).

Damage in the input is skipped: what is readable is exported, and stderr says what was not.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from edgescope_tracing import (
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    ProcessSample,
    Record,
    RunStart,
    SystemSample,
    ThermalSample,
)
from edgescope_tracing.summary import event_traceback

from edgescope.cli._row import Row, Series
from edgescope.errors import EdgescopeError

__all__ = ["COLUMNS", "Row", "add_parser", "rows", "write_csv", "write_jsonl"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

COLUMNS = ("series", "run", "run_id", "key", "step", "time", "t_us", "value")
EVENT_COLUMNS = (*COLUMNS, "text")
"""The columns with ``--events``."""


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
_PROCESS_FIELDS = _record_fields(ProcessSample, "run", "pid")


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

    from edgescope_tracing.text import csv_cell

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

    from edgescope_tracing.text import json_safe

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


def _run(args: argparse.Namespace) -> int:
    from edgescope_tracing import TraceReader
    from edgescope_tracing.files import check_input, open_output
    from edgescope_tracing.text import escape

    src = Path(args.file)
    shown = escape(str(src))
    if args.format == "parquet":
        _parquet_can_run(args)
    try:
        check_input(src)
        reader = TraceReader(src)
    except FileNotFoundError:
        raise EdgescopeError(f"{shown}: no such file", 2) from None
    except PermissionError:
        raise EdgescopeError(f"{shown}: permission denied", 2) from None
    if args.format == "parquet":
        return _run_parquet(args, src, reader)
    writer = write_csv if args.format == "csv" else write_jsonl
    left_out = EventCount()

    def write(out: IO[str]) -> int:
        data = rows(reader, system=args.system, events=args.events, left_out=left_out)
        return writer(out, data, events=args.events)

    with reader:
        if args.output in (None, "-"):
            try:
                n = write(sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:
                raise  # the reader went away (``| head``): main() ends quietly
            except OSError as e:
                raise EdgescopeError(f"writing to stdout failed: {e.strerror or e}", 1) from None
        else:
            with open_output(args.output, not_same_as=src) as f:
                n = write(f)
        damage = list(reader.damage)
    _say_damage(shown, damage, n)
    _say_left_out(shown, left_out)
    return 0


def _say_damage(shown: str, damage: list[Any], n: int) -> None:
    broken = [d for d in damage if not d.truncated]
    if broken:
        lost = sum(d.length for d in broken)
        print(
            f"edgescope: {shown}: {len(broken)} damaged span(s) ({lost} bytes) could not be "
            f"read; exported the {n} readable values",
            file=sys.stderr,
        )
    if any(d.truncated for d in damage):
        print(
            f"edgescope: {shown}: the last frame was cut short (the writer stopped mid-write); "
            f"exported the {n} complete values",
            file=sys.stderr,
        )


def _say_left_out(shown: str, left_out: EventCount) -> None:
    if left_out.events:
        crash = (
            f", {left_out.tracebacks} of them with a crash's traceback"
            if left_out.tracebacks
            else ""
        )
        print(
            f"edgescope: {shown}: the trace also holds {left_out.events} event(s){crash}; "
            "--events exports them too",
            file=sys.stderr,
        )


def _parquet_can_run(args: argparse.Namespace) -> None:
    """Before the trace is opened: ``-o`` is given and pyarrow is installed."""
    from edgescope.cli._extras import require
    from edgescope.errors import UsageError

    if args.output in (None, "-"):
        raise UsageError("--format parquet needs -o DIR (a directory of tables) or -o FILE.parquet")
    require("parquet", "edgescope export --format parquet")


def _run_parquet(args: argparse.Namespace, src: Path, reader: Any) -> int:
    """``--format parquet``: a directory of tables, or one long ``.parquet`` file."""
    from edgescope_tracing.text import escape

    from edgescope.cli._parquet import is_directory_target, write_parquet

    shown = escape(str(src))
    whole = is_directory_target(args.output)
    left_out = EventCount()
    with reader:
        data = rows(
            reader,
            system=whole or args.system,
            events=whole or args.events,
            left_out=left_out,
        )
        written = write_parquet(data, args.output, events=args.events, not_same_as=src)
        damage = list(reader.damage)
    _say_damage(shown, damage, written.rows)
    _say_left_out(shown, left_out)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a trace's metrics (and system series) as CSV, JSON lines or Parquet",
        description=(
            "Write a trace's metrics as CSV, JSON lines or Parquet, one row per value "
            "(series, run, run_id, key, step, time, t_us, value), for pandas, polars, DuckDB "
            "and spreadsheets."
        ),
    )
    p.add_argument("file", metavar="FILE", help="an edgescope trace")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), required=True)
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (default: stdout); for parquet, a directory of tables (metrics, "
        "system, events) or one FILE.parquet",
    )
    p.add_argument(
        "--system",
        action="store_true",
        help="also the system, process, thermal and GPU series",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help="also the events (one row each, with their message and any traceback in 'text')",
    )
    p.set_defaults(func=_run)
