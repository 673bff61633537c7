"""RunState: a pure fold of records, tested on the real H200 run and on hand-made signals."""

from __future__ import annotations

import json

import pytest
from edgescope_tracing import (
    CpuFreq,
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    ProcessSample,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    ThermalSample,
    ThermalZone,
)
from edgescope_tracing.signals import clock_event_reason_names
from edgescope_tui.sources.base import Status
from edgescope_tui.state import (
    RunState,
    fold,
    fold_all,
    stack_tree,
    top_functions,
)
from h200_trace import FIXTURE, h200_records


@pytest.fixture(scope="module")
def h200() -> RunState:
    return fold_all(h200_records(2000))


def _fixture_steps(n: int) -> list[dict[str, float]]:
    out = []
    with FIXTURE.open() as f:
        for line in f:
            x = json.loads(line)
            if x["kind"] == "step":
                out.append(x)
                if len(out) == n:
                    break
    return out


def test_h200_metrics_are_folded_loss_first(h200: RunState) -> None:
    assert h200.metric_keys(0) == ["loss", "step_ns", "cuda_alloc", "cuda_max_alloc"]
    loss = h200.metrics[(0, "loss")]
    steps = _fixture_steps(2000)
    assert len(loss) == 2000
    assert loss.y[0] == pytest.approx(steps[0]["loss"])
    assert loss.last == pytest.approx(steps[-1]["loss"])
    assert loss.lo == pytest.approx(min(x["loss"] for x in steps))
    assert h200.runs[0].name == "h200-mlp"
    assert h200.runs[0].config["batch_size"] == 2048


def test_step_time_comes_from_the_logged_step_ns(h200: RunState) -> None:
    st = h200.step_seconds(0)
    assert st is not None and len(st) == 2000
    steps = _fixture_steps(2000)
    assert st.y[0] == pytest.approx(steps[0]["step_ns"] / 1e9)  # the 447 ms first step
    assert st.last == pytest.approx(steps[-1]["step_ns"] / 1e9)


def test_step_time_is_derived_from_step_timestamps_when_not_logged() -> None:
    s = fold(RunState(), RunStart(0, "ab", "r", "h", 1, t_us=1_000))
    s = fold(s, Metrics(0, "loss", (0, 1, 2), (1_000_000, 1_010_000, 1_030_000), (3.0, 2.0, 1.0)))
    s = fold(s, Metrics(0, "loss", (4,), (1_070_000,), (0.5,)))
    st = s.step_seconds(0)
    assert st is not None
    # 10 ms, 20 ms, then 40 ms over two steps = 20 ms a step.
    assert list(st.y[: st.n]) == pytest.approx([0.01, 0.02, 0.02])
    assert list(st.x[: st.n]) == [1, 2, 4]


def test_memory_and_cuda_peaks(h200: RunState) -> None:
    peak = h200.metrics[(0, "cuda_max_alloc")]
    assert peak.y[0] == pytest.approx(2.888e9, rel=1e-3)
    assert peak.hi > 20e9  # the 20 GB tensor at step 600
    rss = h200.proc[0].rss
    assert len(rss) > 100 and rss.hi > rss.lo


def test_gpu_figures_and_reasons_by_name(h200: RunState) -> None:
    g = h200.gpus[0]
    assert g.name == "NVIDIA H200"
    assert g.temp_c.lo == 38 and g.temp_c.hi >= 50
    assert g.power_limit_w == 700
    assert g.sm_clock_mhz.hi == 1980
    assert g.reasons == ()  # busy: no clock-event reason
    # The idle start (reason 1) is not throttling.
    assert h200.spans() == []
    assert clock_event_reason_names(0x1 | 0x4 | 0x40) == (
        "gpu_idle",
        "sw_power_cap",
        "hw_thermal_slowdown",
    )
    assert clock_event_reason_names(0x400) == ("reliability",)


def _gpu(t: int, reasons: int, seq: int) -> GpuSample:
    return GpuSample(0, "gpu", temp_c=80.0, clock_event_reasons=reasons, t_us=t, seq=seq)


def test_gpu_throttled_periods_become_spans() -> None:
    recs = [
        _gpu(1_000_000, 0, 0),
        _gpu(2_000_000, 0x4, 1),
        _gpu(3_000_000, 0x4 | 0x20, 2),
        _gpu(4_000_000, 0x1, 3),  # idle is not throttled: the period ends
        _gpu(5_000_000, 0x40, 4),
    ]
    s = fold_all(recs)
    spans = s.spans()
    assert [(x.start_us, x.end_us, x.open) for x in spans] == [
        (2_000_000, 4_000_000, False),
        (5_000_000, 5_000_000, True),
    ]
    assert spans[0].reasons == ("sw_power_cap", "sw_thermal_slowdown")
    # At a cursor inside the first period, it is cut there and the second is not there yet.
    assert [(x.start_us, x.end_us) for x in s.spans(2_500_000)] == [(2_000_000, 2_500_000)]


