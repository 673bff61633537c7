"""What one exported value is: the row every export format writes (CSV, JSON lines, Parquet).

:func:`edgescope.cli.export.rows` makes them from a trace; the writers only lay them out.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["Row", "Series"]

Series = Literal["metric", "system", "process", "thermal", "gpu", "event"]


class Row(NamedTuple):
    """One exported value. A named tuple, not a dataclass: an export makes one per value (some
    100,000 per trace MB), and a tuple is made three times as fast as a frozen dataclass."""

    series: Series
    run: str
    run_id: str
    key: str
    step: int | None
    t_us: int
    value: float
    text: str = ""
    """An event's message (and traceback); empty for values."""
