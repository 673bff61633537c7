"""The rounds analysis (``edgescope_tracing.rounds``) on traces written here: the events the
Flower integration writes (client messages, server phases) and a device's thermal samples,
through real trace files and the ``edgescope rounds`` command. The real Flower run is
``tests/edgescope/test_flower.py``; these cover what it cannot make happen on purpose: a client
that timed out or failed, a trace without the server's, clocks that disagree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import CpuFreq, Event, RunStart, ThermalSample, ThermalZone, TraceWriter
from edgescope_tracing.rounds import (
    FLOWER_MESSAGE,
    FLOWER_ROUND,
    ClockOffset,
    Reply,
    ServerPhase,
    analyze_paths,
    cell_text,
    clock_offsets,
    message_kind,
    offset_text,
    report_lines,
)

T0 = 1_767_000_000_000_000
S = 1_000_000
RUN = 42
NODES = {0: 101, 1: 202, 2: 303}
"""partition -> node id"""


def _msg(node: int, part: int, rnd: int, kind: str, start: float, dur: float) -> Event:
    s = T0 + round(start * S)
    return Event(
        FLOWER_MESSAGE,
        f"round {rnd} {kind}",
        run=0,
        t_us=s,
        detail={
            "flower_run": RUN,
            "node": node,
            "partition": part,
            "num_partitions": 3,
            "round": rnd,
            "type": kind,
            "start_us": s,
            "end_us": s + round(dur * S),
            "num_examples": 100,
            "metrics": {"train-loss" if kind == "train" else "eval-acc": 0.5},
            "arrays_in": 10,
            "arrays_out": 10,
        },
    )


def _thermal(t: float, temp: float, count: int) -> ThermalSample:
    return ThermalSample(
        zones=(ThermalZone("TCPU", temp),),
        freqs=(CpuFreq(0, 2_000_000, None, 4_000_000),),
        throttle={"cpu0.core_throttle_count": count},
        t_us=T0 + round(t * S),
    )


def _client_trace(path: Path, part: int, durations: dict[int, float], hot: bool = False) -> None:
    """A node's trace: three rounds starting at 10 s, 20 s, 30 s; ``hot`` throttles in round 2."""
    node = NODES[part]
    with TraceWriter(path) as w:
        w.append(RunStart(0, f"{node:032x}", f"flower-node{node}-run{RUN}", "edge", 1, t_us=T0))
        for t in range(0, 40):
            heated = hot and 20 <= t <= 22
            w.append(_thermal(t, 90.0 if heated else 50.0, 5 if t >= 21 and hot else 1))
            for rnd, dur in durations.items():
                if t == rnd * 10:
                    w.append(_msg(node, part, rnd, "train", t + 0.5, dur))
                    w.append(_msg(node, part, rnd, "evaluate", t + 5, 0.1))


def _phase(rnd: int, kind: str, replies: list[dict[str, Any]], **kw: Any) -> Event:
    sent = T0 + rnd * 10 * S
    detail = {
        "flower_run": RUN,
        "round": rnd,
        "type": kind,
        "sent_us": sent,
        "done_us": max([r["arrived_us"] for r in replies] or [sent]) + 1000,
        "nodes": list(NODES.values()),
        "replies": replies,
        "timed_out": [],
        "metrics": {"train-loss": 0.4},
        "timeout_s": 30.0,
        **kw,
    }
    return Event(FLOWER_ROUND, "round", run=0, t_us=sent, detail=detail)


def _reply(node: int, rnd: int, arrive: float, start: float, end: float) -> dict[str, Any]:
    base = T0 + rnd * 10 * S
    return {
        "node": node,
        "arrived_us": base + round(arrive * S),
        "latency_s": arrive,
        "client_start_us": base + round(start * S),
        "client_end_us": base + round(end * S),
    }


@pytest.fixture
def traces(tmp_path: Path) -> list[Path]:
    _client_trace(tmp_path / "p0.est", 0, {1: 1.0, 2: 1.0, 3: 1.0})
    _client_trace(tmp_path / "p1.est", 1, {1: 1.1, 2: 1.0, 3: 0.9})
    _client_trace(tmp_path / "p2.est", 2, {1: 1.0, 2: 3.0}, hot=True)  # round 3: timed out
    with TraceWriter(tmp_path / "server.est") as w:
        w.append(RunStart(0, "f" * 32, f"flower-server-run{RUN}", "srv", 1, t_us=T0))
        for rnd in (1, 2, 3):
            replies = [
                _reply(NODES[0], rnd, 2.0, 0.5, 1.5),
                _reply(NODES[1], rnd, 2.1, 0.5, 1.5),
            ]
            timed_out = []
            if rnd < 3:
                replies.append(_reply(NODES[2], rnd, 2.2 if rnd == 1 else 4.0, 0.5, 3.5))
            else:
                timed_out = [NODES[2]]
            w.append(_phase(rnd, "train", replies, timed_out=timed_out))
    return [tmp_path / f for f in ("p0.est", "p1.est", "p2.est", "server.est")]


