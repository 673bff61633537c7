"""What one exported value is: the row every export format writes (CSV, JSON lines, Parquet).

:func:`edgescope.cli.export.rows` makes them from a trace; the writers only lay them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Row", "Series"]

Series = Literal["metric", "system", "process", "thermal", "gpu", "event"]


@dataclass(frozen=True, slots=True)
class Row:
    """One exported value."""

    series: Series
    run: str
    run_id: str
    key: str
    step: int | None
    t_us: int
    value: float
    text: str = ""
    """An event's message (and traceback); empty for values."""
