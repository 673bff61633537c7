"""Federated rounds across devices: who each round waited for, and why.

The data behind ``edgescope rounds`` and the TUI's Rounds view, read from the traces that the
Flower integration (``edgescope.integrations.flower``) writes: the clients' ``flower.message``
events (one per message a node handled: round, type, start, duration, examples, metrics) and
the server's ``flower.round`` events (one per round and phase: the nodes sent to, each reply's
arrival and the client-side times it carried, the nodes that failed or timed out, the
aggregated metrics). No UI here, and no I/O beyond reading the traces.

For each round: one cell per client (train and evaluate time, or how it dropped out); the
straggler, the client whose train time is at least :data:`STRAGGLER_RATIO` times the round's
median; the critical path, how long the server waited and for whom (the last reply); and the
straggler's cause, searched with :func:`edgescope_tracing.causes.coinciding_signals` in that
client's own device samples (its collector's thermal, system, GPU and process records) over
its own message window, worded as the step-time detector words it
(:func:`edgescope_tracing.causes.explain`).

Clocks: durations are each device's own; only the critical path mixes clocks, and it uses the
server's alone. Each node's clock offset against the server is bounded from the replies, as
NTP does with one exchange: a message sent at server time ``t0``, handled from client time
``c1`` to ``c2``, whose reply arrived at server time ``t3``, puts the offset (client minus
server) in ``[c2 - t3, c1 - t0]``; the node's bound is the intersection over its replies
(:class:`ClockOffset`). Client times are put on the server's clock by subtracting the offset.

Clients are labelled by their Flower node id and their ``partition-id`` (hostnames are often
the same for all nodes on one machine). Parts of one node's run recorded by different processes
(one a message) are merged by run id.
"""

from __future__ import annotations

import bisect
import os
import statistics
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .causes import CAUSE_SAMPLES, Signal, coinciding_signals, explain
from .reader import TraceReader
from .records import Event, Keyframe, Record, RunStart

__all__ = [
    "ALIGNMENT",
    "CLIENT_RECORD",
    "FLOWER_MESSAGE",
    "FLOWER_ROUND",
    "LIVE_HORIZON_US",
    "LOOKBACK_US",
    "STRAGGLER_MIN_S",
    "STRAGGLER_RATIO",
    "Cell",
    "Client",
    "ClientMessage",
    "ClockOffset",
    "Reply",
    "RoundRow",
    "RoundsFold",
    "RoundsInput",
    "RoundsReport",
    "ServerPhase",
    "analyze",
    "analyze_paths",
    "cell_text",
    "clock_offsets",
    "message_kind",
    "offset_text",
    "read_traces",
    "report_lines",
    "round_notes",
    "trace_files",
]

FLOWER_MESSAGE = "flower.message"
"""Event kind: one message a Flower client handled (the client Mod writes it)."""
FLOWER_ROUND = "flower.round"
"""Event kind: one round's phase as the server saw it (the server helper writes it)."""
CLIENT_RECORD = "edgescope"
"""The name of the ConfigRecord the client Mod adds to a reply (its start and end times)."""
STRAGGLER_RATIO = 1.5
"""A client whose train time is at least this many times the round's median is a straggler..."""
STRAGGLER_MIN_S = 0.1
"""... and at least this many seconds longer than the median (below that, it is noise beside
what a round costs in transport and process start-up)."""
LOOKBACK_US = 60_000_000
"""Device samples kept from before a window: the baseline the signals are compared with."""

ALIGNMENT = (
    "clock: the node's (and its collector's) minus the server's, bounded by each reply's send "
    "and arrival; a node's time t is t - clock on the server's"
)
"""How the offsets are found and used, as ``rounds`` says it under them."""
LIVE_HORIZON_US = 30 * 60_000_000
"""Device samples a :class:`RoundsFold` holds back for messages it has not seen yet (a message's
event comes when the message ends): the cause of a message up to this long, less
:data:`LOOKBACK_US`, is searched in all of its samples."""

_SAMPLES = CAUSE_SAMPLES
_KINDS = ("train", "evaluate", "query")


