"""A line chart drawn in braille dots, with axes, min/last values, bands and ticks.

What to draw is a :class:`ChartSpec` (plain frozen data, built from a ``RunState`` by a screen);
:func:`draw` turns a spec into rich ``Text`` for a given size and is tested without an App.
Each series is downsampled to two dot columns per cell with min/max per column (see
:meth:`edgescope_tui.series.Series.columns`), so drawing cost follows the widget's width, not the
length of the history.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from ..chartspec import (
    CLIPPED,
    Band,
    ChartSpec,
    Line,
    fmt_bytes,
    fmt_number,
    visible,
    x_extent,
)

# ChartSpec, Line, Band and the formatters live in edgescope_tui.chartspec (UI-free)
__all__ = ["Chart", "ChartSpec", "Line", "Band", "draw", "fmt_number", "fmt_bytes"]

# Braille dot bits, by (column, row) within a cell of 2 x 4 dots.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@lru_cache(maxsize=256)
def _style(color: str | None, bgcolor: str | None) -> Style:
    return Style(color=color, bgcolor=bgcolor)


def _value(line: Line, v: float) -> float:
    if line.invert:
        v = 1.0 / v if v else math.inf
    return v * line.scale


def _line_stats(line: Line, peak: bool = False) -> tuple[float | None, float | None]:
    """(last, min) of the visible part of a line, in display units; (last, max) with
    ``peak``."""
    s = line.series
    end = s.n if line.end is None else min(line.end, s.n)
    if end == 0:
        return None, None
    last = _value(line, s.y[end - 1])
    mm = s.minmax(0, end)
    if mm is None:
        return last, None
    use_max = line.invert != peak  # 1/y turns the highest value into the lowest
    return last, _value(line, mm[1] if use_max else mm[0])


Run = tuple[str, Style]


class _Rows:
    """Rows of styled runs, appended to like a ``Text`` (a newline starts a row)."""

    def __init__(self) -> None:
        self.rows: list[list[Run]] = [[]]

    def append(self, text: str, style: str | None = None) -> None:
        st = _parse(style)
        for i, part in enumerate(text.split("\n")):
            if i:
                self.rows.append([])
            if part:
                self.rows[-1].append((part, st))

    def extend(self, runs: list[Run]) -> None:
        self.rows[-1].extend(runs)


@lru_cache(maxsize=512)
def _parse(style: str | None) -> Style:
    return Style.parse(style) if style else Style.null()


def _fit(runs: _Rows, width: int) -> list[Run]:
    """The first row of ``runs`` cut to ``width`` cells, with an ellipsis when cut."""
    out: list[Run] = []
    room = width
    for text, st in runs.rows[0]:
        if len(text) >= room:
            cut = text[: max(0, room - 1)] + "…" if len(text) > room else text
            out.append((cut, st))
            return out
        out.append((text, st))
        room -= len(text)
    return out


FAINT = "#585858"
"""The colour of a faint line (the raw values under a smoothed one)."""
SPARSE = 6
"""A line with samples in at most one dot column in this many is sparse: drawn joined and
marked."""


def _bridged(
    conv: list[tuple[float, float] | None], sampled: list[int]
) -> list[tuple[float, float] | None]:
    """Columns without a sample between two that have one, filled in on the straight line
    between them, so that a series sampled more sparsely than the plot's columns reads as a
    line."""
    if len(sampled) < 2 or len(sampled) == sampled[-1] - sampled[0] + 1:
        return conv
    out = list(conv)
    for a, b in itertools.pairwise(sampled):
        if b - a < 2:
            continue
        ca, cb = conv[a], conv[b]
        assert ca is not None and cb is not None
        ya, yb = (ca[0] + ca[1]) / 2, (cb[0] + cb[1]) / 2
        for dx in range(a + 1, b):
            y = ya + (yb - ya) * (dx - a) / (b - a)
            out[dx] = (y, y)
    return out


LABEL_W = 8
"""Cells left of the plot for the y labels (then one for the axis)."""


def draw(spec: ChartSpec, width: int, height: int) -> Text:
    """The chart as text of ``height`` lines of ``width`` cells."""
    text = Text(no_wrap=True, overflow="crop")
    for i, row in enumerate(draw_rows(spec, width, height)):
        if i:
            text.append("\n")
        for part, st in row:
            text.append(part, style=st)
    return text


def draw_rows(spec: ChartSpec, width: int, height: int) -> list[list[Run]]:
    """The chart as ``height`` rows of styled runs, ``width`` cells each at most."""
    out = _Rows()
    if width < 12 or height < 4:
        out.append(spec.title[:width], style="bold")
        return out.rows
    # Title: name, then last and min (or peak) of each line.
    title = _Rows()
    title.append(spec.title, style="bold")
    # values against a threshold first: a narrow chart cuts the end of its title
    for text, alert_color in spec.alerts:
        title.append(f"  {text}", style=f"bold {alert_color}")
    named = [line for line in spec.lines if not line.faint]
    for line in named:
        last, extreme = _line_stats(line, spec.peak)
        if last is None:
            continue
        label = f" {line.label}" if len(named) > 1 else ""
        title.append(f"  {label.strip()}", style=line.color)
        title.append(f" last {spec.fmt(last)}")
        if extreme is not None:
            title.append(f" {'peak' if spec.peak else 'min'} {spec.fmt(extreme)}", style="dim")
    if spec.subtitle:
        title.append(f"  {spec.subtitle}", style="dim")
    out.extend(_fit(title, width))
    out.append("\n")
    plot_h = height - 3
    xs = visible(spec)
    x_range = x_extent(spec)
    if x_range is None or plot_h < 1:
        for i in range(height - 1):
            if i == plot_h // 2:
                out.append(spec.empty.center(width)[:width], style="dim")
            out.append("\n" if i < height - 2 else "")
        return out.rows
    x0, x1 = x_range
    # Columns first, to know the y range.
    label_w = LABEL_W
    plot_w = width - label_w - 1
    dots_w = plot_w * 2
    per_line: list[tuple[Line, list[tuple[float, float] | None]]] = []
    lo, hi = math.inf, -math.inf
    for line, end in xs:
        o = line.offset
        cols = line.series.columns(x0 + o, x1 + o, dots_w, end, by_time=spec.by_time)
        conv: list[tuple[float, float] | None] = []
        for c in cols:
            if c is None:
                conv.append(None)
                continue
            a, b = sorted((_value(line, c[0]), _value(line, c[1])))
            if spec.log:
                if b <= 0:
                    conv.append(None)
                    continue
                a = math.log10(a) if a > 0 else math.log10(b)
                b = math.log10(b)
            if not (math.isfinite(a) and math.isfinite(b)):
                conv.append(None)
                continue
            lo, hi = min(lo, a), max(hi, b)
            conv.append((a, b))
        per_line.append((line, conv))
    if not math.isfinite(lo):
        lo, hi = 0.0, 1.0
    clipped = False
    if spec.robust:
        lows = sorted(c[0] for _, conv in per_line for c in conv if c is not None)
        highs = sorted(c[1] for _, conv in per_line for c in conv if c is not None)
        p5, p95 = lows[len(lows) // 20], highs[(len(highs) * 19) // 20]
        spread = (p95 - p5) or abs(p95) * 0.05 or 1.0
        if hi > p95 + 3 * spread:
            hi, clipped = p95 + 0.5 * spread, True
        if lo < p5 - 3 * spread:
            lo, clipped = p5 - 0.5 * spread, True
    data_hi = hi
    for y, _, _ in spec.hlines:
        yy = math.log10(y) if spec.log and y > 0 else y
        if not spec.log and (data_hi <= 0 or yy <= data_hi * 4):
            hi = max(hi, yy)
    if spec.y_floor is not None and not spec.log:
        lo = min(lo, spec.y_floor)
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    dots_h = plot_h * 4

    def row_of(v: float) -> int:
        return min(dots_h - 1, max(0, round((hi - v) / (hi - lo) * (dots_h - 1))))

    bits = [[0] * plot_w for _ in range(plot_h)]
    owner: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]
    markers: dict[tuple[int, int], str] = {}
    # faint lines (raw values under a smoothed one) first: the others draw over them
    for line, conv in sorted(per_line, key=lambda lc: not lc[0].faint):
        ink = FAINT if line.faint else line.color
        sampled = [dx for dx, mm in enumerate(conv) if mm is not None]
        # A sparse line (a few samples across the plot) is drawn as a line between its
        # samples, each marked, rather than as scattered dots.
        sparse = 0 < len(sampled) <= max(2, dots_w // SPARSE)
        if sparse and not line.faint:
            for dx in sampled:
                mm = conv[dx]
                assert mm is not None
                markers[(row_of((mm[0] + mm[1]) / 2) // 4, dx // 2)] = line.color
        conv = _bridged(conv, sampled)
        prev: tuple[int, int] | None = None
        for dx, mm in enumerate(conv):
            if mm is None:
                continue
            top, bot = row_of(mm[1]), row_of(mm[0])
            if prev is not None:
                ptop, pbot = prev
                if top > pbot:
                    top = pbot
                if bot < ptop:
                    bot = ptop
            prev = (row_of(mm[1]), row_of(mm[0]))
            cx, sub = divmod(dx, 2)
            out_of_range = mm[1] > hi or mm[0] < lo
            for r in range(top, bot + 1):
                cy, sr = divmod(r, 4)
                bits[cy][cx] |= _DOTS[sub][sr]
                owner[cy][cx] = CLIPPED if out_of_range else ink
    rules: dict[int, tuple[str, str]] = {}
    for y, label, rule_color in spec.hlines:
        yy = math.log10(y) if spec.log and y > 0 else y
        if lo <= yy <= hi:
            rules[row_of(yy) // 4] = (label, rule_color)
    band_style: list[str | None] = [None] * plot_w
    for band in spec.bands:
        b0 = int((band.x0 - x0) / (x1 - x0) * plot_w)
        b1 = int((band.x1 - x0) / (x1 - x0) * plot_w)
        for bx in range(max(0, b0), min(plot_w, max(b1, b0 + 1))):
            band_style[bx] = band.color

    def y_label(v: float) -> str:
        return spec.fmt(10**v if spec.log else v)

    labels = {0: y_label(hi), plot_h - 1: y_label(lo)}
    if plot_h >= 5:
        labels[(plot_h - 1) // 2] = y_label((hi + lo) / 2)
    for cy in range(plot_h):
        out.append(labels.get(cy, "")[:label_w].rjust(label_w), style="dim")
        out.append("┤" if cy in labels else "│", style="dim")
        rule = rules.get(cy)
        # Cells of the same style go out as one run: far fewer spans to render.
        run: list[str] = []
        run_key: tuple[str | None, str | None] = (None, None)
        for cx in range(plot_w):
            b = bits[cy][cx]
            color: str | None = None
            marker = markers.get((cy, cx))
            if marker is not None:
                ch, color = "•", marker
            elif b:
                ch, color = chr(0x2800 + b), owner[cy][cx]
            elif rule is not None:
                ch, color = "╌", rule[1]
            else:
                ch = " "
            key = (color, band_style[cx])
            if key != run_key and run:
                out.extend([("".join(run), _style(*run_key))])
                run = []
            run_key = key
            run.append(ch)
        if run:
            out.extend([("".join(run), _style(*run_key))])
        out.append("\n")
    axis = ["─"] * plot_w
    axis_styles: list[str | None] = [None] * plot_w
    for x, color in spec.ticks:
        if x0 <= x <= x1:
            tx = min(plot_w - 1, int((x - x0) / (x1 - x0) * plot_w))
            axis[tx] = "┬"
            axis_styles[tx] = color
    out.append(" " * label_w + "└", style="dim")
    start = 0
    for i in range(1, plot_w + 1):
        if i == plot_w or axis_styles[i] != axis_styles[start]:
            out.append("".join(axis[start:i]), style=axis_styles[start] or "dim")
            start = i
    out.append("\n")
    x_fmt = spec.x_fmt or (lambda v: f"{v:.0f}")
    left, right = x_fmt(x0), x_fmt(x1)
    notes = [f"╌ {label}" for _, (label, _) in sorted(rules.items())]
    if clipped:
        notes.append("red: off the scale")
    rule_text = "  ".join(notes)
    mid = rule_text[: max(0, plot_w - len(left) - len(right) - 2)]
    gap = plot_w + 1 - len(left) - len(right) - len(mid)
    out.append(" " * label_w + left, style="dim")
    out.append(" " * max(1, gap // 2) + mid + " " * max(1, gap - gap // 2), style="dim")
    out.append(right, style="dim")
    return out.rows


class Chart(Widget):
    """A braille line chart of one or more series, redrawn when its spec or size changes."""

    DEFAULT_CSS = """
    Chart {
        height: 1fr;
        min-height: 6;
        padding: 0 1;
    }
    """

    spec: reactive[ChartSpec | None] = reactive(None, always_update=True)
    """What to draw; set it with a new spec to redraw."""

    class Clicked(Message):
        """The plot was clicked at ``x``: a step, or a time in µs when ``by_time``."""

        def __init__(self, chart: Chart, x: float, by_time: bool) -> None:
            super().__init__()
            self.chart = chart
            self.x = x
            self.by_time = by_time

    class Dragged(Message):
        """The plot was dragged across from ``a`` to ``b``: shares of its width (0 left, 1
        right), ``a < b``; the dashboard zooms into that range."""

        def __init__(self, chart: Chart, a: float, b: float) -> None:
            super().__init__()
            self.chart = chart
            self.a = a
            self.b = b

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._strips: list[Strip] = []
        self._drawn: tuple[ChartSpec | None, int, int] | None = None
        self._press: int | None = None
        """The plot column a mouse button went down on."""
        self._dragged = False

    def _column(self, event: events.MouseEvent) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None:
            return None
        return offset.x - LABEL_W - 1

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self._press = self._column(event)
        self._dragged = False
        if self._press is not None:
            self.capture_mouse()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        self.release_mouse()
        start, self._press = self._press, None
        end = self._column(event)
        plot_w = self.size.width - LABEL_W - 1
        if start is None or end is None or plot_w < 1 or abs(end - start) < 2:
            return
        self._dragged = True  # the click that follows is not a jump
        a, b = sorted(min(max(c, 0), plot_w) / plot_w for c in (start, end + 1))
        self.post_message(self.Dragged(self, a, b))

    def render_line(self, y: int) -> Strip:
        # Runs of segments straight to strips: no markup or text layout on the way.
        width, height = self.size
        key = (self.spec, width, height)
        if self._drawn != key:
            self._drawn = key
            base = self.visual_style.rich_style
            rows = draw_rows(self.spec, width, height) if self.spec is not None else []
            self._strips = [
                Strip([Segment(t, base + st) for t, st in row]).adjust_cell_length(width, base)
                for row in rows
            ]
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.visual_style.rich_style)

    def on_click(self, event: events.Click) -> None:
        if self._dragged:
            self._dragged = False
            return
        spec = self.spec
        offset = event.get_content_offset(self)
        if spec is None or offset is None:
            return
        extent = x_extent(spec)
        plot_w = self.size.width - LABEL_W - 1
        col = offset.x - LABEL_W - 1
        if extent is None or plot_w < 1 or not 0 <= col < plot_w:
            return
        x0, x1 = extent
        self.post_message(self.Clicked(self, x0 + (col + 0.5) / plot_w * (x1 - x0), spec.by_time))
