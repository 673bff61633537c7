"""What a chart shows, as plain frozen data, and how its numbers read: UI-free.

Views (``edgescope_tui.views``) build :class:`ChartSpec` values from a ``RunState``; the
``Chart`` widget (``widgets/chart.py``) draws them. Neither this module nor the views import
Textual, so the model is tested without an App.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .series import Series, ema

__all__ = [
    "CLIPPED",
    "PALETTE",
    "Band",
    "ChartSpec",
    "Line",
    "fmt_bytes",
    "fmt_number",
    "fmt_offset",
    "x_extent",
    "visible",
    "zoomed",
    "smoothed",
]

CLIPPED = "#ff5f5f"
PALETTE = ("#5fafff", "#ffaf5f", "#87d787", "#ff87af", "#d7af5f", "#af87ff", "#5fd7d7")


def fmt_number(v: float) -> str:
    """A short human number: 3 significant digits (whole numbers from 1,000 to 9,999), SI
    suffixes from 10,000 (``35.6k``), e-notation only for the tiny."""
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e4:
        for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{v / div:.3g}{suffix}"
    if a < 1e-3:
        return f"{v:.2e}"
    if a >= 999.5:  # 1,980 rather than 1.98e+03: whole, with a thousands separator
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_bytes(v: float) -> str:
    """Bytes in binary units: ``1.5 GiB``."""
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    for div, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if a >= div:
            return f"{v / div:.3g} {suffix}"
    return f"{v:.0f} B"


@dataclass(frozen=True, slots=True)
class Line:
    """One series on a chart."""

    label: str
    series: Series
    color: str = PALETTE[0]
    end: int | None = None
    """Only the first ``end`` points count (the replay cursor); None for all."""
    invert: bool = False
    """Draw 1/y (throughput from step time)."""
    scale: float = 1.0
    """Multiply values by this (after ``invert``)."""
    offset: float = 0.0
    """Subtracted from this line's x (a run's start time, to compare runs from their starts)."""
    faint: bool = False
    """Drawn dim under the others and left out of the title: the raw values under a smoothed
    line."""


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded range of x (a throttled period, a gap)."""

    x0: float
    x1: float
    color: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """What a chart shows. ``by_time`` plots against time (µs) instead of step."""

    title: str
    lines: tuple[Line, ...] = ()
    x0: float | None = None
    x1: float | None = None
    by_time: bool = False
    log: bool = False
    """Logarithmic y axis (positive values only)."""
    hlines: tuple[tuple[float, str, str], ...] = ()
    """Horizontal rules: ``(y, label, color)``, e.g. a memory limit."""
    bands: tuple[Band, ...] = ()
    ticks: tuple[tuple[float, str], ...] = ()
    """Marks on the x axis: ``(x, color)``, e.g. events."""
    fmt: Callable[[float], str] = fmt_number
    x_fmt: Callable[[float], str] | None = None
    subtitle: str = ""
    empty: str = "no data yet"
    y_floor: float | None = None
    """Keep this value inside the y range (0 for memory)."""
    robust: bool = False
    """Clip the y range to the bulk of the data when a few columns lie far outside it (a
    slow first step), so the steady state stays readable; clipped columns are drawn red at
    the edge."""
    extra: tuple[str, ...] = field(default_factory=tuple)
    peak: bool = False
    """The title gives each line's highest value beside its last (memory: its peak), not its
    lowest (a loss: how low it got)."""
    alerts: tuple[tuple[str, str], ...] = ()
    """``(text, color)`` after the subtitle: a value coloured against its threshold."""


def fmt_offset(us: float) -> str:
    """Microseconds since the start as ``MM:SS.s`` (``H:MM:SS`` past an hour)."""
    sign = "-" if us < 0 else ""
    s = abs(us) / 1e6
    if s >= 3600:
        h, rest = divmod(int(s), 3600)
        mins, secs = divmod(rest, 60)
        return f"{sign}{h}:{mins:02d}:{secs:02d}"
    m, sec = divmod(s, 60)
    return f"{sign}{int(m):02d}:{sec:04.1f}"


def visible(spec: ChartSpec) -> list[tuple[Line, int]]:
    """Each line with the number of its points shown, lines with none left out."""
    xs = [
        (line, line.series.n if line.end is None else min(line.end, line.series.n))
        for line in spec.lines
    ]
    return [(line, end) for line, end in xs if end > 0]


def x_extent(spec: ChartSpec) -> tuple[float, float] | None:
    """The x range a chart spans (step, or time in µs), None when it has nothing to show."""
    xs = visible(spec)
    if not xs:
        return None

    def col(s: Series) -> array[float]:
        return s.t if spec.by_time else s.x

    x0 = (
        spec.x0 if spec.x0 is not None else min(col(line.series)[0] - line.offset for line, _ in xs)
    )
    x1 = (
        spec.x1
        if spec.x1 is not None
        else max(col(line.series)[end - 1] - line.offset for line, end in xs)
    )
    return (x0, x1) if x1 > x0 else (x0, x0 + 1)


def zoomed(spec: ChartSpec, zoom: tuple[float, float] | None) -> ChartSpec:
    """The spec narrowed to a share of its x range: ``zoom`` is ``(from, to)`` in [0, 1] of
    the whole (None: all of it); the title says how far in."""
    if zoom is None or zoom == (0.0, 1.0):
        return spec
    extent = x_extent(spec)
    if extent is None:
        return spec
    a, b = extent
    f0, f1 = zoom
    factor = 1 / max(f1 - f0, 1e-9)
    return replace(
        spec,
        x0=a + f0 * (b - a),
        x1=a + f1 * (b - a),
        subtitle=" · ".join(x for x in (spec.subtitle, f"zoom {factor:.3g}x") if x),
    )


def smoothed(spec: ChartSpec, weight: float) -> ChartSpec:
    """Each line of a step chart smoothed by TensorBoard's debiased EMA with ``weight``
    (:func:`edgescope_tui.series.ema`), the raw values faint beneath it, the setting in the
    title. Charts against time (device samples) are left as they are, and so is ``weight`` 0.
    """
    if weight <= 0 or spec.by_time or not spec.lines:
        return spec
    raw = tuple(replace(line, faint=True) for line in spec.lines)
    smooth = tuple(replace(line, series=ema(line.series, weight)) for line in spec.lines)
    return replace(spec, lines=raw + smooth, title=f"{spec.title} (EMA {weight:g})")
