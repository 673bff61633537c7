"""``inspect`` as a post-mortem (issue #11, "Post-mortem, said plainly"): how each run ended,
where a run that never ended stopped, the stored traceback, memory peaks, top functions, and
like events folded into one line. Also: the summary's memory stays bounded (item 13)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    TraceWriter,
)
from edgescope_tracing.summary import EVENTS_KEPT, exit_words, summarize
from sdkutil import PYTHON, script, sdk_env, trace_files

from edgescope.cli import main

T0 = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC
TB = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 40, in <module>\n'
    "    loss = model(x)\n"
    "RuntimeError: CUDA error: out of memory"
)


def _inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert main(["inspect", str(path), "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def _crashed(path: Path) -> None:
    with TraceWriter(path) as w:
        w.append(RunStart(0, "c0" * 16, "crashed", "pi5", 10, t_us=T0))
        for i in range(5):
            w.append(Metrics(0, "loss", (i,), (T0 + i * 1000,), (1.0,)))
        w.append(
            Event(
                "exception",
                "RuntimeError: CUDA error: out of memory",
                run=0,
                severity=2,
                detail={"type": "builtins.RuntimeError", "traceback": TB},
                t_us=T0 + 6000,
            )
        )
        w.append(RunEnd(0, 1, t_us=T0 + 7000))
        w.append(RunStart(1, "d1" * 16, "killed", "pi5", 11, t_us=T0))
        for i in range(42):
            w.append(Metrics(1, "loss", (i,), (T0 + 3_000_000 + i,), (0.5,)))
        # the last record of run 1 is at 22:13:23; it never got a RunEnd, and the file was closed
        w.append(RunStart(2, "e2" * 16, "termed", "pi5", 12, t_us=T0))
        w.append(RunEnd(2, 143, t_us=T0 + 10_000))
        w.append(RunStart(3, "f3" * 16, "negative", "pi5", 13, t_us=T0))
        w.append(RunEnd(3, -9, t_us=T0 + 10_000))
        w.append(RunStart(4, "a4" * 16, "ok", "pi5", 14, t_us=T0))
        w.append(RunEnd(4, 0, t_us=T0 + 10_000))
        w.append(RunStart(5, "b5" * 16, "unfinished", "pi5", 15, t_us=T0))
        w.append(RunEnd(5, None, 0, t_us=T0 + 10_000))  # the SDK's end with no exit code


def test_how_each_run_ended_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.est"
    _crashed(path)
    text, js = _inspect(path, capsys)
    lines = text.splitlines()
    assert (
        "  run     crashed (c0c0c0c0c0c0) on pi5, pid 10: failed: exit code 1 after 0.0 s "
        "(last step 4), nothing dropped" in lines
    )
    assert (
        "  run     killed (d1d1d1d1d1d1) on pi5, pid 11: lost: the process died without "
        "finishing (SIGKILL or power loss) at 22:13:23 UTC, last step 41" in lines
    )
    assert any("termed" in ln and "exit code 143 (killed by SIGTERM)" in ln for ln in lines)
    assert any("negative" in ln and "failed: killed by SIGKILL" in ln for ln in lines)
    assert any("  run     ok " in ln and "finished after 0.0 s (exit code 0)" in ln for ln in lines)
    assert any("  run     ok " in ln and ln.endswith(", nothing dropped") for ln in lines)
    assert ", nothing dropped" not in next(ln for ln in lines if "killed (d1" in ln)
    assert any("  run     unfinished " in ln and ln.endswith(", nothing dropped") for ln in lines)
    assert "finished" not in next(ln for ln in lines if "killed (d1" in ln)
    # the stored traceback, in text and JSON
    i = lines.index(
        "  crash   run crashed: RuntimeError: CUDA error: out of memory at 22:13:20 UTC"
    )
    assert lines[i + 1 : i + 5] == ["    | " + x for x in TB.splitlines()]
    (crash,) = js["crashes"]
    assert crash["traceback"] == TB and crash["run"] == 0
    assert [e.get("traceback") for e in js["events"]] == [TB]
    states = {r["name"]: (r["state"], r["exit"]) for r in js["runs"]}
    assert states == {
        "crashed": ("failed", "exit code 1"),
        "killed": ("lost", None),
        "termed": ("failed", "exit code 143 (killed by SIGTERM)"),
        "negative": ("failed", "killed by SIGKILL"),
        "ok": ("finished", "exit code 0"),
        "unfinished": ("ended", "exit code not recorded"),
    }
    killed = next(r for r in js["runs"] if r["name"] == "killed")
    assert (killed["last_step"], killed["last_record"]) == (41, "2023-11-14T22:13:23.000041+00:00")


def test_exit_words() -> None:
    assert exit_words(137) == "exit code 137 (killed by SIGKILL)"
    assert exit_words(130) == "exit code 130 (killed by SIGINT)"
    assert exit_words(-15) == "killed by SIGTERM"
    assert exit_words(2) == "exit code 2"
    assert exit_words(255) == "exit code 255"
    assert exit_words(None) == "exit code not recorded"


def test_a_run_the_collector_closed_reads_lost_contact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ingest's own end for a producer that vanished is not "finished"."""
    path = tmp_path / "store.est"
    why = "the producer's connection failed (Connection reset by peer)"
    with TraceWriter(path) as w:
        w.append(RunStart(5, "ab" * 16, "vanished", "jetson", 77, t_us=T0))
        w.append(Metrics(5, "loss", (9,), (T0 + 5_000_000,), (0.1,)))
        t = T0 + 9_000_000
        w.append(
            Event(
                "anomaly",
                f"run 'vanished' (pid 77) ended without a RunEnd: {why}",
                run=5,
                severity=2,
                detail={"pid": 77, "reason": why},
                t_us=t,
            )
        )
        w.append(RunEnd(5, None, 0, t))
    text, js = _inspect(path, capsys)
    assert f"pid 77: lost contact: {why}; last record at 22:13:25 UTC, last step 9" in text
    assert "nothing dropped" not in text  # the collector's stand-in end counts nothing
    (run,) = js["runs"]
    assert (run["state"], run["lost_contact"]) == ("lost contact", why)


