"""End to end: the real collector reads a recorded Jetson tree's INA3221 rails (``--sysfs``),
a producer's run streams through it, and the stored stream gives the run's energy as
``inspect`` does."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from edgescope_tracing import Metrics, PowerSample, Record, RunEnd, RunStart, StreamEncoder
from edgescope_tracing.protocol import Client, Gap
from edgescope_tracing.summary import summarize
from test_daemon import Collector

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
