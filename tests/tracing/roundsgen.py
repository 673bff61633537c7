"""Traces of a Flower run as the integration writes them (client messages, server phases, a
device's thermal samples), for the rounds tests here and the TUI's (``tests/tui``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgescope_tracing import CpuFreq, Event, RunStart, ThermalSample, ThermalZone, TraceWriter
from edgescope_tracing.rounds import FLOWER_MESSAGE, FLOWER_ROUND

__all__ = [
    "NODES",
    "RUN",
    "S",
    "T0",
    "client_trace",
    "message_event",
    "phase",
    "phase_event",
    "reply",
    "write_flower_traces",
]

T0 = 1_767_000_000_000_000
S = 1_000_000
RUN = 42
NODES = {0: 101, 1: 202, 2: 303}
"""partition -> node id"""


def message_event(
    node: int, part: int, rnd: int, kind: str, start_us: int, end_us: int, flwr_run: int = RUN
) -> Event:
    """A ``flower.message`` event as the client Mod writes it (at the message's start)."""
    return Event(
        FLOWER_MESSAGE,
        f"round {rnd} {kind}",
        run=0,
        t_us=start_us,
        detail={
            "flower_run": flwr_run,
            "node": node,
            "partition": part,
            "num_partitions": 3,
            "round": rnd,
            "type": kind,
            "start_us": start_us,
            "end_us": end_us,
            "num_examples": 100,
            "metrics": {"train-loss" if kind == "train" else "eval-acc": 0.5},
            "arrays_in": 10,
            "arrays_out": 10,
        },
    )


def _msg(node: int, part: int, rnd: int, kind: str, start: float, dur: float) -> Event:
    s = T0 + round(start * S)
    return message_event(node, part, rnd, kind, s, s + round(dur * S))


def _thermal(t: float, temp: float, count: int) -> ThermalSample:
    return ThermalSample(
        zones=(ThermalZone("TCPU", temp),),
        freqs=(CpuFreq(0, 2_000_000, None, 4_000_000),),
        throttle={"cpu0.core_throttle_count": count},
        t_us=T0 + round(t * S),
    )


def client_trace(path: Path, part: int, durations: dict[int, float], hot: bool = False) -> None:
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


def phase_event(
    rnd: int, kind: str, sent_us: int, replies: list[dict[str, Any]], **kw: Any
) -> Event:
    """A ``flower.round`` event as the server helper writes it."""
    detail = {
        "flower_run": RUN,
        "round": rnd,
        "type": kind,
        "sent_us": sent_us,
        "done_us": max([r["arrived_us"] for r in replies] or [sent_us]) + 1000,
        "nodes": list(NODES.values()),
        "replies": replies,
        "timed_out": [],
        "metrics": {"train-loss": 0.4},
        "timeout_s": 30.0,
        **kw,
    }
    return Event(FLOWER_ROUND, "round", run=0, t_us=sent_us, detail=detail)


def phase(rnd: int, kind: str, replies: list[dict[str, Any]], **kw: Any) -> Event:
    return phase_event(rnd, kind, T0 + rnd * 10 * S, replies, **kw)


def reply(node: int, rnd: int, arrive: float, start: float, end: float) -> dict[str, Any]:
    base = T0 + rnd * 10 * S
    return {
        "node": node,
        "arrived_us": base + round(arrive * S),
        "latency_s": arrive,
        "client_start_us": base + round(start * S),
        "client_end_us": base + round(end * S),
    }


def write_flower_traces(tmp_path: Path) -> list[Path]:
    """Three clients and a server over three rounds: partition 2 throttles in round 2 (3x the
    median) and times out in round 3."""
    client_trace(tmp_path / "p0.est", 0, {1: 1.0, 2: 1.0, 3: 1.0})
    client_trace(tmp_path / "p1.est", 1, {1: 1.1, 2: 1.0, 3: 0.9})
    client_trace(tmp_path / "p2.est", 2, {1: 1.0, 2: 3.0}, hot=True)  # round 3: timed out
    with TraceWriter(tmp_path / "server.est") as w:
        w.append(RunStart(0, "f" * 32, f"flower-server-run{RUN}", "srv", 1, t_us=T0))
        for rnd in (1, 2, 3):
            replies = [
                reply(NODES[0], rnd, 2.0, 0.5, 1.5),
                reply(NODES[1], rnd, 2.1, 0.5, 1.5),
            ]
            timed_out = []
            if rnd < 3:
                replies.append(reply(NODES[2], rnd, 2.2 if rnd == 1 else 4.0, 0.5, 3.5))
            else:
                timed_out = [NODES[2]]
            w.append(phase(rnd, "train", replies, timed_out=timed_out))
    return [tmp_path / f for f in ("p0.est", "p1.est", "p2.est", "server.est")]