def test_board_limit_and_reliability_are_throttling_too() -> None:
    # The same throttle mask as the collector's detectors (edgescope_tracing.signals).
    s = fold_all([_gpu(1_000_000, 0x200, 0), _gpu(2_000_000, 0x400, 1), _gpu(3_000_000, 0, 2)])
    spans = s.spans()
    assert [(x.start_us, x.end_us, x.open) for x in spans] == [(1_000_000, 3_000_000, False)]
    assert spans[0].reasons == ("board_limit", "reliability")


def test_cpu_counters_and_pi_flags_become_spans() -> None:
    zone = ThermalZone("cpu-thermal", 71.0, (("passive", 80.0, 2.0), ("critical", 95.0, 0.0)))
    recs = [
        ThermalSample(
            zones=(zone,),
            freqs=(CpuFreq(0, 1_500_000, max_khz=2_400_000), CpuFreq(1, 1_700_000)),
            throttle={"cpu0.core_throttle_count": 3, "pi.throttled": 0},
            t_us=1_000_000,
            seq=0,
        ),
        ThermalSample(
            throttle={"cpu0.core_throttle_count": 5, "pi.throttled": 0x50004}, t_us=2_000_000, seq=1
        ),
        ThermalSample(
            throttle={"cpu0.core_throttle_count": 5, "pi.throttled": 0x50000}, t_us=3_000_000, seq=2
        ),
    ]
    s = fold_all(recs)
    assert s.thermal.zones["cpu-thermal"].last == 71.0
    assert s.thermal.zone_trips["cpu-thermal"] == 80.0
    assert s.thermal.cpu_mhz.last == pytest.approx(1600.0)
    assert s.thermal.cpu_max_mhz == 2400.0
    by_source = {x.source: x for x in s.spans()}
    assert by_source["cpu"].start_us == 2_000_000 and by_source["cpu"].end_us == 3_000_000
    assert by_source["cpu"].reasons == ("cpu0.core_throttle_count",)
    assert by_source["pi"].reasons == ("throttled",)
    assert not by_source["pi"].open


def test_stacks_top_functions_and_tree_of_a_window() -> None:
    main, train, fwd, bwd = (StackFrame(n) for n in ("main", "train", "forward", "backward"))
    recs = [
        StackSamples(
            0,
            "python",
            10_000,
            (((main, train, fwd), 6), ((main, train, bwd), 3)),
            t_us=1_000_000,
            seq=0,
        ),
        StackSamples(0, "python", 10_000, (((main, train, bwd), 5),), t_us=2_000_000, seq=1),
    ]
    s = fold_all(recs)
    assert s.stacks.total == 14
    assert s.stacks.self_counts == {"forward": 6, "backward": 8}
    top = top_functions(None, s)
    assert top[0] == ("backward", 8, 8) and top[1] == ("forward", 6, 6)
    first = s.stack_windows(0, 1_500_000)
    assert len(first) == 1
    tree = stack_tree(first)
    assert tree.count == 9
    (m,) = tree.children
    (t,) = m.children
    assert [(c.name, c.count) for c in t.children] == [("forward", 6), ("backward", 3)]


def test_keyframes_restate_runs_and_run_end_is_recorded() -> None:
    start = RunStart(3, "cafe", "resumed", "pi", 77, t_us=5)
    s = fold(RunState(), Keyframe(4, 100, (start,), t_us=10, seq=50))
    assert s.runs[3].name == "resumed"
    s = fold(s, RunEnd(3, exit_code=1, dropped=12, t_us=20, seq=51))
    assert (s.runs[3].end_us, s.runs[3].exit_code, s.runs[3].dropped) == (20, 1, 12)


def test_events_are_kept_in_order_and_cut_at_the_cursor() -> None:
    s = fold_all([Event("mark", f"m{i}", t_us=i * 100, seq=i) for i in range(1, 6)])
    assert [e.message for e in s.events_until(300)] == ["m1", "m2", "m3"]
    assert len(s.events_until(None)) == 5


def test_seq_jumps_and_reported_damage_become_gaps() -> None:
    s = fold(RunState(), Event("mark", "a", t_us=1_000, seq=0))
    s = fold(s, Event("mark", "b", t_us=2_000, seq=1))
    s = fold(s, Event("mark", "c", t_us=5_000, seq=7))
    (gap,) = s.stream.gaps.view()
    assert (gap.first_seq, gap.last_seq, gap.t_us, gap.end_us) == (2, 6, 2_000, 5_000)
    assert gap.reason == "records 2-6 missing"
    # A source that says why: the reason is kept, the span closed at the next record.
    s = fold(s, Status("gap", "bad checksum at byte 99"))
    s = fold(s, Event("mark", "d", t_us=9_000, seq=12))
    last = s.stream.gaps[-1]
    assert (last.reason, last.first_seq, last.last_seq, last.end_us) == (
        "bad checksum at byte 99",
        8,
        11,
        9_000,
    )
    s = fold(s, Status("live"))
    assert s.stream.status == Status("live")


