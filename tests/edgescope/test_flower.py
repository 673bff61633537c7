"""Federated learning with Flower, for real: a SuperLink and three SuperNodes on loopback (free
ports, ``--insecure``, no dependency installation), each SuperNode with its own edgescope
collector, run the example app (``examples/flower``) for three rounds under the deployment engine
(``flwr run``). The node of partition 2 overheats from round 2 on: its collector reads a recorded
sysfs tree (x86-laptop) whose CPU temperature and throttle counters rise while it trains, and its
training slows (``flower_heated.py``). One run is shared by the checks.

Checked: the clients' traces (one run per node across the per-message processes, three rounds
of train and evaluate with their durations, examples and metrics), the server's (the replies,
the aggregated metrics), that ``edgescope rounds`` names partition 2 as the straggler of rounds 2
and 3 with the throttling its collector saw, whom the server waited for, and that the client
and server traces line up in time within the clock offsets the replies bound.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install flwr==1.42.0)")
pytest.importorskip("sklearn", reason="scikit-learn is not installed (the example's data)")

from edgescope_tracing import RunStart, TraceReader
from edgescope_tracing.rounds import (
    FLOWER_MESSAGE,
    RoundsReport,
    analyze_paths,
    trace_files,
)
from flowerdeploy import Deployment, copy_app

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "tests" / "collector" / "trees" / "x86-laptop" / "sys"
NODES = 3
HOT = 2
"""The partition whose node overheats."""
FAILS = 1
"""The partition whose evaluation fails in the last round (its ClientApp raises)."""

# ~60 s on two idle cores (each message starts a flwr-clientapp process, and a SuperNode polls
# every 3 s), 220 s seen at load 5-10; everything in it waits on conditions, and the limits
# (flwr run's, the round timeout, pytest's) leave room for a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class Ran:
    base: Path
    node_dirs: list[Path]
    """Each SuperNode's collector data directory, by partition."""
    server_dir: Path
    sysfs: Path
    run_log: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    base = tmp_path_factory.mktemp("flower")
    app = copy_app(base / "app", "digits_fl.heated:app")
    shutil.copy(Path(__file__).with_name("flower_heated.py"), app / "digits_fl" / "heated.py")
    sysfs = base / "sysfs"
    shutil.copytree(TREE, sysfs, symlinks=True)
    dep = Deployment(base, NODES)
    # the hot node's collector samples its heat often (its slowed training lasts >= 1.5 s),
    # and its ClientApp waits until that collector has sampled the heat (heat-collector)
    hot_port = dep.collector_ports[HOT]
    try:
        dep.start(
            collector_args={HOT: ["--sysfs", str(sysfs), "--sample-every", "thermal=0.2"]},
            node_config={
                HOT: f'heat-tree="{sysfs}" heat-collector="127.0.0.1:{hot_port}"',
                FAILS: "fail-evaluate-round=3",
            },
        )
        run = dep.run(app, f"min-nodes={NODES} num-server-rounds=3 local-epochs=5", timeout=780)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        dep.stop()
    yield Ran(base, dep.data_dirs, dep.server_dir, sysfs, run.stdout)


@pytest.fixture(scope="module")
def report(deployment: Ran) -> RoundsReport:
    reports = analyze_paths([*deployment.node_dirs, deployment.server_dir])
    assert len(reports) == 1
    return reports[0]


def _by_partition(report: RoundsReport) -> dict[int, int]:
    return {c.partition: n for n, c in report.clients.items() if c.partition is not None}


def test_each_node_has_one_run_across_its_message_processes(deployment: Ran) -> None:
    for i, d in enumerate(deployment.node_dirs):
        starts: dict[str, set[int]] = {}
        messages = 0
        for f in trace_files(d):
            with TraceReader(f) as r:
                for rec in r:
                    if isinstance(rec, RunStart) and rec.name.startswith("flower-node"):
                        starts.setdefault(rec.run_id, set()).add(rec.pid)
                        assert rec.config["flower"]["partition_id"] == i
                    elif getattr(rec, "kind", None) == FLOWER_MESSAGE:
                        messages += 1
        # one run id; every message ran in a process of its own (6: 3 rounds, train + evaluate)
        assert len(starts) == 1, starts
        assert len(next(iter(starts.values()))) == 6
        assert messages == 6
    # nothing fell back to a file: every process found its node's collector
    assert not any((d.parent / "runs").exists() for d in deployment.node_dirs)


