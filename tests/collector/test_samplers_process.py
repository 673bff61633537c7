"""The process sampler: run processes and children, VmHWM, CPU, cgroup v1 and v2 memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from edgescope_collector.samplers import ProcessWatch, Roots
from edgescope_collector.samplers.cgroup import read_cgroup
from edgescope_collector.samplers.process import (
    PEAK_RESET,
    PEAK_SAMPLED,
    ProcessSampler,
    read_proc_stat,
)
from edgescope_tracing.records import Event, ProcessSample

S = 1_000_000

if TYPE_CHECKING:
    from conftest import Board


def samples(sampler: ProcessSampler, t_us: int) -> dict[int, ProcessSample]:
    out = {}
    for r in sampler.sample(t_us):
        if isinstance(r, Event):  # how each run's cgroup peak is measured, said once
            assert r.detail["cgroup_peak"] in (PEAK_RESET, PEAK_SAMPLED)
            continue
        assert isinstance(r, ProcessSample)
        out[r.pid] = r
    return out


def set_stat(b: Board, pid: int, utime: int, stime: int, start: int | None = None) -> None:
    text = b.read(f"proc/{pid}/stat")
    head, _, rest = text.rpartition(")")
    f = rest.split()
    f[11], f[12] = str(utime), str(stime)
    if start is not None:
        f[19] = str(start)
    b.write(f"proc/{pid}/stat", head + ") " + " ".join(f))


def test_run_process_and_child_with_cgroup_v2(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    watch = ProcessWatch()
    watch.add(3, 1234)
    sampler = ProcessSampler(b.roots, watch, clk_tck=100)
    first = samples(sampler, 5 * S)
    assert set(first) == {1234, 1240}
    main, child = first[1234], first[1240]
    assert main.run == child.run == 3
    assert main.cpu_percent is None  # a rate: needs the previous sample
    assert main.rss == 1800000 * 1024 and main.rss_peak == 2100000 * 1024
    assert main.threads == 12 and child.threads == 3
    assert main.cgroup_current == 2105540608
    # the run's own peak, not the cgroup's lifetime memory.peak (2411724800) from before it
    assert main.cgroup_peak == 2105540608
    assert main.cgroup_limit == 3 << 30
    assert main.oom_kills == 0

    set_stat(b, 1234, 5000 + 150, 700 + 50, None)  # 200 ticks in 2 s at 100 Hz: two cores
    set_stat(b, 1240, 300 + 20, 50, None)
    second = samples(sampler, 7 * S)
    assert second[1234].cpu_percent == 100.0 * 200 / 100 / 2
    assert second[1240].cpu_percent == 10.0


def test_reused_pid_gets_no_rate_and_exited_pid_is_skipped(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    watch = ProcessWatch()
    watch.add(1, 1234)
    sampler = ProcessSampler(b.roots, watch, clk_tck=100)
    samples(sampler, S)
    set_stat(b, 1240, 9999, 9999, start=123456)  # same pid, another process
    b.remove("proc/1234/task/1235")
    got = samples(sampler, 2 * S)
    assert got[1240].cpu_percent is None
    b.remove("proc/1240")
    assert set(samples(sampler, 3 * S)) == {1234}
    b.remove("proc/1234")
    assert samples(sampler, 4 * S) == {}
    watch.remove_run(1)
    assert watch.items() == [] and len(watch) == 0


def test_children_found_without_proc_children_files(board: Callable[[str], Board]) -> None:
    """Kernels without CONFIG_PROC_CHILDREN: descendants come from every process's ppid."""
    b = board("x86-laptop")
    for pid in (31337, 31340):
        b.remove(f"proc/{pid}/task")
        (b.path / f"proc/{pid}/task/{pid}").mkdir(parents=True)
    watch = ProcessWatch()
    watch.add(9, 31337)
    sampler = ProcessSampler(b.roots, watch)
    assert sampler.descendants(31337) == [31340]
    got = samples(sampler, S)
    assert set(got) == {31337, 31340}
    # cgroup v2: the scope has no limit, the one that bites is set on user-1000.slice
    assert got[31337].cgroup_limit == 12 << 30
    assert got[31337].cgroup_peak == got[31337].cgroup_current  # not the lifetime 6012954624


