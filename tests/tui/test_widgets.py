"""Pure drawing: charts, the replay timeline, the icicle and the dashboard's chart specs."""

from __future__ import annotations

import math

from edgescope_tracing import GpuSample, Metrics, ProcessSample, RunStart
from edgescope_tui import views
from edgescope_tui.series import Series
from edgescope_tui.state import StackNode, fold_all
from edgescope_tui.widgets.chart import (
    Band,
    ChartSpec,
    Line,
    draw,
    draw_rows,
    fmt_bytes,
    fmt_number,
)
from edgescope_tui.widgets.icicle import draw_icicle
from edgescope_tui.widgets.timeline import TimelineSpec, draw_timeline, fmt_offset
from h200_trace import h200_records


def _line(values: list[float]) -> Series:
    n = len(values)
    return Series.empty().extend([float(i) for i in range(n)], [float(i) for i in range(n)], values)


def test_chart_has_title_axes_and_fills_its_size() -> None:
    spec = ChartSpec("loss", (Line("loss", _line([3.0, 2.0, 1.5, 1.0, 1.2]), end=5),))
    text = draw(spec, 40, 10).plain.split("\n")
    assert len(text) == 10
    assert all(len(row) <= 40 for row in text)
    assert text[0].startswith("loss") and "last 1.2" in text[0] and "min 1" in text[0]
    assert text[1].strip().startswith("3┤")  # the top label is the maximum
    assert text[-3].strip().startswith("1┤")  # the bottom label is the minimum
    assert "└" in text[-2] and text[-1].split() == ["0", "4"]
    assert any(0x2800 < ord(ch) <= 0x28FF for row in text[1:-2] for ch in row)


def test_chart_cursor_cuts_the_line() -> None:
    series = _line([1.0, 2.0, 3.0, 100.0])
    spec = ChartSpec("m", (Line("m", series, end=3),), x0=0, x1=3)
    title = draw(spec, 40, 8).plain.split("\n")[0]
    assert "last 3" in title and "100" not in title


def test_chart_without_data_says_so() -> None:
    text = draw(ChartSpec("memory", empty="no memory samples"), 40, 8).plain
    assert "no memory samples" in text


def test_log_scale_labels_span_the_decades() -> None:
    spec = ChartSpec("loss", (Line("loss", _line([1.0, 1e-2, 1e-4])),), log=True)
    rows = draw(spec, 40, 10).plain.split("\n")
    assert rows[1].strip().startswith("1┤") and rows[-3].strip().startswith("1.00e-04┤")


def test_bands_hlines_ticks_and_clipping() -> None:
    series = _line([5.0] * 50 + [500.0] + [5.0 + (i % 3) * 0.1 for i in range(49)])
    spec = ChartSpec(
        "step time",
        (Line("s", series),),
        bands=(Band(10, 20, "#5f1f1f"),),
        hlines=((5.5, "limit", "red"),),
        ticks=((30.0, "yellow"),),
        robust=True,
    )
    rows = draw_rows(spec, 60, 12)
    plain = ["".join(t for t, _ in row) for row in rows]
    assert "┬" in plain[-2]
    assert "╌ limit" in plain[-1] and "off the scale" in plain[-1]
    backgrounds = {st.bgcolor.name for row in rows for _, st in row if st.bgcolor is not None}
    assert "#5f1f1f" in backgrounds
    # The 500 outlier is clipped: the top label stays near the bulk of the data.
    top = float(plain[1].split("┤")[0])
    assert top < 10


def test_formats() -> None:
    assert fmt_number(0.000012345) == "1.23e-05"
    assert fmt_number(356_123) == "356k"
    assert fmt_number(2.5) == "2.5"
    assert fmt_number(1980.0) == "1,980" and fmt_number(-1590.4) == "-1,590"
    assert fmt_number(999.5) == "1,000" and fmt_number(999.4) == "999"
    assert fmt_number(9999.0) == "9,999" and fmt_number(10_000) == "10k"
    assert fmt_bytes(22.4e9) == "20.9 GiB"
    assert fmt_bytes(512) == "512 B"
    assert fmt_offset(62_500_000) == "01:02.5"
    assert fmt_offset(3_725_000_000) == "1:02:05"
    assert fmt_number(math.inf) == "inf"


def test_timeline_marks_cursor_events_spans_gaps_and_unloaded_part() -> None:
    spec = TimelineSpec(
        t0=0,
        t1=100,
        cursor=50,
        loaded_until=80,
        playing=True,
        speed=4.0,
        step=1234,
        events=((10, 2),),
        spans=((20, 30),),
        gaps=((60, 65),),
    )
    text = draw_timeline(spec, 50)
    bar, status = text.plain.split("\n")
    assert bar.index("●") == 25 and bar.index("◆") == 5
    assert "▒" in bar[30:33] and "┄" in bar[41:]
    assert status.startswith("▶ 4x") and "00:00.0 / 00:00.0" in status and "step 1234" in status
    paused = draw_timeline(TimelineSpec(0, 100, None), 50).plain
    assert paused.split("\n")[0].endswith("●") and "⏸ 1x" in paused
    live = draw_timeline(TimelineSpec(0, 100, None, live=True, connection="live"), 50).plain
    assert "● LIVE" in live
    dropped = TimelineSpec(0, 100, None, live=True, connection="disconnected")
    assert "○ DISCONNECTED" in draw_timeline(dropped, 50).plain


