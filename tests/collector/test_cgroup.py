"""The run's cgroup (issue #14): CPU quota throttling, memory.high, OOM kills, its container.

On recorded trees of a Docker container on cgroup v2 (``docker-v2``) and a Kubernetes pod on
cgroup v1 (``k8s-v1``), with throttling and memory events played out mid-run by rewriting the
files as the kernel would; a real process whose step time follows the recorded throttling; and
real cgroups where this machine lets a test make them (root, a cpu or memory controller to put a
child cgroup under), skipped with the reason where it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from edgescope_collector.detectors import Detectors, StepTimeRegression
from edgescope_collector.pipeline import Pipeline
from edgescope_collector.samplers import ProcessWatch, Roots
from edgescope_collector.samplers.cgroup import read_cgroup
from edgescope_collector.samplers.process import ProcessSampler
from edgescope_tracing import (
    Event,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StreamEncoder,
)
from edgescope_tracing.causes import coinciding_signals
from edgescope_tracing.containers import container_of

if TYPE_CHECKING:
    from conftest import Board

S = 1_000_000
MiB = 1 << 20
DOCKER_ID = "4f2a1b3c9d0e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
SCOPE = f"sys/fs/cgroup/system.slice/docker-{DOCKER_ID}.scope"
POD = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
K8S_ID = "9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c"
K8S = f"kubepods/burstable/pod{POD}/{K8S_ID}"


def cpu_stat_v2(periods: int, throttled: int, throttled_us: int) -> str:
    return (
        "usage_usec 48213377\nuser_usec 41230113\nsystem_usec 6983264\n"
        f"core_sched.force_idle_usec 0\nnr_periods {periods}\nnr_throttled {throttled}\n"
        f"throttled_usec {throttled_us}\nnr_bursts 0\nburst_usec 0"
    )


def memory_events(high: int = 0, max_: int = 0, oom: int = 0, oom_kill: int = 0) -> str:
    return f"low 0\nhigh {high}\nmax {max_}\noom {oom}\noom_kill {oom_kill}\noom_group_kill 0"


def sampler(roots: Roots, run: int, pid: int) -> ProcessSampler:
    watch = ProcessWatch()
    watch.add(run, pid)
    return ProcessSampler(roots, watch)


def procs(records: list[Record]) -> list[ProcessSample]:
    return [r for r in records if isinstance(r, ProcessSample)]


# ------------------------------------------------------------------- recorded trees


def test_a_docker_container_on_cgroup_v2_with_throttling_rising_mid_run(
    board: Callable[[str], Board],
) -> None:
    b = board("docker-v2")
    s = sampler(b.roots, 1, 4242)
    first = procs(s.sample(10 * S))
    assert [p.pid for p in first] == [4242, 4250]  # the process and its data worker
    p = first[0]
    assert p.cgroup == f"/system.slice/docker-{DOCKER_ID}.scope" and p.cgroup_version == 2
    assert (p.cpu_quota_us, p.cpu_period_us) == (100_000, 100_000)  # --cpus 1
    assert (p.cpu_periods, p.cpu_throttled, p.cpu_throttled_us) == (1203, 12, 301_224)
    assert (p.cgroup_limit, p.memory_high) == (512 * MiB, 448 * MiB)
    assert (p.memory_high_events, p.memory_max_events, p.oom_events, p.oom_kills) == (0, 0, 0, 0)
    assert p.swap_current == 0
    box = container_of(p.cgroup)
    assert box is not None and box.text == "Docker container 4f2a1b3c9d0e"
    # The data loader starts: 10 s at 100 ms periods, the quota running out in 62 of them.
    b.write(f"{SCOPE}/cpu.stat", cpu_stat_v2(1203 + 100, 12 + 62, 301_224 + 3_100_000))
    later = procs(s.sample(20 * S))[0]
    assert (later.cpu_periods, later.cpu_throttled) == (1303, 74)
    (sig, *_) = coinciding_signals([p, later], 15 * S, 20 * S, run=1)
    assert sig.kind == "cpu_quota"
    assert sig.text == "the run's cgroup was CPU-throttled 62% of periods (cpu.max 1 CPU)"
    assert sig.detail["throttled_us"] == 3_100_000
    # Quiet again: the same counters, no cause.
    again = procs(s.sample(30 * S))[0]
    assert coinciding_signals([later, again], 25 * S, 30 * S, run=1) == []


def test_a_kubernetes_pod_on_cgroup_v1_through_the_cpu_cpuacct_mount(
    board: Callable[[str], Board],
) -> None:
    b = board("k8s-v1")
    p = procs(sampler(b.roots, 2, 3100).sample(10 * S))[0]
    assert p.cgroup == f"/{K8S}" and p.cgroup_version == 1
    assert (p.cpu_quota_us, p.cpu_period_us) == (50_000, 100_000)  # a 500m CPU limit
    assert (p.cpu_periods, p.cpu_throttled, p.cpu_throttled_us) == (5398, 38, 1_498_000)  # ns
    assert p.cgroup_limit == 1 << 30 and p.memory_max_events == 0 and p.swap_current == 0
    assert p.memory_high is None and p.memory_high_events is None  # v1 has neither
    box = container_of(p.cgroup)
    assert box is not None and box.text == f"Kubernetes pod {POD} (container 9b7c6d5e4f3a)"
    # Without the "cpu" symlink the hierarchy is found by its controller list.
    (b.path / "sys/fs/cgroup/cpu").unlink()
    b.write(f"sys/fs/cgroup/cpu,cpuacct/{K8S}/cpu.stat", "nr_periods 5498\nnr_throttled 98\n")
    q = procs(sampler(b.roots, 2, 3100).sample(20 * S))[0]
    assert (q.cpu_periods, q.cpu_throttled, q.cpu_throttled_us) == (5498, 98, None)
    (sig,) = coinciding_signals([p, q], 15 * S, 20 * S, run=2)
    assert (
        sig.text == "the run's cgroup was CPU-throttled 60% of periods (cpu.cfs_quota_us 0.5 CPU)"
    )


def test_the_quota_that_bites_is_the_lowest_on_the_way_up_with_its_counters(
    board: Callable[[str], Board],
) -> None:
    b = board("x86-laptop")
    app = "sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice"
    scope = f"{app}/run-r1a2.scope"
    b.write(f"{app}/cpu.max", "50000 100000")
    b.write(f"{app}/cpu.stat", cpu_stat_v2(900, 300, 12_000_000))
    b.write(f"{scope}/cpu.max", "max 100000")
    b.write(f"{scope}/cpu.stat", cpu_stat_v2(0, 0, 0))  # the parent's run queue is throttled
    p = procs(sampler(b.roots, 0, 31337).sample(S))[0]
    assert (p.cpu_quota_us, p.cpu_period_us, p.cpu_periods, p.cpu_throttled) == (
        50_000,
        100_000,
        900,
        300,
    )
    # The scope without the cpu controller (app.slice does not enable it for its children):
    # its processes are app.slice's, quota and counters.
    b.remove(f"{scope}/cpu.max")
    b.remove(f"{scope}/cpu.stat")
    p = procs(sampler(b.roots, 0, 31337).sample(S))[0]
    assert (p.cpu_quota_us, p.cpu_periods, p.cpu_throttled) == (50_000, 900, 300)
    b.write(f"{scope}/cpu.max", "max 100000")
    b.write(f"{scope}/cpu.stat", cpu_stat_v2(0, 0, 0))
    # No quota anywhere: no quota, and the cgroup's own counters.
    b.write(f"{app}/cpu.max", "max 100000")
    p = procs(sampler(b.roots, 0, 31337).sample(S))[0]
    assert (p.cpu_quota_us, p.cpu_periods) == (None, 0)
    # The root cgroup is the machine: no cgroup figures at all.
    assert read_cgroup(b.roots, "0::/") is None


def test_memory_high_then_an_oom_kill_on_a_recorded_tree(board: Callable[[str], Board]) -> None:
    """The detectors on a v2 container whose memory climbs over memory.high, then to its
    memory.max, where the kernel kills the training process: one memory_high event, one
    oom_kill event, and the run end's cause names the limit."""
    b = board("docker-v2")
    s = sampler(b.roots, 1, 4242)
    d = Detectors()
    out: list[Event] = []

    def feed(recs: list[Record]) -> None:
        for r in recs:
            out.extend(d.feed(r))

    feed(s.sample(1 * S))
    b.write(f"{SCOPE}/memory.current", 470 * MiB)
    b.write(f"{SCOPE}/memory.events", memory_events(high=37))
    feed(s.sample(2 * S))
    b.write(f"{SCOPE}/memory.events", memory_events(high=90))
    feed(s.sample(3 * S))  # the same episode: said once
    b.write(f"{SCOPE}/memory.current", 511 * MiB)
    b.write(f"{SCOPE}/memory.events", memory_events(high=140, max_=12, oom=1, oom_kill=1))
    for pid in ("4242", "4250"):
        b.remove(f"proc/{pid}")  # killed: the pids are gone before the next sample
    feed(s.sample(4 * S))
    last = s.final_sample(1, 4 * S + 1)
    assert last is not None and last.rss is None and last.oom_kills == 1
    feed([last])
    end = RunEnd(1, None, 0, 4 * S + 1)
    cause = d.end_cause(end)
    assert cause == "killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"
    kinds = [e.detail["detector"] for e in out]
    assert kinds == ["memory_high", "oom_kill"]
    assert out[0].message == (
        "run 1's cgroup is over its memory.high (448 MiB) at 470 MiB: the kernel throttled it "
        "into reclaim 37 times, which slows every allocation"
    )
    assert "at 511 MiB of its 512 MiB memory.max" in out[1].message
    # A run whose process is still there when it ends gets no last read; nor one whose
    # process has gone without a kill counted.
    quiet = board("rpi4")
    s = sampler(quiet.roots, 1, 1234)
    assert s.final_sample(1, S) is None  # never sampled
    s.sample(S)
    assert s.final_sample(1, S) is None  # alive
    quiet.remove("proc/1234")
    assert s.final_sample(1, 2 * S) is None


