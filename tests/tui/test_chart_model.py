"""UI-free chart model: TensorBoard's debiased EMA, zooming a spec, drawing sparse series,
the metric filter, and the thresholds shared with the detectors."""

from __future__ import annotations

import math

import pytest
from edgescope_tracing.thresholds import (
    CGROUP_NEAR_LIMIT,
    OOM_LIKELY_SHARE,
    memory_level,
    temperature_level,
)
from edgescope_tui.chartspec import ChartSpec, Line, smoothed, x_extent, zoomed
from edgescope_tui.series import Series, ema
from edgescope_tui.views import filter_keys
from edgescope_tui.widgets.chart import draw_rows


def series(ys: list[float]) -> Series:
    return Series.empty().extend(range(len(ys)), range(len(ys)), ys)


def tensorboard(ys: list[float], w: float) -> list[float]:
    """TensorBoard's smoothing, as its scalar dashboard computes it."""
    out, last, n = [], 0.0, 0
    for y in ys:
        if not math.isfinite(y):
            out.append(y)
            continue
        last = last * w + (1 - w) * y
        n += 1
        out.append(last / (1 - w**n))
    return out


@pytest.mark.parametrize("w", [0.6, 0.9, 0.99])
def test_ema_is_tensorboards_debiased_average(w: float) -> None:
    ys = [3.0, 2.0, math.nan, 1.5, 1.0, 4.0, 0.5]
    got = list(ema(series(ys), w).y)
    want = tensorboard(ys, w)
    assert got[0] == pytest.approx(3.0)  # debiased: the first point is not pulled to 0
    assert math.isnan(got[2])
    assert [g for g in got if math.isfinite(g)] == pytest.approx(
        [x for x in want if math.isfinite(x)]
    )


def test_ema_of_a_growing_series_smooths_only_the_new_points() -> None:
    s = series([1.0, 2.0, 3.0])
    first = ema(s, 0.9)
    grown = s.extend([3, 4], [3, 4], [10.0, 0.0])
    again = ema(grown, 0.9)
    assert list(again.y) == pytest.approx(tensorboard([1.0, 2.0, 3.0, 10.0, 0.0], 0.9))
    assert first.n == 3  # the earlier result is a view that did not change
    assert ema(grown, 0.0) is grown


def test_smoothing_leaves_time_charts_raw_and_says_its_weight() -> None:
    step = ChartSpec("loss", (Line("loss", series([2.0, 1.0, 0.5])),))
    s = smoothed(step, 0.9)
    assert s.title == "loss (EMA 0.9)"
    assert [ln.faint for ln in s.lines] == [True, False]
    by_time = ChartSpec("memory", step.lines, by_time=True)
    assert smoothed(by_time, 0.9) is by_time
    assert smoothed(step, 0.0) is step


def test_zoom_narrows_the_x_range_and_says_how_far() -> None:
    spec = ChartSpec("loss", (Line("loss", series([float(i) for i in range(101)])),))
    z = zoomed(spec, (0.5, 0.75))
    assert x_extent(z) == (50.0, 75.0) and z.subtitle == "zoom 4x"
    assert zoomed(spec, None) is spec


def test_a_sparse_series_draws_as_a_line_with_markers() -> None:
    """Four samples over 60 columns: joined up, each marked, not four lone dots."""
    sparse = Series.empty().extend([0, 200, 400, 599], [0, 1, 2, 3], [0.2, 0.4, 0.6, 0.79])
    rows = draw_rows(ChartSpec("val_acc", (Line("acc", sparse),)), 70, 12)
    plot = ["".join(t for t, _ in row)[9:] for row in rows[1:-2]]
    assert sum(row.count("•") for row in plot) == 4
    drawn = {i for row in plot for i, ch in enumerate(row) if ch != " " and ch != "│"}
    assert len(drawn) > 50  # the line between the samples fills the columns
    dense = series([math.sin(i / 10) for i in range(600)])
    rows = draw_rows(ChartSpec("sin", (Line("sin", dense),)), 70, 12)
    assert not any("•" in t for row in rows for t, _ in row)


def test_metric_filter_takes_every_word_in_any_case() -> None:
    keys = ["loss", "val_loss", "val_acc", "lr"]
    assert filter_keys(keys, "VAL") == ["val_loss", "val_acc"]
    assert filter_keys(keys, "val loss") == ["val_loss"]
    assert filter_keys(keys, "  ") == keys


def test_threshold_levels() -> None:
    assert OOM_LIKELY_SHARE < CGROUP_NEAR_LIMIT
    assert [memory_level(x, 100) for x in (50, 90, 94, 95, 120)] == [0, 1, 1, 2, 2]
    assert memory_level(5, 0) == 0
    assert [temperature_level(t, 85.0, 5.0) for t in (70, 79.9, 80, 84.9, 85, 90)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert temperature_level(84.9, 85.0) == 0  # without hysteresis: only at the trip