def test_rounds_durations_and_metrics(report: RoundsReport, deployment: Ran) -> None:
    assert report.server
    assert [r.round for r in report.rounds] == [1, 2, 3]
    parts = _by_partition(report)
    assert sorted(parts) == [0, 1, 2]
    for row in report.rounds:
        assert set(row.cells) == set(parts.values())
        for p, node in parts.items():
            cell = row.cells[node]
            assert cell.train is not None and cell.evaluate is not None
            assert 0 < cell.train.duration_s < 60 and 0 < cell.evaluate.duration_s < 60
            if (row.round, p) == (3, FAILS):
                # the ClientApp raised: the Mod recorded it, the server got an error reply
                assert (cell.status, cell.phase) == ("failed", "evaluate")
                assert cell.reason is not None and "evaluation data is unreadable" in cell.reason
                assert cell.evaluate.error == "RuntimeError: the evaluation data is unreadable"
                assert cell.evaluate.num_examples is None
                continue
            assert cell.status == "ok", (row.round, p, cell.status, cell.reason)
            # the partition's share of the 1,797 digits, four fifths for training
            mine = len(range(p, 1797, NODES))
            assert cell.train.num_examples == mine * 4 // 5
            assert cell.evaluate.num_examples == mine - mine * 4 // 5
            assert 0 < cell.train.metrics["train-loss"] < 3
            assert 0 <= cell.evaluate.metrics["eval-acc"] <= 1
            # the model out and back: 650 float32 and the records' own bytes
            assert cell.train.arrays_in == cell.train.arrays_out > (64 * 10 + 10) * 4
            # the Mod's device figures, in the event and in the reply's one MetricRecord
            assert cell.train.device["edgescope-wall-s"] > 0
            assert cell.train.device["edgescope-cpu-s"] > 0
            if p == HOT and row.round >= 2:
                # the heat its own collector sampled in the message, in the reply too
                assert cell.train.device["edgescope-temp-max-c"] >= 90, cell.train.device
            assert cell.latency_s is not None and cell.latency_s >= cell.train.duration_s
        # the server's aggregated metrics, device figures included
        assert 0 < row.train_metrics["train-loss"] < 3
        assert row.train_metrics["edgescope-wall-s"] > 0
        assert row.train_metrics["edgescope-rss-peak-mib"] > 10
        assert 0 <= row.evaluate_metrics["eval-acc"] <= 1
    # training helps: the aggregated loss falls round by round
    losses = [r.train_metrics["train-loss"] for r in report.rounds]
    assert losses == sorted(losses, reverse=True)


def test_the_overheating_node_is_the_straggler_with_its_cause(report: RoundsReport) -> None:
    hot = _by_partition(report)[HOT]
    first, *later = report.rounds
    # before it heats up nothing throttles (a loaded test machine may still make a round-1
    # straggler of anyone, for a while: then not for throttling)
    assert first.straggler != hot or first.cause is None or "throttled" not in first.cause
    for row in later:
        assert row.straggler == hot, row.cause
        assert row.cause is not None
        assert row.cause.startswith(f"node {hot} (partition {HOT}): ")
        assert "x the round's median" in row.cause
        assert re.search(r" while cpu\d+ and \d+ more throttled at 96\.0 °C", row.cause), row.cause
        assert any(s.kind == "throttle_counter" for s in row.signals)
        # the critical path names whom the server waited for: the last train reply (on a
        # loaded machine that may be another node, whose flwr-clientapp started late)
        latency = {n: c.latency_s for n, c in row.cells.items() if c.latency_s is not None}
        assert row.waited_for is not None and latency[row.waited_for] == max(latency.values())
        waited = report.clients[row.waited_for].label
        assert row.critical is not None and row.critical.startswith(
            f"waited {row.waited_s:.2f} s for {waited}"
        )


def test_client_and_server_traces_line_up_within_the_clock_offsets(
    report: RoundsReport, deployment: Ran
) -> None:
    phases = {}
    for f in trace_files(deployment.server_dir):
        with TraceReader(f) as r:
            for rec in r:
                if getattr(rec, "kind", None) == "flower.round":
                    phases[(rec.detail["round"], rec.detail["type"])] = rec.detail
    assert len(phases) == 6
    for node, off in report.offsets.items():
        # one machine, one clock: the true offset (0) lies in the bound the replies give
        assert off.offset_s is not None and off.bound_s is not None and off.consistent
        assert abs(off.offset_s) <= off.bound_s + 1e-6, off
        # an error reply carries no client times: partition 1's failed evaluation
        assert off.exchanges == (5 if report.clients[node].partition == FAILS else 6)
        for row in report.rounds:
            cell = row.cells[node]
            for kind, msg in (("train", cell.train), ("evaluate", cell.evaluate)):
                assert msg is not None
                ph = phases[(row.round, kind)]
                reply = next(r for r in ph["replies"] if r["node"] == node)
                assert ("error" in reply) == (msg.error is not None)
                # the client's window, put on the server's clock, lies in the server's wait
                start = msg.start_us - off.offset_s * 1e6
                end = msg.end_us - off.offset_s * 1e6
                slack = off.bound_s * 1e6
                assert ph["sent_us"] - slack <= start <= end <= reply["arrived_us"] + slack


def test_the_rounds_command(deployment: Ran) -> None:
    paths = [str(p) for p in (*deployment.node_dirs, deployment.server_dir)]
    cmd = [sys.executable, "-m", "edgescope", "rounds"]
    out = subprocess.run([*cmd, *paths], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "3 rounds, 3 clients" in text
    assert re.search(r"^round 2: waited [\d.]+ s for node \d+ \(partition \d\)", text, re.M)
    assert re.search(r"straggler node \d+ \(partition 2\): [\d.]+x the round's median", text)
    assert "throttled at 96.0 °C" in text
    assert re.search(r"^round 3: .*node \d+ \(partition 1\) failed in evaluate: ", text, re.M)
    js = subprocess.run([*cmd, "--json", *paths], capture_output=True, text=True, timeout=180)
    assert js.returncode == 0, js.stderr
    (run,) = json.loads(js.stdout)["runs"]
    assert [r["round"] for r in run["rounds"]] == [1, 2, 3]
    hot = next(c["node"] for c in run["clients"] if c["partition"] == HOT)
    assert [r["straggler"] for r in run["rounds"]][1:] == [hot, hot]