def test_the_straggler_its_cause_and_the_timed_out_client(traces: list[Path]) -> None:
    (report,) = analyze_paths(traces)
    assert report.server
    assert [c.partition for c in report.clients.values()] == [0, 1, 2]
    r1, r2, r3 = report.rounds
    assert r1.straggler is None and r1.ratio == pytest.approx(1.1)
    assert r2.straggler == NODES[2]
    assert r2.ratio == pytest.approx(3.0)
    assert r2.cause == (
        "node 303 (partition 2): 3.0x the round's median (3.00 s vs 1.00 s) while cpu0 "
        "throttled at 90.0 °C"
    )
    assert r2.waited_for == NODES[2]
    assert r2.critical is not None
    assert r2.critical.startswith("waited 4.00 s for node 303 (partition 2) (train 3.00 s")
    # round 3: partition 2 never replied; the server waited out its timeout for it
    cell = r3.cells[NODES[2]]
    assert (cell.status, cell.reason) == ("timed out", "no reply within 30 s")
    assert cell_text(cell) == "timed out"
    assert r3.waited_for == NODES[2]
    assert r3.critical is not None and "the timeout" in r3.critical
    assert cell_text(r3.cells[NODES[0]]) == "1.00 / 0.10"
    lines = "\n".join(report_lines(report))
    assert "node 303 (partition 2) timed out: no reply within 30 s" in lines
    assert "3.00 / 0.10 *" in lines


def test_a_straggler_with_no_coinciding_signal(tmp_path: Path) -> None:
    _client_trace(tmp_path / "p0.est", 0, {1: 1.0})
    _client_trace(tmp_path / "p1.est", 1, {1: 1.0})
    _client_trace(tmp_path / "p2.est", 2, {1: 2.7})  # slow, but nothing throttles
    (report,) = analyze_paths([tmp_path])
    (row,) = report.rounds
    assert row.straggler == NODES[2]
    assert row.cause == (
        "node 303 (partition 2): 2.7x the round's median (2.70 s vs 1.00 s); "
        "no throttle, frequency, temperature or memory signal coincides"
    )
    # no server trace: who finished last, on the clients' clocks
    assert not report.server
    assert row.waited_s is None
    assert row.critical == "last to finish: node 303 (partition 2) (no server trace)"


def test_a_failed_reply_and_a_client_that_was_not_sent_to(tmp_path: Path) -> None:
    _client_trace(tmp_path / "p0.est", 0, {1: 1.0, 2: 1.0})
    _client_trace(tmp_path / "p1.est", 1, {1: 1.0})
    with TraceWriter(tmp_path / "server.est") as w:
        failed = {"node": NODES[1], "arrived_us": T0 + 22 * S, "error": "ClientApp raised"}
        w.append(_phase(1, "train", [_reply(NODES[0], 1, 2.0, 0.5, 1.5), failed]))
        w.append(_phase(2, "train", [_reply(NODES[0], 2, 2.0, 0.5, 1.5)], nodes=[NODES[0]]))
    (report,) = analyze_paths([tmp_path])
    r1, r2 = report.rounds
    assert (r1.cells[NODES[1]].status, r1.cells[NODES[1]].reason) == ("failed", "ClientApp raised")
    assert r2.cells[NODES[1]].status == "not selected"
    assert r1.straggler is None  # one client timed: nobody to be slower than


def test_clock_offsets_bound_each_node_by_its_replies() -> None:
    def phase(sent: int, replies: list[Reply]) -> ServerPhase:
        return ServerPhase(1, 1, "train", sent, sent, (), tuple(replies), (), {})

    # the client's clock runs 5 s ahead; each exchange bounds it from both sides
    ph = [
        phase(0, [Reply(7, 3 * S, 3.0, None, 6 * S, 7 * S)]),  # [7-3, 6-0] = [4, 6]
        phase(10 * S, [Reply(7, 12 * S, 2.0, None, 15 * S + S // 2, 16 * S)]),  # [4, 5.5]
        phase(0, [Reply(8, S, 1.0, "boom")]),  # an error reply carries no times
    ]
    offs = clock_offsets(ph)
    assert offs[7] == ClockOffset(7, 4.75, 0.75, 2)
    assert offs[8] == ClockOffset(8, None, None, 0)
    assert offset_text(offs[7]) == "clock +4.750 s ± 0.750 s against the server"
    assert offset_text(offs[8]).startswith("clock offset unknown")
    # replies that cannot all be true (the clock stepped): the narrowest one, and said so
    stepped = clock_offsets(
        [
            phase(0, [Reply(7, 3 * S, 3.0, None, 6 * S, 7 * S)]),  # [4, 6]
            phase(0, [Reply(7, 2 * S, 2.0, None, 0, S // 2)]),  # [-1.5, 0]
        ]
    )[7]
    assert (stepped.offset_s, stepped.bound_s, stepped.consistent) == (-0.75, 0.75, False)


def test_message_kinds() -> None:
    assert [message_kind(t) for t in ("train", "evaluate.fed", "query", "other")] == [
        "train",
        "evaluate",
        "query",
        "other",
    ]


def _rounds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgescope", "rounds", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_json_and_bad_input(traces: list[Path], tmp_path: Path) -> None:
    out = _rounds("--json", *map(str, traces))
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert [r["straggler"] for r in run["rounds"]] == [None, NODES[2], None]
    assert run["rounds"][2]["clients"][2]["status"] == "timed out"
    assert run["rounds"][1]["signals"][0]["kind"] == "throttle_counter"
    for args, says in (
        ([str(tmp_path / "nope.est")], "no such file or directory"),
        ([str(tmp_path / "empty")], "a directory with no trace files"),
        ([str(traces[0].with_name("junk.est"))], "not an edgescope trace"),
        ([str(tmp_path / "plain.est")], "no Flower rounds in these traces"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        traces[0].with_name("junk.est").write_bytes(b"not a trace at all")
        with TraceWriter(tmp_path / "plain.est") as w:
            w.append(RunStart(0, "a" * 32, "plain", "h", 1, t_us=T0))
        bad = _rounds(*args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert says in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
