"""Issue #11 item 1: ordinary configs used to stop a collector.

Once the keyframe restating the active runs passed the 64 KiB frame limit (12-20 runs with
4-6 KB configs, or 3 runs with 25 KB configs), the collector refused every later record. Here
a real collector takes 20 concurrent SDK runs with 6.5 KB configs and 3 with 25 KB configs, in
real processes on its ingest socket: every value is stored, every run ends, and a keyframe in
the middle of the store restates all 23 runs with their whole configs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from edgescope_tracing import Keyframe, Metrics, RunEnd, RunStart, TraceReader
from test_daemon import ENV, Collector

JOB = """
import json, os, sys, time
import edgescope

i, size, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = {"run": i}
k = 0
while len(json.dumps(config)) < size:
    config[f"arg_{k:03d}"] = f"value {i}-{k} " + "x" * 40
    k += 1
edgescope.init(name=f"job-{i}", config=config)
step = 0
while not os.path.exists(stop):  # training, until the test has seen what it needs
    edgescope.log({"loss": 1.0 / (step + 1), "lr": 0.001 * i}, step=step)
    step += 1
    if step % 10 == 0:
        time.sleep(0.02)  # some 500 steps/s each: a training loop, not a flood
edgescope.finish(exit_code=0)
print(step)
"""


def test_23_concurrent_runs_with_large_configs_are_all_stored(tmp_path: Path) -> None:
    # Small segments: the store rotates while the runs are active, and each new segment's
    # first keyframe restates them all (some 200 KB, in parts).
    collector = Collector(tmp_path, "--segment-size", "64K", "--max-disk", "64M").start()
    job = tmp_path / "job.py"
    job.write_text(JOB)
    stop = tmp_path / "stop"
    env = {k: v for k, v in ENV.items() if not k.startswith("EDGESCOPE_")}
    env.update(EDGESCOPE_SOCKET=str(collector.ingest), EDGESCOPE_DIR=str(tmp_path / "runs"))
    env.update(EDGESCOPE_STALL_TIMEOUT="60")  # a loaded test machine is not a hung collector
    sizes = [6_500] * 20 + [25_000] * 3
    procs = [
        subprocess.Popen(
            [sys.executable, str(job), str(i), str(size), str(stop)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, size in enumerate(sizes)
    ]
    steps: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 90
        while collector.stderr().count(" started: job-") < len(sizes):
            assert time.monotonic() < deadline, collector.stderr()
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.1)
        # Two new segments after every run started: the second one's first keyframe (at
        # least) restates all 23 runs, some 200 KB in keyframe parts.
        seen = set(collector.data.glob("seg-*.est"))
        while len(set(collector.data.glob("seg-*.est")) - seen) < 2:
            assert time.monotonic() < deadline, collector.stderr()
            time.sleep(0.05)
        stop.touch()
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err
            assert b"dropped" not in err, err
            steps[f"job-{i}"] = int(out)
        deadline = time.monotonic() + 30
        while collector.stderr().count(" ended (exit code") < len(sizes):
            assert time.monotonic() < deadline, collector.stderr()
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert collector.stop() == 0
    log = collector.stderr()
    assert "refused" not in log and "Traceback" not in log, log
    assert not list((tmp_path / "runs").glob("*.est")), "a run fell back to a file of its own"

    starts: dict[str, RunStart] = {}
    ends: dict[int, RunEnd] = {}
    values: dict[tuple[int, str], int] = {}
    restated: list[Keyframe] = []
    segments = sorted(collector.data.glob("seg-*.est"))
    assert len(segments) >= 2
    for seg in segments:
        with TraceReader(seg) as r:
            for rec in r:
                if isinstance(rec, RunStart):
                    starts[rec.run_id] = rec
                elif isinstance(rec, RunEnd):
                    ends[rec.run] = rec
                elif isinstance(rec, Metrics) and rec.run >= 0:
                    values[rec.run, rec.key] = values.get((rec.run, rec.key), 0) + len(rec.values)
                elif isinstance(rec, Keyframe) and len(rec.runs) == len(sizes):
                    restated.append(rec)
            assert r.damage == [] and r.unresolved == 0
    assert len(starts) == len(sizes)
    for rs in starts.values():
        i = rs.config["run"]
        assert rs.name == f"job-{i}" and len(str(rs.config)) >= sizes[i]
        assert "edgescope.truncated" not in rs.config
        assert ends[rs.run].exit_code == 0 and ends[rs.run].dropped == 0
        n = steps[rs.name]
        assert n > 0 and values[rs.run, "loss"] == n and values[rs.run, "lr"] == n
    # A client joining at a keyframe mid-way learns every run and its whole config.
    assert restated, "no keyframe restated all the runs"
    assert {r.run_id: r.config for r in restated[-1].runs} == {
        k: v.config for k, v in starts.items()
    }
    assert os.path.getsize(segments[-1]) > 0


BIG_CONFIG_JOB = """
import edgescope
config = {f"layer_{i}": {"weights": "w" * 900, "index": i} for i in range(120)}  # ~110 KB
edgescope.init(name="big-config", config=config)
for step in range(100):
    edgescope.log({"loss": 1.0 / (step + 1)}, step=step)
edgescope.finish(exit_code=0)
"""


def test_a_config_too_large_for_the_format_is_cut_with_a_warning_not_refused(
    tmp_path: Path,
) -> None:
    """The SDK used to refuse it at init; the run now records, and says what was cut."""
    job = tmp_path / "big.py"
    job.write_text(BIG_CONFIG_JOB)
    env = {k: v for k, v in ENV.items() if not k.startswith("EDGESCOPE_")}
    env.update(EDGESCOPE_DIR=str(tmp_path / "runs"), EDGESCOPE_SOCKET=str(tmp_path / "none.sock"))
    done = subprocess.run(
        [sys.executable, str(job)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warned = [line for line in done.stderr.splitlines() if "truncated" in line]
    assert len(warned) == 1 and "config" in warned[0] and "edgescope.truncated" in warned[0]
    (trace,) = (tmp_path / "runs").glob("*.est")
    with TraceReader(trace) as r:
        recs = list(r)
        assert r.damage == []
    rs = next(x for x in recs if isinstance(x, RunStart))
    marker = rs.config["edgescope.truncated"]
    assert marker["keys"] == 120 and 0 < marker["kept"] < 120
    assert all(rs.config[f"layer_{i}"]["index"] == i for i in range(marker["kept"]))
    assert sum(len(m.values) for m in recs if isinstance(m, Metrics)) == 100
    assert [x.exit_code for x in recs if isinstance(x, RunEnd)] == [0]