def test_cgroup_v1_in_a_container_and_oom_kills(board: Callable[[str], Board]) -> None:
    b = board("jetson-orin")
    watch = ProcessWatch()
    watch.add(2, 2200)
    sampler = ProcessSampler(b.roots, watch)
    got = samples(sampler, S)[2200]
    assert got.cgroup_current == 3650000896
    assert got.cgroup_peak == 3650000896  # not max_usage_in_bytes, the lifetime 3900000256
    assert got.cgroup_limit == 6 << 30
    assert got.oom_kills == 0
    cg = "sys/fs/cgroup/memory/docker/3f1c"
    b.write(f"{cg}/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1")
    b.remove(f"{cg}/memory.stat")  # older kernels: limit_in_bytes
    b.write(f"{cg}/memory.limit_in_bytes", 4 << 30)
    got = samples(sampler, 2 * S)[2200]
    assert got.oom_kills == 1 and got.cgroup_limit == 4 << 30


def test_cgroup_memory_edges(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    roots = b.roots
    assert read_cgroup(roots, "0::/") is None  # the root cgroup: the machine, not a run
    assert read_cgroup(roots, "0::/no/such.scope") is None
    assert read_cgroup(roots, "") is None
    cg = "sys/fs/cgroup/system.slice/train.service"
    b.write(f"{cg}/memory.max", "max")
    b.remove(f"{cg}/memory.peak")  # before Linux 5.19
    m = read_cgroup(roots, "0::/system.slice/train.service")
    assert m is not None and m.version == 2
    assert m.limit is None and m.peak is None and m.current == 2105540608
    b.write(f"{cg}/memory.events", "low 0\nhigh 3\nmax 7\noom 2\noom_kill 2\noom_group_kill 0")
    m = read_cgroup(roots, "0::/system.slice/train.service")
    assert m is not None and m.oom_kills == 2

    j = board("jetson-orin").roots
    # v1 root with no limit is the machine; a namespaced container root with a limit is not
    assert read_cgroup(j, "12:memory:/") is None


def test_read_proc_stat_with_awkward_names(tmp_path: Path) -> None:
    p = tmp_path / "stat"
    fields = "S 1 2 2 0 -1 0 0 0 0 0 7 3 0 0 20 0 5 0 4242 0 0"
    p.write_text(f"77 (a) b (c)) {fields}\n")
    st = read_proc_stat(p)
    assert st is not None
    assert (st.ppid, st.cpu_ticks, st.threads, st.start_ticks) == (1, 10, 5, 4242)
    p.write_text("77 (truncated")
    assert read_proc_stat(p) is None


@pytest.fixture
def child_process() -> Iterator[subprocess.Popen[bytes]]:
    """A real child that holds 64 MiB (then frees 48) and spins a little."""
    code = (
        "import sys, time\n"
        "a = bytearray(64 << 20)\n"
        "for i in range(0, len(a), 4096): a[i] = 1\n"
        "del a\n"
        "b = bytearray(16 << 20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "t = time.time()\n"
        "while time.time() - t < 30: sum(range(1000))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_live_child_of_registered_process(child_process: subprocess.Popen[bytes]) -> None:
    watch = ProcessWatch()
    watch.add(1, os.getpid())
    sampler = ProcessSampler(Roots(), watch)
    assert child_process.pid in sampler.descendants(os.getpid())
    samples(sampler, int(time.time() * S))
    time.sleep(0.2)
    got = samples(sampler, int(time.time() * S))
    child = got[child_process.pid]
    assert child.run == 1
    assert child.rss is not None and child.rss_peak is not None
    # The peak remembers the 64 MiB that RSS no longer holds.
    assert child.rss_peak >= child.rss + (32 << 20)
    assert child.cpu_percent is not None and child.cpu_percent > 20.0
    assert got[os.getpid()].threads is not None


def test_cgroup_peak_is_the_runs_own_and_says_how(board: Callable[[str], Board]) -> None:
    """Issue #11 post-mortem: the cgroup's lifetime peak (2.78 GB before a 0.69 GB run) must
    not be reported as the run's; a recorded tree is never written to."""
    b = board("rpi4")
    cg = "sys/fs/cgroup/system.slice/train.service"
    lifetime = b.read(f"{cg}/memory.peak")
    watch = ProcessWatch()
    watch.add(3, 1234)
    sampler = ProcessSampler(b.roots, watch)
    assert not sampler.reset_peak  # not the kernel's /sys
    first = sampler.sample(S)
    (how,) = [r for r in first if isinstance(r, Event)]
    assert how.run == 3 and how.detail["cgroup_peak"] == PEAK_SAMPLED
    assert "spikes between samples are missed" in how.message
    peaks = []
    for i, current in enumerate((2_500_000_000, 1_000_000_000, 1_200_000_000)):
        b.write(f"{cg}/memory.current", current)
        got = sampler.sample((i + 2) * S)
        assert not any(isinstance(r, Event) for r in got), "said once per run"
        peaks.append(next(r for r in got if isinstance(r, ProcessSample)).cgroup_peak)
    assert peaks == [2_500_000_000, 2_500_000_000, 2_500_000_000]
    assert b.read(f"{cg}/memory.peak") == lifetime
    watch.remove_run(3)
    sampler.sample(9 * S)
    assert sampler._peaks == {}


def test_a_peak_file_that_does_not_reset_falls_back_and_says_why(
    board: Callable[[str], Board],
) -> None:
    """Asked to reset where the file is a plain one (no kernel behind it): what is read back
    after the write is no number, so the run's peak is the max of samples, and it says why."""
    b = board("rpi4")
    watch = ProcessWatch()
    watch.add(3, 1234)
    sampler = ProcessSampler(b.roots, watch, reset_peak=True)
    recs = sampler.sample(S)
    (how,) = [r for r in recs if isinstance(r, Event)]
    assert how.detail["cgroup_peak"] == PEAK_SAMPLED
    assert how.detail["why"] == "memory.peak did not read back as a number after the reset"
    assert next(r for r in recs if isinstance(r, ProcessSample)).cgroup_peak == 2105540608
    sampler.close()


def test_a_zombie_is_skipped_like_an_exited_process() -> None:
    """A child that exited but is not reaped yet has no memory figures: no sample for it."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while True:
            st = read_proc_stat(Path(f"/proc/{proc.pid}/stat"))
            if st is not None and st.state == "Z":
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        watch = ProcessWatch()
        watch.add(1, proc.pid)
        assert samples(ProcessSampler(Roots(), watch), int(time.time() * S)) == {}
    finally:
        proc.wait()


def test_parent_state_and_command_of_each_process(board: Callable[[str], Board]) -> None:
    """The process tree, each process's state and its command line (format 1.3): the command
    from ``cmdline``, or ``[comm]`` where there is none; read once per process."""
    b = board("rpi4")
    watch = ProcessWatch()
    watch.add(3, 1234)
    sampler = ProcessSampler(b.roots, watch, clk_tck=100)
    first = samples(sampler, 5 * S)
    main, child = first[1234], first[1240]
    assert (main.ppid, main.state, main.command) == (1, "S", "python3 train.py --epochs 003")
    assert (child.ppid, child.state, child.command) == (1234, "S", "[pt_data_worker]")
    b.write("proc/1234/cmdline", "python3\0other.py")  # not read again for the same process
    text = b.read("proc/1240/stat").replace(") S ", ") D ")
    b.write("proc/1240/stat", text.strip())
    second = samples(sampler, 6 * S)
    assert second[1234].command == "python3 train.py --epochs 003"
    assert second[1240].state == "D"
