"""``edgescope export --format parquet``: a trace's rows as Parquet tables, through pyarrow.

The rows are :func:`edgescope_tracing.export.rows` (:class:`~edgescope_tracing.export.Row`:
one home for what a row is); this module only lays them into Arrow columns and writes them, in
row groups of :data:`BATCH_ROWS` rows, so the memory it needs is bounded whatever the size of
the trace.
``-o`` names:

- a directory (any name not ending in ``.parquet``; made if absent): three tables, always all
  three, each with its schema even when empty::

      metrics.parquet   run, run_id, key, step, time, value        the logged metrics
      system.parquet    series, run, run_id, key, time, value      system, process, thermal,
                                                                   gpu, power
      events.parquet    run, run_id, kind, time, severity, message

- a file ending in ``.parquet``: the one long table of the CSV export (``series``, ``run``,
  ``run_id``, ``key``, ``step``, ``time``, ``value``; ``text`` with ``--events``), with the
  device series only with ``--system`` and the events only with ``--events``.

Types, which pandas (``pd.read_parquet``) and polars (``pl.read_parquet``) read as they are:
``time`` is ``timestamp[us, tz=UTC]`` (microseconds, exact), ``step`` ``int64`` (null for
device figures), ``value`` ``float64`` (NaN and infinities kept), ``severity`` ``int8``, text
columns ``string``. Columns are dictionary-encoded and zstd-compressed in the file. ``t_us``,
the CSV's integer copy of ``time``, is not repeated: the timestamp is exact.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgescope_tracing.export import Row
from edgescope_tracing.files import OutputError, open_binary_output
from edgescope_tracing.text import escape

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BATCH_ROWS", "TABLES", "Written", "is_directory_target", "write_parquet"]

BATCH_ROWS = 64 * 1024
"""Rows per row group (and per batch held in memory before it is written). The export's peak
RSS stays near 240 MB whatever the trace's size (16 MB and 64 MB replay traces alike; pyarrow
alone is 60 MB); 16 Ki rows would take it to 170 MB at no real cost in speed, 128 Ki to 320 MB."""

TABLES = ("metrics", "system", "events")
"""The tables a directory gets, each ``<name>.parquet``."""


def is_directory_target(out: str) -> bool:
    """Whether ``-o out`` names a directory (anything not ending in ``.parquet``)."""
    return not out.lower().endswith(".parquet")


_LAYOUT: dict[str, tuple[tuple[str, str, str], ...]] = {
    "metrics": (
        ("run", "run", "string"),
        ("run_id", "run_id", "string"),
        ("key", "key", "string"),
        ("step", "step", "int64"),
        ("time", "t_us", "time"),
        ("value", "value", "float64"),
    ),
    "system": (
        ("series", "series", "string"),
        ("run", "run", "string"),
        ("run_id", "run_id", "string"),
        ("key", "key", "string"),
        ("time", "t_us", "time"),
        ("value", "value", "float64"),
    ),
    "events": (
        ("run", "run", "string"),
        ("run_id", "run_id", "string"),
        ("kind", "key", "string"),
        ("time", "t_us", "time"),
        ("severity", "value", "int8"),
        ("message", "text", "string"),
    ),
    "long": (
        ("series", "series", "string"),
        ("run", "run", "string"),
        ("run_id", "run_id", "string"),
        ("key", "key", "string"),
        ("step", "step", "int64"),
        ("time", "t_us", "time"),
        ("value", "value", "float64"),
    ),
}
"""Each table's columns: ``(column, the Row field it holds, its type)``, in order (the one
place a :class:`Row` becomes Parquet columns). ``long`` with ``--events`` adds ``text``."""


def _layout(table: str, events: bool) -> tuple[tuple[str, str, str], ...]:
    cols = _LAYOUT[table]
    return (*cols, ("text", "text", "string")) if table == "long" and events else cols


def _schema(layout: tuple[tuple[str, str, str], ...]) -> pa.Schema:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int8": pa.int8(),
        "float64": pa.float64(),
        "time": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, types[kind]) for name, _, kind in layout])


class _Table:
    """One Parquet file being written, a row group at a time."""

    def __init__(self, layout: tuple[tuple[str, str, str], ...], writer: Any) -> None:
        self.schema = _schema(layout)
        self.picks = [Row._fields.index(attr) for _, attr, _ in layout]
        self.writer = writer
        self.pending: list[Row] = []
        self.rows = 0

    def extend(self, rows: list[Row]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        columns = list(zip(*self.pending, strict=True))  # a Row is a tuple: its fields' columns
        arrays = [
            pa.array(columns[i], type=f.type) for i, f in zip(self.picks, self.schema, strict=True)
        ]
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += len(self.pending)
        self.pending = []


@dataclass(frozen=True, slots=True)
class Written:
    """What an export wrote: each file with its rows."""

    files: tuple[tuple[Path, int], ...]

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.files)


def _chunks(data: Iterable[Row]) -> Iterator[list[Row]]:
    it = iter(data)
    while chunk := list(islice(it, BATCH_ROWS)):
        yield chunk


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while row groups are held: a row group is some
    100,000 live tuples of strings and numbers, which hold no cycles, yet each collection walks
    them all; that was three fifths of an export's time (a 16 MB trace: 4.9 s with it, 1.9 s
    without). Reference counting frees everything as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def write_parquet(
    data: Iterable[Row], out: str, *, events: bool = False, not_same_as: Path | None = None
) -> Written:
    """Write ``data`` to ``out`` (a directory or a ``.parquet`` file, see the module); each
    file goes through :func:`~edgescope_tracing.files.open_binary_output`, so a failed export
    leaves what was there before. :class:`OutputError` for a path that cannot be written."""
    if not is_directory_target(out):
        path = Path(out)
        with (
            _no_cyclic_gc(),
            _writing([("long", path, _layout("long", events))], not_same_as) as tables,
        ):
            for chunk in _chunks(data):
                tables["long"].extend(chunk)
        return Written(((path, tables["long"].rows),))
    folder = _directory(Path(out))
    specs = [(name, folder / f"{name}.parquet", _LAYOUT[name]) for name in TABLES]
    with _no_cyclic_gc(), _writing(specs, not_same_as) as tables:
        for chunk in _chunks(data):
            tables["metrics"].extend([r for r in chunk if r.series == "metric"])
            tables["events"].extend([r for r in chunk if r.series == "event"])
            tables["system"].extend([r for r in chunk if r.series not in ("metric", "event")])
    return Written(tuple((path, tables[name].rows) for name, path, _ in specs))


@contextlib.contextmanager
def _writing(
    specs: list[tuple[str, Path, tuple[tuple[str, str, str], ...]]], not_same_as: Path | None
) -> Iterator[dict[str, _Table]]:
    """Open every file of ``specs`` and yield its tables; the last row groups and the footers
    are written, and the files put in place, when the block ends without an error."""
    import pyarrow.parquet as pq

    with contextlib.ExitStack() as stack:
        tables: dict[str, _Table] = {}
        for name, path, layout in specs:
            f = stack.enter_context(open_binary_output(path, not_same_as=not_same_as))
            schema = _schema(layout)
            writer = pq.ParquetWriter(f, schema, compression="zstd", use_dictionary=True)
            tables[name] = _Table(layout, writer)
        yield tables
        for t in tables.values():
            t.flush()
            t.writer.close()


def _directory(folder: Path) -> Path:
    """``folder``, made if absent; anything else in its place is refused."""
    shown = escape(str(folder))
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        try:
            folder.mkdir()
        except FileNotFoundError:
            raise OutputError(
                f"cannot make {shown}: the directory {escape(str(folder.parent))} does not exist"
            ) from None
        except OSError as e:
            raise OutputError(f"cannot make {shown}: {(e.strerror or str(e)).lower()}") from None
        return folder
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{shown} is a symbolic link; give the directory itself, or remove the link"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            f"{shown} is not a directory; a name ending in .parquet writes one file, any other "
            "name a directory of tables"
        )
    return folder