def test_icicle_widths_follow_counts() -> None:
    tree = StackNode(
        "all",
        100,
        (StackNode("main", 100, (StackNode("forward", 75), StackNode("backward", 25))),),
    )
    rows = draw_icicle(tree, 40, 4).plain.split("\n")
    assert rows[0].startswith("all 100%")
    assert rows[1].startswith("main 100%")
    assert rows[2].startswith("forward 75%") and rows[2][30:].startswith("backward")
    assert "no stack samples" in draw_icicle(StackNode("all", 0), 40, 4).plain


def test_overview_specs_on_the_h200_run() -> None:
    s = fold_all(h200_records(2000))
    specs = views.overview_specs(s, 0, None, s.stream.first_us or 0, s.stream.last_us or 0)
    assert list(specs) == ["loss", "step", "memory", "thermal"]
    assert specs["loss"].title == "loss" and specs["loss"].log
    assert "steps/s" in specs["step"].subtitle and "samples/s" in specs["step"].subtitle
    assert [ln.label for ln in specs["memory"].lines] == ["RSS", "CUDA", "CUDA peak"]
    assert specs["thermal"].lines[0].label == "gpu0"
    system = views.system_specs(s, 0, None, s.stream.first_us or 0, s.stream.last_us or 0)
    assert system["power"].hlines[0][1] == "limit 700 W"
    assert "gpu0 max 1980 MHz" in system["clocks"].subtitle


def test_thermal_spec_shades_throttled_periods_and_memory_shows_limits() -> None:
    recs = [
        RunStart(0, "aa", "r", "h", 1, t_us=1),
        ProcessSample(
            0, 1, rss=100 << 20, rss_peak=120 << 20, cgroup_limit=1 << 30, t_us=1_000_000
        ),
        GpuSample(0, "gpu", temp_c=80.0, clock_event_reasons=0x20, t_us=1_000_000),
        GpuSample(0, "gpu", temp_c=84.0, clock_event_reasons=0x20, t_us=2_000_000),
        GpuSample(0, "gpu", temp_c=70.0, clock_event_reasons=0, t_us=3_000_000),
        Metrics(0, "loss", (1,), (3_000_000,), (1.0,), t_us=3_000_000),
    ]
    s = fold_all(recs)
    thermal = views.thermal_spec(s, None, 1, 3_000_000)
    assert [(b.x0, b.x1) for b in thermal.bands] == [(1_000_000, 3_000_000)]
    assert "throttled: 1 period(s)" in thermal.subtitle
    memory = views.memory_spec(s, 0, None, 1, 3_000_000)
    assert "peak 120 MiB" in memory.subtitle and "cgroup limit 1 GiB" in memory.subtitle
    assert memory.hlines[0][0] == 1 << 30


def test_metrics_say_their_units_where_the_name_does() -> None:
    from edgescope_tracing import Metrics, RunStart
    from edgescope_tui.state import fold_all
    from edgescope_tui.widgets.chart import draw

    recs = [
        RunStart(0, "ab", "r", "h", 1, t_us=1),
        Metrics(0, "step_time", (0, 1), (10, 20), (0.00583, 0.00601), t_us=20),
        Metrics(0, "cuda_max_alloc", (0, 1), (10, 20), (2.9e9, 2.9e9), t_us=20),
        Metrics(0, "accuracy", (0, 1), (10, 20), (0.5, 0.6), t_us=20),
    ]
    s = fold_all(recs)
    step = views.metric_spec(s, 0, "step_time", None)
    assert step.fmt(step.lines[0].scale * 0.00583) == "5.83 ms"
    assert "6.01 ms" in draw(step, 60, 8).plain  # the last value, in ms, not 0.00601
    mem = views.metric_spec(s, 0, "cuda_max_alloc", None)
    assert mem.fmt(2.9e9) == "2.7 GiB"
    acc = views.metric_spec(s, 0, "accuracy", None)
    assert acc.fmt(0.6) == "0.6" and acc.lines[0].scale == 1.0


def test_the_memory_chart_gives_peaks_not_minimums() -> None:
    from edgescope_tracing import ProcessSample, RunStart
    from edgescope_tui.state import fold_all
    from edgescope_tui.widgets.chart import draw

    mib = 1 << 20
    recs = [RunStart(0, "ab", "r", "h", 1, t_us=1)] + [
        ProcessSample(0, 1, rss=r * mib, rss_peak=900 * mib, t_us=1_000_000 * (i + 1))
        for i, r in enumerate((100, 800, 300))
    ]
    s = fold_all(recs)
    spec = views.memory_spec(s, 0, None, 0, 4_000_000)
    assert spec.peak
    head = draw(spec, 160, 8).plain.splitlines()[0]
    assert "last 300 MiB peak 800 MiB" in head and "min" not in head
    assert spec.subtitle.startswith("peak 900 MiB")  # the peaks first, where nothing cuts them
    loss = views.metric_spec(fold_all([]), 0, "loss", None)
    assert not loss.peak  # a loss says how low it got
