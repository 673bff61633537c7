"""End to end: the real collector reads a recorded Jetson tree's INA3221 rails (``--sysfs``),
a producer's run streams through it, and the stored stream gives the run's energy as
``inspect`` does."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgescope_tracing import (
    Event,
    Metrics,
    PowerSample,
    Record,
    RunEnd,
    RunStart,
    StreamEncoder,
)
from edgescope_tracing.protocol import Client, Gap
from edgescope_tracing.summary import summarize
from test_daemon import ENV, Collector

TREES = Path(__file__).parent / "trees"
VDD_IN_W = 5.072 * 1.216


def test_the_collector_records_a_runs_energy(tmp_path: Path) -> None:
    tree = tmp_path / "jetson"
    shutil.copytree(TREES / "jetson-orin", tree, symlinks=True)
    c = Collector(
        tmp_path, "--sysfs", str(tree / "sys"), "--procfs", str(tree / "proc"), "--interval", "0.1"
    ).start()
    try:
        enc = StreamEncoder()
        t0 = time.time_ns() // 1000
        enc.add(RunStart(0, "e1" * 16, "train", "jetson", os.getpid(), t_us=t0))
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(c.ingest))
            s.sendall(enc.take())
            for b in range(8):  # 8 batches of 25 steps over about 1.2 s
                time.sleep(0.15)
                now = time.time_ns() // 1000
                steps = tuple(range(b * 25, (b + 1) * 25))
                enc.add(Metrics(0, "loss", steps, (now,) * 25, (1.0,) * 25))
                s.sendall(enc.take())
            enc.add(RunEnd(0, exit_code=0, t_us=time.time_ns() // 1000))
            s.sendall(enc.take())
            got: list[Record] = []
            with Client.connect("127.0.0.1", c.port, since=0, idle_timeout=10) as client:
                after_end = 0
                for item in client:
                    if isinstance(item, Gap):
                        continue
                    got.append(item)
                    after_end += isinstance(item, PowerSample) and any(
                        isinstance(r, RunEnd) for r in got
                    )
                    if after_end >= 2:
                        break
    finally:
        assert c.stop() == 0
    power = [r for r in got if isinstance(r, PowerSample)]
    assert len(power) >= 10
    names = {r.name for p in power for r in p.readings}
    assert names == {"ina3221/VDD_IN", "ina3221/VDD_CPU_GPU_CV", "ina3221/VDD_SOC"}
    summary = summarize(got, format_version="1.3", size=0)
    (run,) = [r for r in summary.runs if r.name == "train"]
    e = run.energy
    assert e is not None and e.steps == 200
    # constant 6.17 W on VDD_IN: the energy is that power over the time the window covered
    assert e.mean_w == pytest.approx(VDD_IN_W, rel=1e-6)
    assert e.total_j == pytest.approx(VDD_IN_W * e.covered_us / 1e6, rel=1e-6)
    assert e.covered_us > 0.8 * (run.end - run.start)  # type: ignore[operator]


JOB = r"""
import os, sys, time, edgescope
flag = sys.argv[1]
edgescope.init(name="capped")
step = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    t0 = time.perf_counter()
    time.sleep(0.02 if os.path.exists(flag) else 0.005)  # the clocks down: 4x slower steps
    edgescope.log({"step_time": time.perf_counter() - t0}, step=step)
    step += 1
edgescope.finish()
"""


def test_a_real_run_slowed_by_the_power_limit_is_named_power_capped(tmp_path: Path) -> None:
    """The laptop tree plays out its package held at the 15 W limit with the CPUs at 1.2 GHz
    while a real SDK process's steps slow down; the collector says so twice: a power-cap event
    and a step-time regression that names it."""
    tree = tmp_path / "laptop"
    shutil.copytree(TREES / "x86-laptop", tree, symlinks=True)
    pkg = tree / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
    freqs = [tree / f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq" for c in range(4)]
    flag = tmp_path / "capped"
    c = Collector(
        tmp_path, "--sysfs", str(tree / "sys"), "--procfs", str(tree / "proc"), "--interval", "0.2"
    ).start()
    energy = int(pkg.read_text())
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(flag), "6"],
        env={**ENV, "EDGESCOPE_SOCKET": str(c.ingest)},
    )
    try:
        t0 = last = time.monotonic()
        while job.poll() is None:  # the board as it would behave, 100 times a second
            time.sleep(0.01)
            now = time.monotonic()
            capped = 2.0 <= now - t0 <= 5.0
            if capped and not flag.exists():
                flag.touch()
            energy += int((15.2 if capped else 6.0) * 1e6 * (now - last))
            last = now
            pkg.write_text(f"{energy}\n")
            for f in freqs:
                f.write_text("1200000\n" if capped else "4500000\n")
        assert job.wait() == 0
        events: list[Event] = []
        with Client.connect("127.0.0.1", c.port, since=0, idle_timeout=5) as client:
            for item in client:
                if isinstance(item, Event) and item.kind == "anomaly":
                    events.append(item)
                if isinstance(item, RunEnd) or len(events) > 20:
                    break
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        assert c.stop() == 0
    by = {e.detail["detector"]: e for e in reversed(events) if e.severity == 1}
    assert "power limit holds the CPU clocks down: package-0 at" in by["power_cap"].message
    assert "cpu0 at 1200 MHz of 4700 MHz" in by["power_cap"].message
    slow = by["step_time_regression"]
    assert "power-capped: package-0 at" in slow.message and "of its 15 W limit" in slow.message
