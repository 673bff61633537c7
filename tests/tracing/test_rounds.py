"""The rounds analysis (``edgescope_tracing.rounds``) on traces written here: the events the
Flower integration writes (client messages, server phases) and a device's thermal samples,
through real trace files and the ``edgescope rounds`` command. The real Flower run is
``tests/edgescope/test_flower.py``; these cover what it cannot make happen on purpose: a client
that timed out or failed, a trace without the server's, clocks that disagree."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgescope_tracing import (
    CpuFreq,
    PowerReading,
    PowerSample,
    Record,
    RunStart,
    ThermalSample,
    ThermalZone,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing.rounds import (
    ClockOffset,
    Reply,
    RoundsFold,
    ServerPhase,
    analyze,
    analyze_paths,
    cell_text,
    clock_offsets,
    message_kind,
    offset_text,
    report_lines,
    round_notes,
)
from roundsgen import (
    NODES,
    T0,
    S,
    client_trace,
    message_event,
    phase,
    phase_event,
    reply,
    write_flower_traces,
)


@pytest.fixture
def traces(tmp_path: Path) -> list[Path]:
    return write_flower_traces(tmp_path)


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
    # each node's clock against the server's, and how a time goes from one to the other
    assert "node 101 (partition 0) on edge: clock " in lines and " against the server" in lines
    assert "bounded by each reply's send and arrival; a node's time t is t - clock" in lines
    assert "3.00 / 0.10 *" in lines


def test_a_straggler_with_no_coinciding_signal(tmp_path: Path) -> None:
    client_trace(tmp_path / "p0.est", 0, {1: 1.0})
    client_trace(tmp_path / "p1.est", 1, {1: 1.0})
    client_trace(tmp_path / "p2.est", 2, {1: 2.7})  # slow, but nothing throttles
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
    client_trace(tmp_path / "p0.est", 0, {1: 1.0, 2: 1.0})
    client_trace(tmp_path / "p1.est", 1, {1: 1.0})
    with TraceWriter(tmp_path / "server.est") as w:
        failed = {"node": NODES[1], "arrived_us": T0 + 22 * S, "error": "ClientApp raised"}
        w.append(phase(1, "train", [reply(NODES[0], 1, 2.0, 0.5, 1.5), failed]))
        w.append(phase(2, "train", [reply(NODES[0], 2, 2.0, 0.5, 1.5)], nodes=[NODES[0]]))
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
    # a reply whose client took longer than the server's round trip: never a negative bound
    fast = clock_offsets([phase(0, [Reply(7, 2 * S, 2.0, None, S // 2, 3 * S + S // 2)])])[7]
    assert (fast.offset_s, fast.bound_s, fast.consistent) == (1.0, 0.5, False)  # [1.5, 0.5]
    assert offset_text(fast).startswith("clock +1.000 s ± 0.500 s against the server (replies")


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


def _records(path: Path) -> list[Record]:
    with TraceReader(path) as r:
        return list(r)


def test_the_live_fold_gives_what_the_files_give(traces: list[Path]) -> None:
    # the records of the four streams interleaved, as live sources deliver them
    streams = {str(p): _records(p) for p in traces}
    fold = RoundsFold()
    longest = max(len(v) for v in streams.values())
    for i in range(longest):
        for name, recs in streams.items():
            if i < len(recs):
                fold.add(name, recs[i])
    assert fold.version > 0
    live = [r.to_json() for r in analyze(*fold.snapshot())]
    assert live == [r.to_json() for r in analyze_paths(traces)]
    assert live[0]["rounds"][1]["straggler"] == NODES[2]
    assert "throttled at 90.0 °C" in live[0]["rounds"][1]["cause"]


def test_the_live_fold_keeps_samples_near_messages_and_lets_the_rest_go(tmp_path: Path) -> None:
    path = tmp_path / "p2.est"
    client_trace(path, 2, {1: 1.0, 2: 3.0}, hot=True)
    recs = _records(path)
    fold = RoundsFold(horizon_us=5 * S)
    for rec in recs:
        fold.add("p2", rec)
    _, _, samples = fold.snapshot()
    kept = [s.t_us for s in samples["p2"]]
    # the horizon (5 s) held the samples before each message came: those within it are kept
    # (round 1's train starts at 10.5 s, round 2's at 20.5 s; each event comes at its start
    # here, so the samples of its window that follow are kept as they arrive)
    assert kept == sorted(kept)
    assert all(T0 + 5 * S <= t <= T0 + 26 * S for t in kept), kept
    assert T0 + 21 * S in kept and T0 + 39 * S not in kept
    before = fold.version
    fold.add("p2", dataclasses.replace(recs[-1], t_us=T0 + 22_500_000, seq=10_000))
    assert fold.version == before + 1  # a late sample inside a window counts as news
    fold.add("p2", dataclasses.replace(recs[-1], t_us=T0 + 90 * S, seq=10_001))
    assert fold.version == before + 1  # one outside every window does not


def test_a_straggler_held_by_its_power_limit_is_said_so(tmp_path: Path) -> None:
    # partition 2's board sits at its RAPL limit with its clocks down while it trains round 1:
    # the cause is the power cap (its power samples are read, not only its thermal ones)
    traces = [tmp_path / f"p{p}.est" for p in range(3)]
    for p in (0, 1):
        client_trace(traces[p], p, {1: 1.0})
    node = NODES[2]
    with TraceWriter(traces[2]) as w:
        w.append(RunStart(0, f"{node:032x}", f"flower-node{node}-run42", "edge", 1, t_us=T0))
        for t in range(0, 14):
            capped = 10 <= t <= 13
            mhz = 1_200_000 if capped else 4_500_000
            freqs = tuple(CpuFreq(c, mhz, None, 4_700_000) for c in range(4))
            w.append(ThermalSample(zones=(ThermalZone("TCPU", 60.0),), freqs=freqs,
                                   t_us=T0 + t * S))  # fmt: skip
            watts = 14_900_000 if capped else 6_000_000
            reading = PowerReading("rapl", "package-0", power_uw=watts, limit_uw=15_000_000)
            w.append(PowerSample((reading,), t_us=T0 + t * S))
            if t == 10:
                w.append(message_event(node, 2, 1, "train", T0 + 10_500_000, T0 + 13_500_000))
    (report,) = analyze_paths(traces)
    (row,) = report.rounds
    assert row.straggler == node
    assert row.cause is not None
    assert "while power-capped: package-0 at 14.9 W of its 15 W limit (RAPL)" in row.cause


def test_a_client_whose_evaluation_failed_or_timed_out_still_trained(tmp_path: Path) -> None:
    # round 1: partition 1 trained (3x the median), then its evaluation failed; round 2:
    # partition 2's evaluation did not come back before the timeout
    client_trace(tmp_path / "p0.est", 0, {1: 1.0, 2: 1.0})
    client_trace(tmp_path / "p1.est", 1, {1: 3.0, 2: 1.0})
    client_trace(tmp_path / "p2.est", 2, {1: 1.0, 2: 1.0})
    with TraceWriter(tmp_path / "server.est") as w:
        for rnd in (1, 2):
            train = [reply(NODES[p], rnd, 3.5, 0.5, 1.5) for p in range(3)]
            w.append(phase(rnd, "train", train))
        failed = {"node": NODES[1], "arrived_us": T0 + 16 * S, "error": "RuntimeError: disk"}
        ok = [reply(NODES[p], 1, 5.2, 5.0, 5.1) for p in (0, 2)]
        w.append(phase_event(1, "evaluate", T0 + 15 * S, [*ok, failed]))
        ok = [reply(NODES[p], 2, 5.2, 5.0, 5.1) for p in (0, 1)]
        w.append(phase_event(2, "evaluate", T0 + 25 * S, ok, timed_out=[NODES[2]]))
    (report,) = analyze_paths([tmp_path])
    r1, r2 = report.rounds
    c = r1.cells[NODES[1]]
    assert (c.status, c.phase, c.reason) == ("failed", "evaluate", "RuntimeError: disk")
    assert cell_text(c) == "3.00 / failed"
    assert r1.straggler == NODES[1]  # its training still counts in the round
    c = r2.cells[NODES[2]]
    assert (c.status, c.phase, c.reason) == ("timed out", "evaluate", "no reply within 30 s")
    assert cell_text(c) == "1.00 / timed out"
    assert cell_text(r2.cells[NODES[0]]) == "1.00 / 0.10"
    notes = "; ".join(round_notes(report, r1))
    assert "node 202 (partition 1) failed in evaluate: RuntimeError: disk" in notes
    notes = "; ".join(round_notes(report, r2))
    assert "node 303 (partition 2) timed out in evaluate: no reply within 30 s" in notes