def message_kind(message_type: str) -> str:
    """``train``, ``evaluate`` or ``query`` for a Flower message type (``train.custom`` is
    ``train``); another type as it is."""
    base = message_type.split(".", 1)[0]
    return base if base in _KINDS else message_type


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One message a client handled, on its own clock."""

    flwr_run: int
    node: int
    partition: int | None
    round: int | None
    type: str
    start_us: int
    end_us: int
    num_examples: int | None
    metrics: dict[str, float]
    arrays_in: int
    arrays_out: int
    error: str | None
    device: dict[str, float]
    stream: str
    """The trace (a file, or a collector's data directory) it was read from."""
    run: int
    """The run's number in that stream (the process's part of the node's run)."""
    run_id: str
    host: str

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / 1e6


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply as the server saw it."""

    node: int
    arrived_us: int
    latency_s: float
    error: str | None = None
    client_start_us: int | None = None
    client_end_us: int | None = None


@dataclass(frozen=True, slots=True)
class ServerPhase:
    """A round's train or evaluate phase, on the server's clock."""

    flwr_run: int
    round: int
    type: str
    sent_us: int
    done_us: int
    nodes: tuple[int, ...]
    replies: tuple[Reply, ...]
    timed_out: tuple[int, ...]
    metrics: dict[str, float]
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """A node's clock minus the server's, in seconds, within ``± bound_s``; None where no
    reply carried the client's times."""

    node: int
    offset_s: float | None
    bound_s: float | None
    exchanges: int
    consistent: bool = True
    """False where the replies' intervals do not overlap (a clock that stepped or drifts):
    the offset is then the narrowest single reply's."""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "offset_s": self.offset_s,
            "bound_s": self.bound_s,
            "exchanges": self.exchanges,
            "consistent": self.consistent,
        }


@dataclass(slots=True)
class Client:
    node: int
    partition: int | None = None
    hosts: set[str] = field(default_factory=set)
    run_ids: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        part = f" (partition {self.partition})" if self.partition is not None else ""
        return f"node {self.node}{part}"

    @property
    def short(self) -> str:
        """A column's head: ``p2`` (the partition; the lines above the table give the node), or
        ``n123`` where the partition is unknown."""
        return f"p{self.partition}" if self.partition is not None else f"n{self.node}"

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "partition": self.partition,
            "label": self.label,
            "hosts": sorted(self.hosts),
            "run_ids": sorted(self.run_ids),
        }


@dataclass(slots=True)
class Cell:
    """One client in one round."""

    node: int
    train: ClientMessage | None = None
    evaluate: ClientMessage | None = None
    status: str = "ok"
    """``ok``; ``failed`` (replied with an error), ``timed out`` (no reply before the
    server's timeout), ``not selected`` (the server did not send to it this round), ``no
    record`` (sent to, but neither its trace nor the server's has a reply)."""
    phase: str = "train"
    """The phase the status is about: ``evaluate`` where the client trained but its
    evaluation failed or timed out (its train time still counts in the round)."""
    reason: str | None = None
    latency_s: float | None = None
    """Train reply's latency as the server saw it."""

    @property
    def train_s(self) -> float | None:
        return self.train.duration_s if self.train is not None else None

    @property
    def evaluate_s(self) -> float | None:
        return self.evaluate.duration_s if self.evaluate is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "phase": self.phase,
            "reason": self.reason,
            "train_s": self.train_s,
            "evaluate_s": self.evaluate_s,
            "latency_s": self.latency_s,
            "num_examples": self.train.num_examples if self.train else None,
            "train_metrics": self.train.metrics if self.train else {},
            "evaluate_metrics": self.evaluate.metrics if self.evaluate else {},
            "device": self.train.device if self.train else {},
        }


@dataclass(slots=True)
class RoundRow:
    round: int
    cells: dict[int, Cell]
    median_train_s: float | None = None
    slowest: int | None = None
    ratio: float | None = None
    straggler: int | None = None
    """The slowest client where it took :data:`STRAGGLER_RATIO` times the median or more."""
    cause: str | None = None
    signals: list[Signal] = field(default_factory=list)
    waited_s: float | None = None
    """How long the server waited for the train replies (server clock)."""
    waited_for: int | None = None
    """The node whose reply came last: the round's critical path."""
    critical: str | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    evaluate_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "clients": [c.to_json() for c in self.cells.values()],
            "median_train_s": self.median_train_s,
            "slowest": self.slowest,
            "ratio": self.ratio,
            "straggler": self.straggler,
            "cause": self.cause,
            "signals": [s.to_json() for s in self.signals],
            "waited_s": self.waited_s,
            "waited_for": self.waited_for,
            "critical_path": self.critical,
            "train_metrics": self.train_metrics,
            "evaluate_metrics": self.evaluate_metrics,
        }