@pytest.mark.asyncio
async def test_the_collector_pointed_at_a_host_tree_ends_an_oom_killed_run_with_its_cause(
    board: Callable[[str], Board], tmp_path: Path
) -> None:
    """The collector in a container with ``--procfs``/``--sysfs`` at the host's mounts: the
    pipeline samples the host's cgroup files under those roots, and when the run's producer
    vanishes after an OOM kill, the run end it writes says so."""
    b = board("docker-v2")
    records: list[Record] = []

    class Sink:
        writable = True

        def append(self, rec: Record) -> int:
            records.append(rec)
            return len(records)

        def poll(self) -> list[Event]:
            return []

        def flush(self) -> None:
            pass

    p = Pipeline(Sink(), ingest_path=tmp_path / "ingest.sock", roots=b.roots, interval=0.05)
    await p.open()
    p.start()
    _reader, writer = await asyncio.open_unix_connection(str(tmp_path / "ingest.sock"))
    enc = StreamEncoder()
    enc.add(RunStart(0, "cd34", "train", "host", 4242, t_us=1_000))
    writer.write(enc.take())
    await writer.drain()
    for _ in range(200):
        if any(isinstance(r, ProcessSample) and r.cgroup for r in records):
            break
        await asyncio.sleep(0.02)
    b.write(f"{SCOPE}/memory.current", 511 * MiB)
    b.write(f"{SCOPE}/memory.events", memory_events(max_=3, oom=1, oom_kill=1))
    for pid in ("4242", "4250"):
        b.remove(f"proc/{pid}")
    writer.close()
    for _ in range(200):
        if any(isinstance(r, RunEnd) for r in records):
            break
        await asyncio.sleep(0.02)
    await p.close()
    (end,) = [r for r in records if isinstance(r, RunEnd)]
    assert end.exit_code is None
    assert end.cause == "killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"
    sampled = [r for r in records if isinstance(r, ProcessSample) and r.run == end.run]
    assert sampled[0].cgroup == f"/system.slice/docker-{DOCKER_ID}.scope"
    assert sampled[-1].oom_kills == 1 and sampled[-1].rss is None  # the last read, at the end
    assert any(isinstance(r, Event) and r.detail.get("detector") == "oom_kill" for r in records)


