"""``edgescope export --format parquet``: a trace's rows as Parquet tables, through pyarrow.

The rows are :func:`edgescope.cli.export.rows` (:class:`~edgescope.cli._row.Row`: one home for
what a row is); this module only lays them into Arrow columns and writes them, in row groups of
:data:`BATCH_ROWS` rows, so the memory it needs is bounded whatever the size of the trace.
``-o`` names:

- a directory (any name not ending in ``.parquet``; made if absent): three tables, always all
  three, each with its schema even when empty::

      metrics.parquet   run, run_id, key, step, time, value        the logged metrics
      system.parquet    series, run, run_id, key, time, value      system, process, thermal, gpu
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
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgescope_tracing.files import OutputError, open_binary_output
from edgescope_tracing.text import escape

from edgescope.cli._row import Row

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BATCH_ROWS", "TABLES", "Written", "is_directory_target", "write_parquet"]

BATCH_ROWS = 128 * 1024
"""Rows per row group (and per batch held in memory before it is written)."""

TABLES = ("metrics", "system", "events")
"""The tables a directory gets, each ``<name>.parquet``."""


def is_directory_target(out: str) -> bool:
    """Whether ``-o out`` names a directory (anything not ending in ``.parquet``)."""
    return not out.lower().endswith(".parquet")


def _schemas(events: bool) -> dict[str, pa.Schema]:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    s = pa.string()
    return {
        "metrics": pa.schema(
            [
                ("run", s),
                ("run_id", s),
                ("key", s),
                ("step", pa.int64()),
                ("time", ts),
                ("value", pa.float64()),
            ]
        ),
        "system": pa.schema(
            [
                ("series", s),
                ("run", s),
                ("run_id", s),
                ("key", s),
                ("time", ts),
                ("value", pa.float64()),
            ]
        ),
        "events": pa.schema(
            [
                ("run", s),
                ("run_id", s),
                ("kind", s),
                ("time", ts),
                ("severity", pa.int8()),
                ("message", s),
            ]
        ),
        "long": pa.schema(
            [
                ("series", s),
                ("run", s),
                ("run_id", s),
                ("key", s),
                ("step", pa.int64()),
                ("time", ts),
                ("value", pa.float64()),
                *([("text", s)] if events else []),
            ]
        ),
    }


def _columns(table: str, rows: list[Row]) -> dict[str, list[Any]]:
    """The columns of ``table`` from its rows (the one place a Row becomes Parquet columns)."""
    base: dict[str, list[Any]] = {
        "run": [r.run for r in rows],
        "run_id": [r.run_id for r in rows],
    }
    time = [r.t_us for r in rows]
    if table == "events":
        return {
            **base,
            "kind": [r.key for r in rows],
            "time": time,
            "severity": [r.value for r in rows],
            "message": [r.text for r in rows],
        }
    cols = {"series": [r.series for r in rows], **base, "key": [r.key for r in rows]}
    if table != "system":
        cols["step"] = [r.step for r in rows]
    cols["time"] = time
    cols["value"] = [r.value for r in rows]
    if table == "long":
        cols["text"] = [r.text for r in rows]
    return cols


@dataclass(slots=True)
class _Table:
    """One Parquet file being written, a row group at a time."""

    name: str
    schema: pa.Schema
    writer: Any
    pending: list[Row] = field(default_factory=list)
    rows: int = 0

    def add(self, row: Row) -> None:
        self.pending.append(row)
        if len(self.pending) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        cols = _columns(self.name, self.pending)
        arrays = [pa.array(cols[f.name], type=f.type) for f in self.schema]
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


def _table_for(row: Row) -> str:
    if row.series == "metric":
        return "metrics"
    return "events" if row.series == "event" else "system"


def write_parquet(
    data: Iterable[Row], out: str, *, events: bool = False, not_same_as: Path | None = None
) -> Written:
    """Write ``data`` to ``out`` (a directory or a ``.parquet`` file, see the module); each
    file goes through :func:`~edgescope_tracing.files.open_binary_output`, so a failed export
    leaves what was there before. :class:`OutputError` for a path that cannot be written."""
    schemas = _schemas(events)
    if not is_directory_target(out):
        path = Path(out)
        with _writing([("long", path, schemas["long"])], not_same_as) as tables:
            (table,) = tables.values()
            for row in data:
                table.add(row)
        return Written(((path, tables["long"].rows),))
    folder = _directory(Path(out))
    specs = [(name, folder / f"{name}.parquet", schemas[name]) for name in TABLES]
    with _writing(specs, not_same_as) as tables:
        for row in data:
            tables[_table_for(row)].add(row)
    return Written(tuple((path, tables[name].rows) for name, path, _ in specs))


@contextlib.contextmanager
def _writing(
    specs: list[tuple[str, Path, pa.Schema]], not_same_as: Path | None
) -> Iterator[dict[str, _Table]]:
    """Open every file of ``specs`` and yield its tables; the last row groups and the footers
    are written, and the files put in place, when the block ends without an error."""
    import pyarrow.parquet as pq

    with contextlib.ExitStack() as stack:
        tables: dict[str, _Table] = {}
        for name, path, schema in specs:
            f = stack.enter_context(open_binary_output(path, not_same_as=not_same_as))
            writer = pq.ParquetWriter(f, schema, compression="zstd", use_dictionary=True)
            tables[name] = _Table(name, schema, writer)
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