@dataclass(slots=True)
class RoundsReport:
    """One Flower run across its clients and server."""

    flwr_run: int
    clients: dict[int, Client]
    rounds: list[RoundRow]
    offsets: dict[int, ClockOffset]
    server: bool
    """Whether the server's trace was among the inputs."""

    def to_json(self) -> dict[str, Any]:
        return {
            "flower_run": self.flwr_run,
            "server_trace": self.server,
            "clients": [c.to_json() for c in self.clients.values()],
            "clock_offsets": [o.to_json() for o in self.offsets.values()],
            "rounds": [r.to_json() for r in self.rounds],
        }


# --- reading -----------------------------------------------------------------------------


def trace_files(path: str | os.PathLike[str]) -> list[Path]:
    """The trace files a TRACE_OR_DIR names: the file itself, or a directory's ``*.est`` files
    (a collector's data directory, or the SDK's ``edgescope-runs``) in name order."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix == ".est" and f.is_file())
    return [p]


def _stream_of(path: Path) -> str:
    # A collector's segments (seg-*.est) are one stream: run numbers go on across them.
    return str(path.parent if path.name.startswith("seg-") else path)


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _float(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _floats(v: object) -> dict[str, float]:
    if not isinstance(v, dict):
        return {}
    return {str(k): f for k, x in v.items() if (f := _float(x)) is not None}


def _client_message(e: Event, stream: str, start: RunStart | None) -> ClientMessage | None:
    d = e.detail
    node, run, s, t = (_int(d.get(k)) for k in ("node", "flower_run", "start_us", "end_us"))
    if node is None or run is None or s is None or t is None:
        return None
    err = d.get("error")
    return ClientMessage(
        flwr_run=run,
        node=node,
        partition=_int(d.get("partition")),
        round=_int(d.get("round")),
        type=str(d.get("type", "")),
        start_us=s,
        end_us=t,
        num_examples=_int(d.get("num_examples")),
        metrics=_floats(d.get("metrics")),
        arrays_in=_int(d.get("arrays_in")) or 0,
        arrays_out=_int(d.get("arrays_out")) or 0,
        error=str(err) if err is not None else None,
        device=_floats(d.get("device")),
        stream=stream,
        run=e.run,
        run_id=start.run_id if start is not None else "",
        host=start.host if start is not None else "",
    )


def _server_phase(e: Event) -> ServerPhase | None:
    d = e.detail
    run, rnd, sent, done = (_int(d.get(k)) for k in ("flower_run", "round", "sent_us", "done_us"))
    if run is None or rnd is None or sent is None or done is None:
        return None
    replies = []
    for r in d.get("replies") or ():
        if not isinstance(r, dict):
            continue
        node, arrived = _int(r.get("node")), _int(r.get("arrived_us"))
        if node is None or arrived is None:
            continue
        err = r.get("error")
        replies.append(
            Reply(
                node,
                arrived,
                _float(r.get("latency_s")) or (arrived - sent) / 1e6,
                str(err) if err is not None else None,
                _int(r.get("client_start_us")),
                _int(r.get("client_end_us")),
            )
        )
    nodes = tuple(n for n in (_int(x) for x in d.get("nodes") or ()) if n is not None)
    timed = tuple(n for n in (_int(x) for x in d.get("timed_out") or ()) if n is not None)
    return ServerPhase(
        run,
        rnd,
        str(d.get("type", "")),
        sent,
        done,
        nodes,
        tuple(replies),
        timed,
        _floats(d.get("metrics")),
        _float(d.get("timeout_s")),
    )


@dataclass(slots=True)
class _Stream:
    files: list[Path] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)
    samples: list[Record] = field(default_factory=list)


def _records(files: Sequence[Path]) -> Iterator[Record]:
    for f in files:
        with TraceReader(f) as reader:
            yield from reader


RoundsInput = tuple[list[ClientMessage], list[ServerPhase], dict[str, list[Record]]]
"""What :func:`analyze` reads: the client messages, the server phases, and each stream's device
samples near the messages, in time order."""


def read_traces(paths: Iterable[str | os.PathLike[str]]) -> RoundsInput:
    """The rounds' input in the traces (files or directories, see :func:`trace_files`), read in
    two passes: the messages first, then only the device samples near a message's window.
    Raises ``OSError`` or a :class:`~edgescope_tracing.TraceError` for a path that cannot be
    read as a trace."""
    streams: dict[str, _Stream] = {}
    for p in paths:
        for f in trace_files(p):
            streams.setdefault(_stream_of(f), _Stream()).files.append(f)
    messages: list[ClientMessage] = []
    phases: list[ServerPhase] = []
    for name, st in streams.items():
        starts: dict[int, RunStart] = {}
        for rec in _records(st.files):
            if isinstance(rec, RunStart):
                starts[rec.run] = rec
            elif isinstance(rec, Event):
                if rec.kind == FLOWER_MESSAGE:
                    m = _client_message(rec, name, starts.get(rec.run))
                    if m is not None:
                        messages.append(m)
                        st.windows.append(_window(m))
                elif rec.kind == FLOWER_ROUND:
                    ph = _server_phase(rec)
                    if ph is not None:
                        phases.append(ph)
    # Second pass: only the device samples near a client's window are kept.
    for st in streams.values():
        if not st.windows:
            continue
        cover = _Cover(st.windows)
        for rec in _records(st.files):
            if isinstance(rec, _SAMPLES) and cover.holds(rec.t_us):
                st.samples.append(rec)
    return messages, phases, {name: st.samples for name, st in streams.items()}


def analyze_paths(paths: Iterable[str | os.PathLike[str]]) -> list[RoundsReport]:
    """Read the traces (:func:`read_traces`) and analyze the Flower runs in them."""
    return analyze(*read_traces(paths))


def _window(m: ClientMessage) -> tuple[int, int]:
    """The samples a message's cause is searched in: its own, and the baseline before it."""
    return m.start_us - LOOKBACK_US, m.end_us


