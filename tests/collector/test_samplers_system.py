"""The system sampler over recorded trees (rates from rewritten files) and the live /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgescope_collector.samplers import ProcessWatch, Roots, default_samplers
from edgescope_collector.samplers.system import SystemSampler, cpu_busy_percent
from edgescope_tracing.records import SystemSample

S = 1_000_000

if TYPE_CHECKING:
    from conftest import Board


def one(sampler: SystemSampler, t_us: int) -> SystemSample:
    (rec,) = sampler.sample(t_us)
    assert isinstance(rec, SystemSample)
    return rec


def bump_stat(b: Board, busy: list[int], idle: list[int]) -> None:
    """Add jiffies per CPU: ``busy[i]`` of user time and ``idle[i]`` of idle time."""
    lines = b.read("proc/stat").splitlines()
    out = []
    for line in lines:
        parts = line.split()
        if parts[0].startswith("cpu"):
            v = [int(x) for x in parts[1:]]
            if parts[0] == "cpu":
                v[0] += sum(busy)
                v[3] += sum(idle)
            else:
                c = int(parts[0][3:])
                v[0] += busy[c]
                v[3] += idle[c]
            line = " ".join([parts[0], *map(str, v)])
        out.append(line)
    b.write("proc/stat", "\n".join(out))


def test_first_sample_has_levels_but_no_rates(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    s = one(SystemSampler(b.roots), 10 * S)
    assert s.t_us == 10 * S
    assert s.cpu_percent is None and s.per_cpu_percent == ()
    assert s.disk_read_bps is None and s.net_rx_bps is None
    assert s.mem_total == 3884084 * 1024
    assert s.mem_used == s.mem_total - s.mem_available  # type: ignore[operator]
    assert s.swap_total == 102396 * 1024 and s.swap_used == 0
    assert (s.load1, s.load5, s.load15) == (1.25, 0.90, 0.51)
    assert s.psi["memory.some.avg10"] == 0.0
    assert "memory.some.now" not in s.psi  # a rate: needs a previous sample


def test_cpu_disk_net_and_psi_rates(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    sampler = SystemSampler(b.roots)
    one(sampler, 10 * S)
    # cpu0 fully busy, cpu1 half, cpu2 and cpu3 idle, over 2 s (100 jiffies/s per CPU)
    bump_stat(b, busy=[200, 100, 0, 0], idle=[0, 100, 200, 200])
    b.write(
        "proc/diskstats",
        b.read("proc/diskstats")
        .replace("mmcblk0 1000 0 400000", "mmcblk0 1000 0 404000")  # +4000 sectors read
        .replace("mmcblk0p2 1000 0 399000", "mmcblk0p2 1000 0 403000")  # partition: ignored
        .replace("loop0 1000 0 50", "loop0 1000 0 90050"),  # loop device: ignored
    )
    b.write(
        "proc/net/dev",
        b.read("proc/net/dev")
        .replace("eth0: 10000000", "eth0: 10200000")
        .replace("lo: 5000 100 0 0 0 0 0 0 5000", "lo: 995000 100 0 0 0 0 0 0 995000"),
    )
    b.write(
        "proc/pressure/memory",
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=1500000\n"
        "full avg10=4.00 avg60=1.00 avg300=0.30 total=300000",
    )
    s = one(sampler, 12 * S)
    assert s.per_cpu_percent == (100.0, 50.0, 0.0, 0.0)
    assert s.cpu_percent == 37.5
    assert s.disk_read_bps == 4000 * 512 / 2
    assert s.disk_write_bps == 0.0
    assert s.net_rx_bps == 100_000.0 and s.net_tx_bps == 0.0
    assert s.psi["memory.some.avg10"] == 12.5
    assert s.psi["memory.some.now"] == 25.0  # 0.5 s stalled of 2 s
    assert s.psi["memory.full.now"] == 5.0
    assert s.psi["cpu.some.now"] == 0.0


def test_virtual_interfaces_and_dm_devices_do_not_count_twice(
    board: Callable[[str], Board],
) -> None:
    b = board("x86-laptop")
    sampler = SystemSampler(b.roots)
    one(sampler, S)
    b.write(
        "proc/net/dev",
        b.read("proc/net/dev")
        .replace("docker0: 123", "docker0: 50000123")
        .replace("wlp0s20f3: 9000000", "wlp0s20f3: 9001000"),
    )
    b.write(
        "proc/diskstats",
        b.read("proc/diskstats")
        .replace(
            "nvme0n1 1000 0 2000000 300 500 0 5000000", "nvme0n1 1000 0 2000000 300 500 0 5000010"
        )
        .replace("dm-0 1000 0 1999000 300 500 0 4999900", "dm-0 1000 0 1999000 300 500 0 4999910"),
    )
    s = one(sampler, 2 * S)
    assert s.net_rx_bps == 1000.0  # docker0 is virtual: left out
    assert s.disk_write_bps == 10 * 512  # dm-0 sits on nvme0n1: counted once
    assert s.psi["irq.full.avg10"] == 0.0


def test_missing_sources_are_named_with_reasons(board: Callable[[str], Board]) -> None:
    b = board("jetson-orin")
    b.remove("proc/pressure")
    b.remove("proc/diskstats")
    meminfo = [ln for ln in b.read("proc/meminfo").splitlines() if "MemAvailable" not in ln]
    b.write("proc/meminfo", "\n".join(meminfo))
    sampler = SystemSampler(b.roots)
    assert "no PSI files" in sampler.skipped["psi"]
    assert "diskstats" in sampler.skipped["disk"]
    s = one(sampler, S)
    assert s.psi == {}
    # kernels before 3.14: available = free + buffers + cached
    assert s.mem_available == (7799360 // 4 + 41236 + 7799360 // 3) * 1024
    s = one(sampler, 2 * S)
    assert s.disk_read_bps is None and s.net_rx_bps == 0.0


def test_cpu_busy_percent_edges() -> None:
    assert cpu_busy_percent((10, 100), (10, 100)) is None
    assert cpu_busy_percent((10, 100), (60, 200)) == 50.0
    assert cpu_busy_percent((10, 100), (5, 200)) == 0.0  # counter went backwards (hotplug)


def test_live_proc_gives_this_machine() -> None:
    sampler = SystemSampler(Roots())
    first = one(sampler, 1 * S)
    time.sleep(0.05)  # a few jiffies must pass
    second = one(sampler, 2 * S)
    assert first.mem_total and first.mem_total > 0
    assert second.cpu_percent is not None and 0.0 <= second.cpu_percent <= 100.0
    assert len(second.per_cpu_percent) >= (os.cpu_count() or 1)
    assert second.load1 is not None


def test_default_samplers_on_live_and_on_trees(board: Callable[[str], Board]) -> None:
    watch = ProcessWatch()
    samplers, skipped = default_samplers(Roots(), watch)
    names = [s.name for s in samplers]
    assert names[:2] == ["system", "process"]
    has_zones = any(Path("/sys/class/thermal").glob("thermal_zone*"))
    assert ("thermal_zones" in skipped) is not has_zones
    thermal_sources = ("thermal_zones", "cooling_devices", "cpufreq")
    thermal_sources += ("x86_thermal_throttle", "pi_throttled", "hwmon")
    assert ("thermal" in names) is not all(k in skipped for k in thermal_sources)
    assert all(isinstance(v, str) and v for v in skipped.values())
    for s in samplers:
        s.close()

    b = board("jetson-orin")
    samplers, skipped = default_samplers(b.roots, watch)
    names = [s.name for s in samplers]
    assert names[:5] == ["system", "process", "thermal", "power", "jetson_gpu"]
    assert ("nvml" in names) is ("nvml" not in skipped)  # NVML asks the driver, not the tree
    for s in samplers:
        s.close()
    assert "x86_thermal_throttle" in skipped and "pi_throttled" in skipped
