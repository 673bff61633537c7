"""``inspect`` on a run in a throttled container (issue #14): where it ran, what its cgroup's
CPU quota and memory.high did to it, and why it ended."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from edgescope_tracing import ProcessSample, RunEnd, RunStart, TraceWriter

from edgescope.cli import main

ID = "4f2a1b3c9d0e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
SCOPE = f"/system.slice/docker-{ID}.scope"
MiB = 1 << 20


def sample(t: int, periods: int, throttled: int, high: int, current: int) -> ProcessSample:
    return ProcessSample(
        0,
        4242,
        rss=300 * MiB,
        cgroup_current=current,
        cgroup_limit=512 * MiB,
        oom_kills=0,
        t_us=t,
        cgroup=SCOPE,
        cgroup_version=2,
        cpu_quota_us=100_000,
        cpu_period_us=100_000,
        cpu_periods=periods,
        cpu_throttled=throttled,
        cpu_throttled_us=throttled * 50_000,
        memory_high=448 * MiB,
        memory_high_events=high,
        memory_max_events=0,
        swap_current=0,
    )


def test_inspect_names_the_container_the_quota_s_throttling_and_the_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "run.est"
    cause = "killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"
    with TraceWriter(p) as w:
        w.append(RunStart(0, "ab" * 16, "train", "edge1", 4242, t_us=1_000_000))
        w.append(sample(1_000_000, 1203, 12, 0, 300 * MiB))
        w.append(sample(6_000_000, 1253, 40, 5, 460 * MiB))
        # A child in a cgroup of its own does not move the run there.
        child = sample(6_000_001, 9, 9, 9, MiB)
        w.append(dataclasses.replace(child, pid=4250, cgroup="/system.slice/other.scope"))
        w.append(sample(11_000_000, 1303, 74, 37, 511 * MiB))
        w.append(RunEnd(0, None, 0, 11_500_000, cause=cause))
    assert main(["inspect", str(p)]) == 0
    text = capsys.readouterr().out
    assert f"failed: {cause} after 10.5 s" in text
    assert (
        f"  cgroup  Docker container 4f2a1b3c9d0e ({SCOPE}), cpu.max 1 CPU: throttled in 62% of "
        "100 periods, 3.1 s throttled, memory.high 448.0 MiB: over it 37 time(s), "
        "reclaim-throttled\n"
    ) in text
    assert main(["inspect", str(p), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["state"] == "failed" and run["cause"] == cause
    assert run["cgroup"] == {
        "path": SCOPE,
        "version": 2,
        "container": {"runtime": "Docker", "id": ID, "pod": None},
        "cpu_quota_us": 100_000,
        "cpu_period_us": 100_000,
        "cpu_periods": 100,
        "cpu_throttled": 62,
        "cpu_throttled_share": 0.62,
        "cpu_throttled_us": 3_100_000,
        "memory_high": 448 * MiB,
        "memory_high_events": 37,
        "memory_max_events": 0,
        "swap_peak": 0,
    }


def test_a_run_the_sdk_wrote_alone_is_placed_by_its_device_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No collector sampled it: the SDK's own ``device["cgroup"]`` (from /proc/self/cgroup)."""
    from edgescope.sdk._device import device_facts

    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(
        f"12:memory:/docker/{ID}\n4:cpu,cpuacct:/docker/{ID}\n0::/\n"
    )
    facts = device_facts(procfs=proc, sysfs=tmp_path / "sys")
    assert facts["cgroup"] == f"/docker/{ID}"
    (proc / "self" / "cgroup").write_text("0::/\n")  # a cgroup namespace shows only "/"
    assert "cgroup" not in device_facts(procfs=proc, sysfs=tmp_path / "sys")
    p = tmp_path / "alone.est"
    with TraceWriter(p) as w:
        w.append(RunStart(0, "cd" * 16, "train", "edge1", 7, device=facts, t_us=1_000_000))
        w.append(RunEnd(0, 0, 0, 2_000_000))
    assert main(["inspect", str(p)]) == 0
    assert f"  cgroup  Docker container 4f2a1b3c9d0e (/docker/{ID})\n" in capsys.readouterr().out