class _Cover:
    """Whether a time lies in one of a set of windows (which may overlap)."""

    def __init__(self, windows: Iterable[tuple[int, int]]) -> None:
        ws = sorted(windows)
        self.starts = [w[0] for w in ws]
        # the last window starting at or before t must reach t: the running max of the ends
        self.reach = []
        top = -(1 << 62)
        for _, end in ws:
            top = max(top, end)
            self.reach.append(top)

    def holds(self, t_us: int) -> bool:
        i = bisect.bisect_right(self.starts, t_us) - 1
        return i >= 0 and self.reach[i] >= t_us


@dataclass(slots=True)
class _LiveStream:
    starts: dict[int, RunStart] = field(default_factory=dict)
    recent: deque[Record] = field(default_factory=deque)
    """Samples of the last :data:`LIVE_HORIZON_US`, for messages still to come."""
    kept: dict[int, Record] = field(default_factory=dict)
    """Samples near a message already seen, by sequence number."""
    windows: list[tuple[int, int]] = field(default_factory=list)
    cover: _Cover | None = None


class RoundsFold:
    """The rounds' input folded from records as they arrive, stream by stream: what the TUI's
    Rounds view reads from a live collector or a device on the fleet's broker, where the
    records pass once and are not read again.

    A stream is one device's records (a collector's, or one device's through the broker),
    named by the caller. The client messages and server phases are kept; a device's samples
    are held for :data:`LIVE_HORIZON_US` and kept for good where a message's window (with its
    :data:`LOOKBACK_US` before) holds them, so memory grows with the rounds, not with the
    time the stream runs. :meth:`snapshot` is the input of :func:`analyze`; ``version`` goes
    up whenever the outcome can change (a message, a phase, a sample inside a message's window
    that arrived after the message).
    """

    def __init__(self, *, horizon_us: int = LIVE_HORIZON_US) -> None:
        self.horizon_us = horizon_us
        self.messages: list[ClientMessage] = []
        self.phases: list[ServerPhase] = []
        self.version = 0
        self._streams: dict[str, _LiveStream] = {}

    def add(self, stream: str, rec: Record) -> None:
        """Fold one record of ``stream``."""
        if isinstance(rec, _SAMPLES):
            st = self._streams.get(stream)
            if st is None:
                st = self._streams[stream] = _LiveStream()
            recent = st.recent
            recent.append(rec)
            horizon = rec.t_us - self.horizon_us
            while recent[0].t_us < horizon:
                recent.popleft()
            if st.cover is not None and st.cover.holds(rec.t_us):
                st.kept[rec.seq] = rec
                self.version += 1
            return
        if isinstance(rec, RunStart):
            self._streams.setdefault(stream, _LiveStream()).starts[rec.run] = rec
        elif isinstance(rec, Keyframe):  # restates the runs: a stream joined mid-run
            starts = self._streams.setdefault(stream, _LiveStream()).starts
            for r in rec.runs:
                starts.setdefault(r.run, r)
        elif isinstance(rec, Event):
            if rec.kind == FLOWER_MESSAGE:
                st = self._streams.setdefault(stream, _LiveStream())
                m = _client_message(rec, stream, st.starts.get(rec.run))
                if m is None:
                    return
                self.messages.append(m)
                lo, hi = _window(m)
                st.windows.append((lo, hi))
                st.cover = _Cover(st.windows)
                for s in st.recent:
                    if lo <= s.t_us <= hi:
                        st.kept[s.seq] = s
                self.version += 1
            elif rec.kind == FLOWER_ROUND:
                ph = _server_phase(rec)
                if ph is not None:
                    self.phases.append(ph)
                    self.version += 1

    def snapshot(self) -> RoundsInput:
        """What was folded so far, copied (another thread may analyze it while more comes)."""
        samples = {
            name: sorted(st.kept.values(), key=lambda r: r.t_us)
            for name, st in self._streams.items()
            if st.kept
        }
        return list(self.messages), list(self.phases), samples


