"""Append-only columns that successive frozen states share, and min/max downsampling.

A :class:`Series` is a frozen view of the first ``n`` points of three ``array('d')`` columns:
``x`` (a step, or a time), ``t`` (time in µs) and ``y`` (the value). Appending to the newest view
extends the shared arrays in place and returns a new view with a larger ``n``; older views keep
seeing their first ``n`` points, so a fold stays pure while costing O(1) per point. Appending to
an older view (a branch) copies first.

Drawing cost does not grow with history: :meth:`Series.columns` gives the min and max of each
screen column from a two-level summary kept as points arrive (min/max of every ``BLOCK``
points, and of every ``FAN`` blocks), so a column reads at most a few hundred figures whether it
spans a thousand points or a hundred million.
"""

from __future__ import annotations

import math
import weakref
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Series", "Log", "BLOCK", "FAN", "EMA_WEIGHTS", "ema"]

BLOCK = 64
"""Points per block of the first level of the min/max summary."""
FAN = 64
"""Blocks per block of the second level."""

T = TypeVar("T")


def _finite_minmax(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    if math.isfinite(sum(values)):  # every value finite: min and max run in C
        return min(values), max(values)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return min(finite), max(finite)


def _summary(lows: array[float], highs: array[float], a: int, b: int) -> tuple[float, float] | None:
    """Min of ``lows[a:b]`` and max of ``highs[a:b]``, leaving out NaN (blocks with no value)."""
    if b <= a:
        return None
    lo_s, hi_s = lows[a:b], highs[a:b]
    if math.isnan(sum(lo_s)):
        lo_l = [v for v in lo_s if not math.isnan(v)]
        if not lo_l:
            return None
        return min(lo_l), max(v for v in hi_s if not math.isnan(v))
    return min(lo_s), max(hi_s)


def _non_finite(values: Sequence[float]) -> int:
    if math.isfinite(sum(values)):
        return 0
    return sum(1 for v in values if not math.isfinite(v))


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """The first ``n`` points of shared columns, with the finite min/max and the last value."""

    x: array[float]
    t: array[float]
    y: array[float]
    bmin: array[float]
    """Finite minimum of each complete block (NaN for a block without finite values)."""
    bmax: array[float]
    cmin: array[float]
    """The same over every ``FAN`` blocks."""
    cmax: array[float]
    n: int = 0
    lo: float = math.nan
    """Smallest finite value so far (NaN while there is none)."""
    hi: float = math.nan
    """Largest finite value so far."""
    non_finite: int = 0
    """How many values were NaN or infinite."""

    @staticmethod
    def empty() -> Series:
        def col() -> array[float]:
            return array("d")

        return Series(col(), col(), col(), col(), col(), col(), col())

    def __len__(self) -> int:
        return self.n

    @property
    def last(self) -> float | None:
        return self.y[self.n - 1] if self.n else None

    @property
    def last_x(self) -> float | None:
        return self.x[self.n - 1] if self.n else None

    @property
    def last_t(self) -> float | None:
        return self.t[self.n - 1] if self.n else None

    def _own(self) -> Series:
        """This view if it is the newest user of its arrays, else a private copy."""
        if len(self.y) == self.n:
            return self
        nb = self.n // BLOCK
        nc = nb // FAN
        return Series(
            self.x[: self.n],
            self.t[: self.n],
            self.y[: self.n],
            self.bmin[:nb],
            self.bmax[:nb],
            self.cmin[:nc],
            self.cmax[:nc],
            self.n,
            self.lo,
            self.hi,
            self.non_finite,
        )

    def append(self, x: float, t: float, y: float) -> Series:
        """A view with one point added (the common case, kept cheap)."""
        s = self._own()
        s.x.append(x)
        s.t.append(t)
        s.y.append(y)
        n = s.n + 1
        if n % BLOCK == 0:
            s._summarize(n)
        lo, hi, bad = s.lo, s.hi, s.non_finite
        if math.isfinite(y):
            if not lo <= y:  # also when lo is NaN (no finite value yet)
                lo = y
            if not hi >= y:
                hi = y
        else:
            bad += 1
        return Series(s.x, s.t, s.y, s.bmin, s.bmax, s.cmin, s.cmax, n, lo, hi, bad)

    def _summarize(self, n: int) -> None:
        """Summarize the blocks completed by the first ``n`` points."""
        for b in range(len(self.bmin), n // BLOCK):
            mm = _finite_minmax(self.y[b * BLOCK : (b + 1) * BLOCK])
            self.bmin.append(mm[0] if mm else math.nan)
            self.bmax.append(mm[1] if mm else math.nan)
        for c in range(len(self.cmin), len(self.bmin) // FAN):
            mm = _summary(self.bmin, self.bmax, c * FAN, (c + 1) * FAN)
            self.cmin.append(mm[0] if mm else math.nan)
            self.cmax.append(mm[1] if mm else math.nan)

    def extend(self, xs: Sequence[float], ts: Sequence[float], ys: Sequence[float]) -> Series:
        """A view with the points added (``xs``, ``ts`` and ``ys`` of equal length)."""
        if not ys:
            return self
        s = self._own()
        s.x.extend(xs)
        s.t.extend(ts)
        s.y.extend(ys)
        n = s.n + len(ys)
        s._summarize(n)
        lo, hi, bad = s.lo, s.hi, s.non_finite
        mm = _finite_minmax(ys)
        bad += _non_finite(ys)
        if mm is not None:
            lo = mm[0] if math.isnan(lo) else min(lo, mm[0])
            hi = mm[1] if math.isnan(hi) else max(hi, mm[1])
        return Series(s.x, s.t, s.y, s.bmin, s.bmax, s.cmin, s.cmax, n, lo, hi, bad)

    def tail(self, k: int) -> Series:
        """A new series of the last ``k`` points only (copied: the rest can be freed)."""
        if k >= self.n:
            return self
        i = self.n - max(k, 0)
        return Series.empty().extend(self.x[i : self.n], self.t[i : self.n], self.y[i : self.n])

    # --- reading ---------------------------------------------------------------------------

    def count_until(self, t_us: float | None) -> int:
        """How many points have a time at or before ``t_us`` (all of them for ``None``)."""
        if t_us is None:
            return self.n
        return bisect_right(self.t, t_us, 0, self.n)

    def index_of_x(self, x: float, end: int | None = None) -> int:
        """The first point with ``x`` at or after the given one (points are in ``x`` order)."""
        return bisect_left(self.x, x, 0, self.n if end is None else end)

    def _raw(self, i: int, j: int) -> tuple[float, float] | None:
        return _finite_minmax(self.y[i:j]) if j > i else None

    def minmax(self, i: int, j: int) -> tuple[float, float] | None:
        """Finite min and max of points ``i`` to ``j - 1``, from the two-level summary."""
        if j <= i:
            return None
        b0 = -(-i // BLOCK)
        b1 = j // BLOCK
        if b1 <= b0:
            return self._raw(i, j)
        parts = [self._raw(i, b0 * BLOCK), self._raw(b1 * BLOCK, j)]
        c0 = -(-b0 // FAN)
        c1 = b1 // FAN
        if c1 <= c0:
            parts.append(_summary(self.bmin, self.bmax, b0, b1))
        else:
            parts.append(_summary(self.bmin, self.bmax, b0, c0 * FAN))
            parts.append(_summary(self.bmin, self.bmax, c1 * FAN, b1))
            parts.append(_summary(self.cmin, self.cmax, c0, c1))
        found = [p for p in parts if p is not None]
        if not found:
            return None
        return min(p[0] for p in found), max(p[1] for p in found)

    def columns(
        self, x0: float, x1: float, width: int, end: int | None = None, *, by_time: bool = False
    ) -> list[tuple[float, float] | None]:
        """Min and max of the points in each of ``width`` equal slices of ``[x0, x1]``.

        Only the first ``end`` points count (a replay cursor). A column without points is None.
        ``by_time`` slices by the time column instead of ``x``.
        """
        xs = self.t if by_time else self.x
        end = self.n if end is None else min(end, self.n)
        out: list[tuple[float, float] | None] = []
        if width <= 0:
            return out
        span = (x1 - x0) or 1.0
        i = bisect_left(xs, x0, 0, end)
        for c in range(width):
            edge = x0 + span * (c + 1) / width if c < width - 1 else x1
            j = bisect_right(xs, edge, i, end)
            out.append(self.minmax(i, j))
            i = j
        return out


@dataclass(frozen=True, slots=True, eq=False)
class Log(Generic[T]):
    """The first ``n`` items of a shared list: an append-only log for frozen states."""

    items: list[T]
    n: int = 0

    @staticmethod
    def empty() -> Log[T]:
        return Log([])

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[T]:
        return iter(self.items[: self.n])

    def __getitem__(self, i: int) -> T:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.items[i % self.n]

    def view(self) -> list[T]:
        """The items as a new list."""
        return self.items[: self.n]

    def append(self, item: T) -> Log[T]:
        items = self.items if len(self.items) == self.n else self.items[: self.n]
        items.append(item)
        return Log(items, self.n + 1)

    def replace_last(self, item: T) -> Log[T]:
        """A log whose last item is ``item`` instead (copies: logs of spans are short)."""
        items = self.items[: self.n - 1]
        items.append(item)
        return Log(items, self.n)


_EMA_CACHE: dict[tuple[int, float], tuple[weakref.ref[array[float]], int, float, int, Series]] = {}
"""(id of a series' value column, weight) -> (that column, points smoothed, running value,
finite points, the smoothed series): a live series grows by a few points per redraw, and
only those are smoothed again."""
EMA_WEIGHTS = (0.0, 0.6, 0.9, 0.99)
"""The smoothing weights a key cycles through (0: off), as TensorBoard offers them."""


def ema(s: Series, weight: float) -> Series:
    """TensorBoard's debiased exponential moving average of ``s`` with ``weight`` in [0, 1).

    ``last = last * weight + (1 - weight) * y`` over the finite values, divided by
    ``1 - weight ** count`` so the first points are not pulled towards 0; a non-finite value
    stays non-finite and leaves the average as it was. Same x and t as ``s``.
    """
    if weight <= 0 or not s.n:
        return s
    key = (id(s.y), weight)
    cached = _EMA_CACHE.get(key)
    start, last, count, out = 0, 0.0, 0, Series.empty()
    if cached is not None and cached[0]() is s.y and cached[1] <= s.n and cached[4].n == cached[1]:
        _, start, last, count, out = cached
    if start == s.n:
        return out
    ys: list[float] = []
    for v in s.y[start : s.n]:
        if math.isfinite(v):
            last = last * weight + (1 - weight) * v
            count += 1
            ys.append(last / (1 - weight**count))
        else:
            ys.append(v)
    out = out.extend(s.x[start : s.n], s.t[start : s.n], ys)
    if len(_EMA_CACHE) > 256:  # columns of series no longer drawn
        for k in [k for k, c in _EMA_CACHE.items() if c[0]() is None]:
            del _EMA_CACHE[k]
    _EMA_CACHE[key] = (weakref.ref(s.y), s.n, last, count, out)
    return out
