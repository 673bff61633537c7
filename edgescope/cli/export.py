"""``edgescope export FILE --format jsonl|csv|parquet [-o OUT] [--system]``: a trace's series out.

The rows and the two writers live in :mod:`edgescope_tracing.export` (the TUI's save dialog
writes through them too); its docstring gives the columns, the keys and how text cells are
made safe. ``-o OUT`` replaces a regular file only when the export is complete, writes through
a FIFO or a character device, and refuses a symbolic link (:mod:`edgescope_tracing.files`).
FILE must be a regular file: a FIFO is refused, not waited on. Without ``--events`` a trace
that holds events says so on stderr (how many, and how many carry a crash's traceback), so
that a crash is never left out unsaid.

Parquet (``--format parquet -o DIR_OR_FILE``, with pyarrow, the ``edgescope[parquet]`` extra)
has the same rows with typed columns: a directory of three tables, or one ``.parquet`` file of
this long table (:mod:`edgescope.cli._parquet` says which and the types).

Damage in the input is skipped: what is readable is exported, and stderr says what was not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from edgescope_tracing.export import (
    COLUMNS,
    EventCount,
    Row,
    rows,
    write_csv,
    write_jsonl,
)

from edgescope.errors import EdgescopeError, file_error

__all__ = ["COLUMNS", "Row", "add_parser", "rows", "write_csv", "write_jsonl"]


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
    except (FileNotFoundError, PermissionError) as e:
        raise file_error(shown, e) from None
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
        help="also the system, process, thermal, GPU and power series",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help="also the events (one row each, with their message and any traceback in 'text')",
    )
    p.set_defaults(func=_run)