# --- analysis -----------------------------------------------------------------------------


def clock_offsets(phases: Iterable[ServerPhase]) -> dict[int, ClockOffset]:
    """Each node's clock offset against the server's, bounded from its replies (see the module
    docstring)."""
    spans: dict[int, list[tuple[float, float]]] = {}
    for ph in phases:
        for r in ph.replies:
            if r.client_start_us is None or r.client_end_us is None:
                spans.setdefault(r.node, [])
                continue
            lo = (r.client_end_us - r.arrived_us) / 1e6
            hi = (r.client_start_us - ph.sent_us) / 1e6
            spans.setdefault(r.node, []).append((lo, hi))
    out = {}
    for node, ivs in sorted(spans.items()):
        if not ivs:
            out[node] = ClockOffset(node, None, None, 0)
            continue
        lo = max(a for a, _ in ivs)
        hi = min(b for _, b in ivs)
        consistent = lo <= hi
        if not consistent:
            # the narrowest reply; one that is itself inverted (the client's own time longer
            # than the server's round trip: a clock that ran fast or stepped) gives its span
            lo, hi = min(ivs, key=lambda iv: abs(iv[1] - iv[0]))
        out[node] = ClockOffset(node, (lo + hi) / 2, abs(hi - lo) / 2, len(ivs), consistent)
    return out


def analyze(
    messages: Iterable[ClientMessage],
    phases: Iterable[ServerPhase],
    samples: dict[str, list[Record]],
) -> list[RoundsReport]:
    """The rounds of each Flower run found in the client messages and server phases;
    ``samples`` holds each stream's device samples in time order (for the causes)."""
    by_run: dict[int, tuple[list[ClientMessage], list[ServerPhase]]] = {}
    for m in messages:
        by_run.setdefault(m.flwr_run, ([], []))[0].append(m)
    for ph in phases:
        by_run.setdefault(ph.flwr_run, ([], []))[1].append(ph)
    return [_report(run, msgs, phs, samples) for run, (msgs, phs) in sorted(by_run.items())]


def _report(
    flwr_run: int,
    messages: list[ClientMessage],
    phases: list[ServerPhase],
    samples: dict[str, list[Record]],
) -> RoundsReport:
    clients: dict[int, Client] = {}
    for m in messages:
        c = clients.setdefault(m.node, Client(m.node))
        if m.partition is not None:
            c.partition = m.partition
        if m.host:
            c.hosts.add(m.host)
        if m.run_id:
            c.run_ids.add(m.run_id)
    for ph in phases:
        for n in (*ph.nodes, *(r.node for r in ph.replies)):
            clients.setdefault(n, Client(n))
    clients = dict(
        sorted(clients.items(), key=lambda kv: (kv[1].partition is None, kv[1].partition, kv[0]))
    )
    mine: dict[tuple[int, str, int], ClientMessage] = {}
    for m in sorted(messages, key=lambda m: m.start_us):
        if m.round is not None:
            mine.setdefault((m.round, m.type, m.node), m)  # a message handled twice: the first
    server: dict[tuple[int, str], ServerPhase] = {(p.round, p.type): p for p in phases}
    numbers = sorted({r for r, _, _ in mine} | {r for r, _ in server})
    rows = [_row(n, clients, mine, server, samples) for n in numbers]
    return RoundsReport(flwr_run, clients, rows, clock_offsets(phases), bool(phases))