def test_like_events_fold_into_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.est"
    sources = ["gpu", "thermal", "jetson", "pi", "rapl", "hwmon", "psi", "nvml"]
    with TraceWriter(path) as w:
        w.append(RunStart(0, "ab" * 16, "r", "h", 1, t_us=T0))
        for i, src in enumerate(sources):
            w.append(
                Event(
                    "log",
                    f"{src} not sampled: not on this machine",
                    detail={"source": src, "skipped": "not on this machine"},
                    t_us=T0 + i,
                )
            )
        for i in range(3):
            w.append(Event("mark", f"eval at step {i * 100}", run=0, t_us=T0 + 100 + i))
        w.append(Event("mark", "checkpoint saved", run=0, t_us=T0 + 200))
    text, js = _inspect(path, capsys)
    lines = [ln for ln in text.splitlines() if ln.startswith("    2023-")]
    assert lines == [
        "    2023-11-14 22:13:20.000 UTC  log      info    gpu not sampled: not on this machine"
        "  [x8: 7 more like it, until 22:13:20.000 UTC]",
        "    2023-11-14 22:13:20.000 UTC  mark     info    eval at step 0"
        "  [x3: 2 more like it, until 22:13:20.000 UTC]",
        "    2023-11-14 22:13:20.000 UTC  mark     info    checkpoint saved",
    ]
    assert "  events  12 (log 8, mark 4)" in text
    assert len(js["events"]) == 12  # JSON lists them one by one


