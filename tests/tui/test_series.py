"""Append-only shared series: persistence, min/max summaries, downsampling by column."""

from __future__ import annotations

import math
import random

from edgescope_tui.series import BLOCK, FAN, Log, Series
from hypothesis import given, settings
from hypothesis import strategies as st


def _series(values: list[float]) -> Series:
    s = Series.empty()
    for i, v in enumerate(values):
        s = s.append(float(i), float(i * 10), v)
    return s


def test_older_views_keep_their_points_after_appends() -> None:
    a = _series([1.0, 2.0, 3.0])
    b = a.append(3.0, 30.0, 4.0)
    assert len(a) == 3 and a.last == 3.0
    assert len(b) == 4 and b.last == 4.0
    assert b.y is a.y  # the newest view extends in place


def test_appending_to_an_older_view_branches_without_touching_the_newer() -> None:
    a = _series([1.0, 2.0])
    b = a.append(2.0, 20.0, 5.0)
    c = a.append(2.0, 20.0, -7.0)
    assert list(b.y[: b.n]) == [1.0, 2.0, 5.0]
    assert list(c.y[: c.n]) == [1.0, 2.0, -7.0]
    assert (b.lo, b.hi) == (1.0, 5.0)
    assert (c.lo, c.hi) == (-7.0, 2.0)


def test_non_finite_values_are_counted_and_left_out_of_min_and_max() -> None:
    s = _series([1.0, math.nan, 3.0, math.inf, -2.0])
    assert s.non_finite == 2
    assert (s.lo, s.hi) == (-2.0, 3.0)
    assert s.minmax(0, 5) == (-2.0, 3.0)
    assert _series([math.nan]).minmax(0, 1) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=True, allow_infinity=False, width=32), min_size=1, max_size=3 * BLOCK
    ),
    st.data(),
)
def test_block_minmax_equals_brute_force(values: list[float], data: st.DataObject) -> None:
    s = Series.empty().extend([float(i) for i in range(len(values))], [0.0] * len(values), values)
    i = data.draw(st.integers(0, len(values)))
    j = data.draw(st.integers(i, len(values)))
    finite = [v for v in values[i:j] if math.isfinite(v)]
    expected = (min(finite), max(finite)) if finite else None
    assert s.minmax(i, j) == expected


def test_two_level_summary_equals_brute_force_over_long_series() -> None:
    rng = random.Random(3)
    n = 3 * BLOCK * FAN + 77
    values = [rng.uniform(-1e6, 1e6) for _ in range(n)]
    for k in rng.sample(range(n), 50):
        values[k] = math.nan
    values[BLOCK * FAN : BLOCK * FAN + 2 * BLOCK] = [math.nan] * (2 * BLOCK)  # empty blocks
    s = Series.empty()
    for start in range(0, n, 1000):  # batches, as metric records come
        chunk = values[start : start + 1000]
        s = s.extend([0.0] * len(chunk), [0.0] * len(chunk), chunk)
    assert len(s.cmin) == 3
    for _ in range(300):
        i = rng.randrange(n)
        j = rng.randrange(i, n + 1)
        finite = [v for v in values[i:j] if math.isfinite(v)]
        assert s.minmax(i, j) == ((min(finite), max(finite)) if finite else None)


def test_columns_cover_every_point_once_and_honour_the_cursor() -> None:
    values = [float((i * 37) % 101) for i in range(10_000)]
    s = Series.empty().extend(
        [float(i) for i in range(10_000)], [float(i) for i in range(10_000)], values
    )
    cols = s.columns(0, 9999, 50)
    assert len(cols) == 50
    assert min(c[0] for c in cols if c) == min(values)
    assert max(c[1] for c in cols if c) == max(values)
    # Column k holds exactly the points whose x falls in its slice.
    k = 7
    lo_x, hi_x = 9999 * k / 50, 9999 * (k + 1) / 50
    inside = [v for x, v in enumerate(values) if lo_x < x <= hi_x]
    assert cols[k] == (min(inside), max(inside))
    # With a cursor at 100 points, later columns are empty.
    capped = s.columns(0, 9999, 50, end=100)
    assert capped[0] is not None and all(c is None for c in capped[2:])
    assert s.count_until(99.5) == 100


def test_columns_by_time_use_the_time_column() -> None:
    s = Series.empty().extend([0.0, 1.0, 2.0], [100.0, 200.0, 300.0], [5.0, 6.0, 7.0])
    # Slices are (start, end], the first one closed at x0 too.
    assert s.columns(100, 300, 2, by_time=True) == [(5.0, 6.0), (7.0, 7.0)]


def test_log_is_append_only_and_shares_storage() -> None:
    a: Log[int] = Log.empty()
    b = a.append(1).append(2)
    c = b.append(3)
    d = b.append(4)
    assert a.view() == [] and b.view() == [1, 2] and c.view() == [1, 2, 3] and d.view() == [1, 2, 4]
    assert b[-1] == 2 and list(c) == [1, 2, 3]
    assert c.replace_last(9).view() == [1, 2, 9] and c.view() == [1, 2, 3]