def _row(
    number: int,
    clients: dict[int, Client],
    mine: dict[tuple[int, str, int], ClientMessage],
    server: dict[tuple[int, str], ServerPhase],
    samples: dict[str, list[Record]],
) -> RoundRow:
    train_ph = server.get((number, "train"))
    eval_ph = server.get((number, "evaluate"))
    row = RoundRow(number, {})
    for node in clients:
        cell = Cell(node, mine.get((number, "train", node)), mine.get((number, "evaluate", node)))
        if train_ph is not None:
            reply = next((r for r in train_ph.replies if r.node == node), None)
            if reply is not None:
                cell.latency_s = reply.latency_s
                if reply.error is not None:
                    cell.status, cell.reason = "failed", reply.error
            elif node in train_ph.timed_out:
                cell.status = "timed out"
                t = train_ph.timeout_s
                cell.reason = f"no reply within {t:g} s" if t is not None else None
            elif node not in train_ph.nodes:
                cell.status = "not selected"
        if cell.status == "ok" and cell.train is not None and cell.train.error is not None:
            cell.status, cell.reason = "failed", cell.train.error
        if (
            cell.status == "ok"
            and cell.train is None
            and (train_ph is None or node in train_ph.nodes)
        ):
            cell.status = "no record"
        if cell.status == "ok":
            _evaluate_status(cell, eval_ph)
        row.cells[node] = cell
    if train_ph is not None:
        row.train_metrics = dict(train_ph.metrics)
    if eval_ph is not None:
        row.evaluate_metrics = dict(eval_ph.metrics)

    timed = {n: c.train for n, c in row.cells.items() if _trained(c) and c.train}
    if timed:
        durations = {n: m.duration_s for n, m in timed.items()}
        med = statistics.median(durations.values())
        slowest = max(durations, key=lambda n: durations[n])
        row.median_train_s, row.slowest = med, slowest
        row.ratio = durations[slowest] / med if med > 0 else None
        if (
            row.ratio is not None
            and row.ratio >= STRAGGLER_RATIO
            and durations[slowest] - med >= STRAGGLER_MIN_S
            and len(durations) > 1
        ):
            row.straggler = slowest
            m = timed[slowest]
            row.signals = coinciding_signals(samples.get(m.stream, ()), m.start_us, m.end_us, m.run)
            head = (
                f"{clients[slowest].label}: {row.ratio:.1f}x the round's median "
                f"({durations[slowest]:.2f} s vs {med:.2f} s)"
            )
            if not samples.get(m.stream):
                row.cause = f"{head}; no device samples in its trace (no collector on the node)"
            else:
                row.cause = explain(head, row.signals)

    if train_ph is not None:
        row.waited_s = (train_ph.done_us - train_ph.sent_us) / 1e6
        ok = [r for r in train_ph.replies if r.error is None]
        if train_ph.timed_out:
            row.waited_for = train_ph.timed_out[0]
            row.critical = f"waited {row.waited_s:.2f} s: the timeout, for " + ", ".join(
                clients[n].label for n in train_ph.timed_out if n in clients
            )
        elif ok:
            # replies that arrived in one poll are told apart by the client's own time
            last = max(ok, key=lambda r: (r.arrived_us, _train_s(row, r.node)))
            row.waited_for = last.node
            own = _train_s(row, last.node)
            rest = f" (train {own:.2f} s, the rest transport and start-up)" if own else ""
            row.critical = f"waited {row.waited_s:.2f} s for {clients[last.node].label}{rest}"
    elif row.cells:
        ends = [(c.train.end_us, n) for n, c in row.cells.items() if c.train is not None]
        if ends:
            row.waited_for = max(ends)[1]
            row.critical = f"last to finish: {clients[row.waited_for].label} (no server trace)"
    return row