def test_memory_peaks_and_top_functions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mem.est"
    fwd, mm = StackFrame("forward", "m.py", 1), StackFrame("matmul", "m.py", 9)
    with TraceWriter(path) as w:
        w.append(RunStart(0, "ab" * 16, "r", "h", 1, t_us=T0))
        for i, (rss, hwm, cg) in enumerate(
            ((100 << 20, 300 << 20, 1 << 30), (50 << 20, 310 << 20, 2 << 30))
        ):
            w.append(
                ProcessSample(
                    0, 1, rss=rss, rss_peak=hwm, cgroup_peak=cg, cgroup_limit=4 << 30, t_us=T0 + i
                )
            )
        w.append(ProcessSample(0, 2, rss=10 << 20, rss_peak=20 << 20, oom_kills=1, t_us=T0 + 3))
        w.append(GpuSample(0, "H200", mem_used=20 << 30, mem_total=140 << 30, t_us=T0 + 4))
        w.append(GpuSample(0, "H200", mem_used=5 << 30, mem_total=140 << 30, t_us=T0 + 5))
        w.append(StackSamples(0, "python", 1000, (((fwd, mm), 6), ((fwd,), 2)), t_us=T0 + 6))
    text, js = _inspect(path, capsys)
    assert (
        "  memory  peak RSS 310.0 MiB (VmHWM, pid 1), cgroup peak 2.0 GiB of a 4.0 GiB limit, "
        "1 OOM kill(s) in its cgroup" in text
    )
    assert "  gpu mem gpu0 H200: peak 20.0 GiB used of 140.0 GiB" in text
    assert "     75.0%  75.0%  matmul" in text and "     25.0% 100.0%  forward" in text
    assert js["runs"][0]["memory"] == {
        "rss_max": 100 << 20,
        "rss_peak": 310 << 20,
        "rss_peak_pid": 1,
        "cgroup_peak": 2 << 30,
        "cgroup_limit": 4 << 30,
        "oom_kills": 1,
    }
    assert js["gpu_memory"] == [
        {"index": 0, "name": "H200", "peak_used": 20 << 30, "total": 140 << 30}
    ]
    assert js["stacks"]["top_functions"][0] == {"function": "matmul", "self": 6, "total": 6}


def test_the_summary_keeps_bounded_lists_and_says_what_it_left_out() -> None:
    n = 10_000
    recs = [Event("log", f"line {i}", t_us=T0 + i, seq=i) for i in range(n)]
    s = summarize(iter(recs), format_version="1.1", size=0)
    assert s.events_total == n and s.event_kinds["log"] == n
    kept = s.events
    assert len(kept) == 2 * EVENTS_KEPT and s.events_omitted == n - 2 * EVENTS_KEPT
    assert kept[0].message == "line 0" and kept[-1].message == f"line {n - 1}"
    assert len(s.groups) == 1 and next(iter(s.groups.values())).count == n
    js = s.to_json()
    assert (js["events_total"], js["events_omitted"], len(js["events"])) == (n, n - 200, 200)


def test_a_real_sigkill_reads_lost_and_a_live_run_still_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SDK run writing its own file: while it runs, inspect says so; after kill -9 it
    reads "lost: ...", never "finished"."""
    job = script(
        tmp_path,
        """
        import sys, time, edgescope
        edgescope.init(name="victim", flush_interval=0.05)
        for i in range(30):
            edgescope.log({"loss": 1.0}, step=i)
        time.sleep(0.3)
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    p = subprocess.Popen(
        [PYTHON, str(job)],
        env=sdk_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        (path,) = trace_files(tmp_path)
        text, js = _inspect(path, capsys)
        assert f"still running (pid {p.pid} is alive here)" in text
        assert js["runs"][0]["state"] == "running"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        p.stdout.close()  # type: ignore[union-attr]
    assert js["runs"][0]["host"] == socket.gethostname()
    text, js = _inspect(path, capsys)
    line = next(ln for ln in text.splitlines() if ln.startswith("  run     victim"))
    assert "lost: the process died without finishing (SIGKILL or power loss) at " in line
    assert line.endswith("UTC, last step 29")
    assert js["runs"][0]["state"] == "lost" and js["runs"][0]["exit_code"] is None


def test_runs_and_metric_keys_beyond_the_bounds_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgescope_tracing.summary as summary

    monkeypatch.setattr(summary, "RUNS_KEPT", 3)
    monkeypatch.setattr(summary, "METRIC_KEYS_KEPT", 2)
    recs: list[Any] = [RunStart(i, f"{i:032x}", f"r{i}", "h", i, t_us=T0) for i in range(5)]
    recs += [Metrics(0, f"k{i}", (0, 1), (T0, T0 + 1), (1.0, 2.0)) for i in range(4)]
    s = summarize(iter(recs), format_version="1.1", size=0)
    assert [r.name for r in s.runs] == ["r0", "r1", "r2"] and s.runs_other == 2
    assert sorted(s.metrics) == ["k0", "k1"] and s.metric_values_other == 4
    js = s.to_json()
    assert (js["runs_not_summarized"], js["metric_values_not_summarized"]) == (2, 4)