# ------------------------------------------------------ a real process, throttled


STEP_WORK = """
import sys, time
def work(k):
    x = 0
    for _ in range(k):
        x += 1
t0 = time.process_time()
work(200_000)
k = max(10_000, int(200_000 * 0.010 / max(time.process_time() - t0, 1e-4)))
for i in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    work(k)  # the same CPU work every step: about 10 ms of one core
    print(i, time.time_ns() // 1000, time.perf_counter() - t0, flush=True)
"""


class Steps:
    """A real process doing 10 ms of CPU work per step; its step times as metrics."""

    def __init__(self, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STEP_WORK, str(n)], stdout=subprocess.PIPE, text=True
        )
        self.metrics: list[Metrics] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) != 3:
                continue  # cut short by the kill at the end
            i, t, secs = parts
            self.metrics.append(Metrics(0, "step_time", (int(i),), (int(t),), (float(secs),)))

    def count(self) -> int:
        return len(self.metrics)

    def wait_steps(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def detector() -> StepTimeRegression:
    # Short windows: the real process makes ~100 steps a second.
    return StepTimeRegression(
        window=60, recent=8, warmup=5, min_baseline=25, min_duration_s=0.4, grace_s=0.3
    )


def regressions(records: list[Record]) -> list[Event]:
    d = detector()
    out = [e for r in sorted(records, key=lambda r: r.t_us) for e in d.feed(r)]
    out += d.flush()
    return [e for e in out if e.detail.get("recovered") is not True]


def test_a_real_process_whose_step_time_follows_the_recorded_throttling(
    board: Callable[[str], Board],
) -> None:
    """The tree's quota drops to 0.1 CPU mid-run (``docker update --cpus 0.1``) and its
    throttling counters rise period by period; the real process is held to the same quota
    the way CFS holds a throttled cgroup (run 2 ms of each 20 ms period, then stopped), so its
    step time follows the recording. The step-time detector names the quota. (A tenth of a CPU
    slows the steps even on a board whose other work leaves the run half a core.)"""
    b = board("docker-v2")
    s = sampler(b.roots, 0, 4242)
    samples: list[Record] = []
    steps = Steps(400)
    stop = threading.Event()
    try:
        steps.wait_steps(40)  # the baseline, unthrottled
        samples += s.sample(time.time_ns() // 1000)
        b.write(f"{SCOPE}/cpu.max", "2000 20000")
        periods, throttled = 1203, 12

        def cfs() -> None:
            nonlocal periods, throttled
            while not stop.is_set():
                os.kill(steps.proc.pid, signal.SIGCONT)
                time.sleep(0.002)
                os.kill(steps.proc.pid, signal.SIGSTOP)
                time.sleep(0.018)
                periods, throttled = periods + 1, throttled + 1
                b.write(f"{SCOPE}/cpu.stat", cpu_stat_v2(periods, throttled, throttled * 18_000))

        quota = threading.Thread(target=cfs, daemon=True)
        quota.start()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            samples += s.sample(time.time_ns() // 1000)
        stop.set()
        quota.join()
        os.kill(steps.proc.pid, signal.SIGCONT)
    finally:
        stop.set()
        if steps.proc.poll() is None:
            os.kill(steps.proc.pid, signal.SIGCONT)
        steps.close()
    slow = [m.values[0] for m in steps.metrics[45:]]
    assert slow and sorted(slow)[len(slow) // 2] > 0.05  # it did follow the quota
    events = regressions([*steps.metrics, *samples])
    assert events, "no step-time regression"
    message = events[0].message
    assert "while the run's cgroup was CPU-throttled" in message
    assert "(cpu.max 0.1 CPU)" in message
    assert events[0].detail["signals"][0]["kind"] == "cpu_quota"


# ------------------------------------------------------------------- real cgroups


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


@pytest.fixture
def real_cpu_cgroup(request: pytest.FixtureRequest) -> Iterator[tuple[Path, int]]:
    """A child cgroup with the cpu controller, made under this machine's own hierarchy:
    ``(directory, version)``; skipped with the reason where that cannot be done."""
    version: int = request.param
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    base = Path("/sys/fs/cgroup")
    if version == 2:
        mount = next(
            (m for m in (base, base / "unified") if (m / "cgroup.controllers").exists()), None
        )
        if mount is None:
            pytest.skip("no cgroup v2 hierarchy is mounted at /sys/fs/cgroup(/unified)")
        controllers = (mount / "cgroup.controllers").read_text().split()
        if "cpu" not in controllers:
            pytest.skip(
                f"cgroup v2 at {mount} has no cpu controller ({' '.join(controllers) or 'none'}"
                "): here it is bound to the v1 hierarchy"
            )
        try:
            (mount / "cgroup.subtree_control").write_text("+cpu")
        except OSError as e:
            pytest.skip(f"cannot enable the cpu controller under {mount}: {e.strerror}")
        parent = mount
    else:
        parent = next((base / n for n in ("cpu", "cpu,cpuacct") if (base / n).is_dir()), base)
        if not (parent / "cpu.cfs_quota_us").exists():
            pytest.skip("no cgroup v1 cpu controller is mounted at /sys/fs/cgroup/cpu")
    if not _writable(parent):
        pytest.skip(f"{parent} is not writable")
    d = parent / f"edgescope-test-{os.getpid()}"
    try:
        d.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup under {parent}: {e.strerror}")
    try:
        yield d, version
    finally:
        procs_file = d / "cgroup.procs"
        for pid in procs_file.read_text().split() if procs_file.exists() else []:
            with contextlib.suppress(OSError):
                (parent / "cgroup.procs").write_text(pid)
        for _ in range(50):
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@pytest.mark.parametrize("real_cpu_cgroup", [2, 1], indirect=True, ids=["v2", "v1"])
def test_a_real_cgroup_quota_set_mid_run_is_named_by_the_step_time_detector(
    real_cpu_cgroup: tuple[Path, int],
) -> None:
    d, version = real_cpu_cgroup
    steps = Steps(400)
    try:
        (d / "cgroup.procs").write_text(str(steps.proc.pid))
        s = sampler(Roots(), 0, steps.proc.pid)
        steps.wait_steps(40)
        samples: list[Record] = list(s.sample(time.time_ns() // 1000))
        assert procs(samples)[0].cgroup_version in (version, 1, 2)
        if version == 2:
            (d / "cpu.max").write_text("2000 20000")
        else:
            (d / "cpu.cfs_period_us").write_text("20000")
            (d / "cpu.cfs_quota_us").write_text("2000")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            samples += s.sample(time.time_ns() // 1000)
    finally:
        steps.close()
    last = procs(samples)[-1]
    assert (last.cpu_quota_us, last.cpu_period_us) == (2000, 20000)
    assert last.cpu_throttled and last.cpu_throttled > 0
    events = regressions([*steps.metrics, *samples])
    assert events, "no step-time regression"
    file = "cpu.max" if version == 2 else "cpu.cfs_quota_us"
    assert "while the run's cgroup was CPU-throttled" in events[0].message
    assert f"({file} 0.1 CPU)" in events[0].message


def test_doctor_says_which_hierarchy_and_controllers_the_figures_come_from(
    board: Callable[[str], Board],
) -> None:
    from edgescope_collector.doctor import diagnose

    notes = diagnose(board("docker-v2").roots, backends=False).notes
    assert "cgroup v2 (unified hierarchy), controllers for runs: cpu, memory" in notes
    notes = diagnose(board("k8s-v1").roots, backends=False).notes
    assert "cgroup v1 memory and cpu controllers with a v2 hierarchy beside it (hybrid)" in notes
