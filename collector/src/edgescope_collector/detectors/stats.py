"""The statistics the detectors stand on: pure functions, public and tested on their own."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["median", "robust_z", "linear_fit"]


def median(xs: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def robust_z(value: float, window: Sequence[float]) -> float:
    """How many robust standard deviations ``value`` lies above the window's median.

    The spread is the median absolute deviation scaled by 1.4826 (so that it equals the
    standard deviation for normal data), floored at a millionth of the median's size so that
    a flat window does not make every wiggle infinite.
    """
    med = median(window)
    mad = median([abs(x - med) for x in window]) * 1.4826
    spread = max(mad, abs(med) * 1e-6, 1e-300)
    return (value - med) / spread


def linear_fit(ts: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``(slope, intercept, r2)`` of ys over ts (at least two distinct ts)."""
    n = len(ts)
    mt = sum(ts) / n
    my = sum(ys) / n
    stt = sum((t - mt) ** 2 for t in ts)
    sty = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    if stt == 0:
        return 0.0, my, 0.0
    slope = sty / stt
    r2 = (sty * sty) / (stt * syy) if syy > 0 else 1.0
    return slope, my - slope * mt, r2