def _evaluate_status(cell: Cell, eval_ph: ServerPhase | None) -> None:
    """A client that trained but whose evaluation failed or timed out: said so."""
    reply = None
    if eval_ph is not None:
        reply = next((r for r in eval_ph.replies if r.node == cell.node), None)
    if reply is not None and reply.error is not None:
        cell.status, cell.phase, cell.reason = "failed", "evaluate", reply.error
    elif eval_ph is not None and reply is None and cell.node in eval_ph.timed_out:
        t = eval_ph.timeout_s
        cell.status, cell.phase = "timed out", "evaluate"
        cell.reason = f"no reply within {t:g} s" if t is not None else None
    elif cell.evaluate is not None and cell.evaluate.error is not None:
        cell.status, cell.phase, cell.reason = "failed", "evaluate", cell.evaluate.error


def _trained(cell: Cell) -> bool:
    return cell.status == "ok" or cell.phase == "evaluate"


def _train_s(row: RoundRow, node: int) -> float:
    c = row.cells.get(node)
    return c.train_s or 0.0 if c is not None else 0.0


# --- words ------------------------------------------------------------------------------------


def cell_text(cell: Cell) -> str:
    """A cell as the table shows it: ``0.41 / 0.05`` (train / evaluate seconds), or how the
    client dropped out (``timed out``, ``failed``, ``not selected``, ``no record``; ``0.41 /
    failed`` where it trained and its evaluation failed)."""
    if cell.status != "ok" and cell.phase != "evaluate":
        return cell.status
    t = f"{cell.train_s:.2f}" if cell.train_s is not None else "-"
    if cell.status != "ok":
        return f"{t} / {cell.status}"  # trained, then the evaluation failed or timed out
    e = f"{cell.evaluate_s:.2f}" if cell.evaluate_s is not None else "-"
    return f"{t} / {e}"


def offset_text(o: ClockOffset | None) -> str:
    """``+0.003 s ± 0.41 s``, or why the offset is unknown."""
    if o is None or o.offset_s is None or o.bound_s is None:
        return "clock offset unknown (no reply carried the client's times)"
    text = f"clock {o.offset_s:+.3f} s ± {o.bound_s:.3f} s against the server"
    return text if o.consistent else text + " (replies disagree: the clock stepped or drifts)"


def report_lines(report: RoundsReport) -> list[str]:
    """The report as lines of text: ``edgescope rounds`` prints them."""
    clients = list(report.clients.values())
    lines = [
        f"Flower run {report.flwr_run}: {len(report.rounds)} rounds, {len(clients)} clients"
        + ("" if report.server else " (no server trace: latencies and timeouts unknown)")
    ]
    for c in clients:
        hosts = ", ".join(sorted(c.hosts)) or "host unknown"
        lines.append(f"  {c.label} on {hosts}: {offset_text(report.offsets.get(c.node))}")
    if any(o.offset_s is not None for o in report.offsets.values()):
        lines.append(f"  ({ALIGNMENT})")
    head = ["round", *(c.short for c in clients), "waited"]
    table = [head]
    for row in report.rounds:
        cells = []
        for c in clients:
            cell = row.cells.get(c.node)
            text = cell_text(cell) if cell is not None else "-"
            cells.append(text + (" *" if row.straggler == c.node else ""))
        waited = f"{row.waited_s:.2f} s" if row.waited_s is not None else "-"
        table.append([str(row.round), *cells, waited])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines.append("")
    lines.append("train / evaluate seconds on each client's clock; * the round's straggler")
    for r in table:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append("")
    for row in report.rounds:
        lines.append(f"round {row.round}: " + "; ".join(round_notes(report, row)))
    return lines


def round_notes(report: RoundsReport, row: RoundRow) -> list[str]:
    """What is said about a round under the table: its critical path, its straggler and
    cause (or that it has none), the clients that failed or timed out, the aggregated
    metrics."""
    parts = []
    if row.critical:
        parts.append(row.critical)
    if row.cause:
        parts.append(f"straggler {row.cause}")
    elif row.ratio is not None and row.slowest is not None:
        parts.append(
            f"no straggler: slowest {report.clients[row.slowest].label} at "
            f"{row.ratio:.1f}x the median"
        )
    for n, cell in row.cells.items():
        if cell.status in ("failed", "timed out"):
            why = f": {cell.reason}" if cell.reason else ""
            where = " in evaluate" if cell.phase == "evaluate" else ""
            parts.append(f"{report.clients[n].label} {cell.status}{where}{why}")
    metrics = {**row.train_metrics, **row.evaluate_metrics}
    shown = sorted((k, v) for k, v in metrics.items() if not k.startswith("edgescope-"))
    if shown:
        parts.append("aggregated: " + ", ".join(f"{k} {v:.4g}" for k, v in shown))
    return parts