def test_fold_is_pure() -> None:
    recs = h200_records(200)
    cut = [i for i, r in enumerate(recs) if isinstance(r, Metrics)][8]
    half = fold_all(recs[:cut])
    snapshot = (half.stream.records, len(half.metrics[(0, "loss")]), half.stream.last_us)
    full = fold_all(recs[cut:], half)
    assert (half.stream.records, len(half.metrics[(0, "loss")]), half.stream.last_us) == snapshot
    assert full.stream.records == len(recs)
    again = fold_all(recs[cut:], half)
    assert again.metrics[(0, "loss")].last == full.metrics[(0, "loss")].last
    assert list(again.metrics[(0, "loss")].y[:200]) == list(full.metrics[(0, "loss")].y[:200])


def test_trim_keeps_the_newest_half_and_says_from_when(h200: RunState) -> None:
    from edgescope_tui.state import StateBuilder

    b = StateBuilder(h200)
    points = b.points
    b.trim(0.5)
    s = b.freeze()
    loss = s.metrics[(0, "loss")]
    assert len(loss) == 1000 and loss.last == h200.metrics[(0, "loss")].last
    assert list(loss.x[:3]) == [1000.0, 1001.0, 1002.0]
    assert s.stream.trimmed_us is not None and s.stream.first_us == s.stream.trimmed_us > (
        h200.stream.first_us or 0
    )
    assert len(s.gpus[0].temp_c) == len(h200.gpus[0].temp_c) // 2
    assert b.points < points
    assert s.events.view() == h200.events.view()
    # The state it was trimmed from is untouched.
    assert len(h200.metrics[(0, "loss")]) == 2000 and h200.stream.trimmed_us is None


def test_process_sample_peaks_and_limits() -> None:
    s = fold_all(
        [
            ProcessSample(
                0, 1, rss=100, rss_peak=150, cgroup_current=300, cgroup_limit=1000, t_us=1, seq=0
            ),
            ProcessSample(0, 1, rss=120, rss_peak=140, cgroup_peak=400, oom_kills=0, t_us=2, seq=1),
        ]
    )
    p = s.proc[0]
    assert (p.rss.last, p.rss_peak, p.cgroup.last, p.cgroup_peak, p.cgroup_limit) == (
        120,
        150,
        300,
        400,
        1000,
    )


def test_gpu_memory_of_the_runs_processes() -> None:
    """Format 1.1's per-process GPU memory, summed over each run's pids (its own and those of
    its process samples); other processes on the GPU are not the run's."""
    from edgescope_tui import views
    from edgescope_tui.state import StateBuilder

    def gpu(index: int, t: int, *procs: tuple[int, int]) -> GpuSample:
        return GpuSample(index, "H200", mem_used=30 << 30, processes=procs, t_us=t)

    recs = [
        RunStart(0, "aa", "a", "h", 413, t_us=1),
        RunStart(1, "bb", "b", "h", 500, t_us=1),
        ProcessSample(0, 414, rss=1 << 20, t_us=2),  # a data-loader child of run 0
        gpu(0, 3, (413, 20 << 30), (414, 1 << 30), (500, 2 << 30), (999, 5 << 30)),
        gpu(1, 3, (413, 4 << 30)),
        gpu(0, 4, (413, 21 << 30), (500, 2 << 30)),
        gpu(0, 5),  # no process figures (a 1.0 trace, Jetson): nothing added
    ]
    s = fold_all(recs)
    assert list(s.proc[0].gpu_mem[0].y) == [float(21 << 30), float(21 << 30)]
    assert list(s.proc[0].gpu_mem[1].y) == [float(4 << 30)]
    assert list(s.proc[1].gpu_mem[0].y) == [float(2 << 30)] * 2
    assert s.pid_runs == {413: 0, 500: 1, 414: 0}
    memory = views.memory_spec(s, 0, None, 1, 5)
    assert [ln.label for ln in memory.lines][:3] == ["RSS", "GPU0", "GPU1"]
    assert "GPU0 21 GiB" in memory.subtitle
    b = StateBuilder(s)
    b.trim(0.5)
    assert len(b.freeze().proc[0].gpu_mem[0]) == 1


def test_a_gap_event_of_the_sdk_is_a_gap_over_its_time_range() -> None:
    gap = Event(
        "gap",
        "3 items dropped over 2.000 s: no space left on device",
        run=0,
        severity=2,
        detail={"dropped": 3, "from_us": 1_000_000, "to_us": 3_000_000, "reason": "ENOSPC"},
        t_us=1_000_000,
    )
    s = fold_all([gap, Event("gap", "no range", detail={"dropped": 1}, t_us=5)])
    (g,) = s.stream.gaps.view()
    assert (g.t_us, g.end_us) == (1_000_000, 3_000_000) and "3 items dropped" in g.reason
    assert len(s.events) == 2  # still listed as events too
