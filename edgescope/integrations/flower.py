"""Flower federated learning: a client Mod and a server strategy wrapper that record rounds.

Client side, in the ``ClientApp``::

    from edgescope.integrations.flower import edgescope_mod

    app = ClientApp(mods=[edgescope_mod])

Every message the ClientApp handles (train, evaluate, query) becomes one ``flower.message``
event in the node's edgescope run: its round (``server-round`` from the message's config), type,
start and duration, the number of examples and the metrics the ClientApp returned, the bytes of
the arrays in and out, and the error where it failed; its duration and metrics are also logged
as metrics at step = round (``train_s``, ``train_loss``, ...), for the dashboard's charts.

The run is the node's, not the process's: under Flower's deployment engine every message runs
in a fresh ``flwr-clientapp`` process, so each process joins one run whose id is derived from the
Flower run id and the node id (:func:`node_run_id`), named ``flower-node<NODE>-run<RUN>``. It
goes to the device's collector where one runs (``EDGESCOPE_SOCKET``, which the process inherits
from its SuperNode), else to a trace file (``EDGESCOPE_DIR``); readers merge the parts by id.

The reply gets a ``ConfigRecord`` named ``edgescope`` with the message's start and end on the
client's clock (Unix seconds): the server helper uses it to split each reply's latency and to
bound the client's clock offset. ``EdgescopeMod(device_metrics=True)`` also adds the device's
own figures for that message to the reply's one ``MetricRecord`` (FedAvg takes exactly one), so
the server sees them too: ``edgescope-wall-s``, ``edgescope-cpu-s`` (the process's CPU time in
the message) and ``edgescope-rss-peak-mib`` (its peak RSS). It also adds the round's thermal
figures, into the ``edgescope`` ConfigRecord, not the MetricRecord: not every device has all of
them, and FedAvg stops the ServerApp when the replies' MetricRecords differ in their keys;
:class:`RecordedStrategy` records them per reply (``device``) in the server's trace. They come
from the device's own collector, which already samples them (the Mod reads no sysfs of its own): it
follows the collector's stream over the message (``EDGESCOPE_COLLECTOR``, ``HOST[:PORT]``,
default the loopback address on the default port; a token file in
``EDGESCOPE_COLLECTOR_TOKEN_FILE`` where the collector asks for one; both inherited from the
SuperNode) and adds, from the ``ThermalSample`` records between the last one before the message
and the first one after it:

- ``edgescope-temp-max-c``: the hottest zone in the message (and the sample that closes it);
- ``edgescope-temp-delta-c``: the hottest zone at its end minus at its start;
- ``edgescope-throttle-events``: how much the throttle counters (``*_count``) rose, where the
  device has them;
- ``edgescope-throttled``: 1 if a throttle counter rose or the Pi firmware reported a current
  throttling, under-voltage or frequency cap in the message, else 0, where the device reports
  either.

The collector is never waited on long: connecting and its handshake are bounded by
``collector_timeout`` (1 s), and after the message the Mod waits at most ``closing_wait``
(0.05 s) for a sample that closes it, then uses what it has: the sample before the message and
those in it. Waiting for the collector's next sample instead would add up to its thermal
interval (1 s by default) to every message, and a round is two messages: measured with
``benchmarks/bench_flower_run.py``, that was +2.5 s a round. A message shorter than the
collector's interval may then have no sample of its own, and its figures read the one before.
Where no collector answers (none runs, it refused,
it hung), the thermal figures are left out, not zero, and the node's trace says so in one
``flower.device_figures`` event (once, until a collector answers again: the Mod keeps that in
the Context's state, which the SuperNode carries from message to message).

Server side, in the ``ServerApp``::

    from edgescope.integrations.flower import RecordedStrategy

    strategy = RecordedStrategy(FedAvg(...))
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)

Each round's train and evaluate phase becomes one ``flower.round`` event in the server's run
(``flower-server-run<RUN>``): the nodes sent to, each reply's latency and client-side times, the
nodes that replied with an error or did not reply before the timeout, and the aggregated
metrics (also logged at step = round). Replies are collected every ``poll_interval`` seconds
(0.1; Flower's own grid polls every 3 s), which is the resolution of the latencies.

``edgescope rounds`` and the TUI's Rounds view read both (:mod:`edgescope_tracing.rounds`).
Flower is the ``edgescope[flower]`` extra; nothing else in edgescope imports this module.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from edgescope_tracing import Event, ThermalSample, TraceError
from edgescope_tracing.paths import COLLECTOR_ENV, collector_address, collector_token_file
from edgescope_tracing.protocol import Client
from edgescope_tracing.rounds import (
    CLIENT_RECORD,
    FLOWER_MESSAGE,
    FLOWER_ROUND,
    message_kind,
)
from edgescope_tracing.signals import pi_throttled_flags
from edgescope_tracing.tokens import read_token

try:
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp.typing import ClientAppCallable
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Result, Strategy
except ImportError as _e:
    from edgescope.integrations._common import missing

    raise missing(
        "flower", "Flower", "flower", _e, "flwr", "edgescope's Mod is written for flwr 1.42"
    ) from _e

import edgescope
from edgescope.sdk import _run
from edgescope.sdk._ship import notify

__all__ = [
    "EdgescopeMod",
    "RecordedStrategy",
    "edgescope_mod",
    "node_run_id",
]

_NAMESPACE = uuid.UUID("6c1f3c55-2f5e-4a8e-9d1b-6b0f6a1e5f18")
"""The namespace of the node runs' ids (uuid5): one id per Flower run and node."""

DEVICE_PREFIX = "edgescope-"
"""The prefix of the device figures the Mod adds to a reply (MetricRecord and ConfigRecord)."""

DEVICE_FIGURES = "flower.device_figures"
"""The event kind that says the thermal figures are left out, and why."""

_STATE = "edgescope-mod"
"""The Mod's ConfigRecord in the Context's state (what it has already said)."""


def node_run_id(flwr_run_id: int, node_id: int) -> str:
    """The edgescope run id of one node's part in one Flower run: the same in every process."""
    return uuid.uuid5(_NAMESPACE, f"flower:{flwr_run_id}:{node_id}").hex


def _now_us() -> int:
    return time.time_ns() // 1000


def _round_of(msg: Message) -> int | None:
    for rec in msg.content.config_records.values():
        r = rec.get("server-round")
        if isinstance(r, int) and not isinstance(r, bool):
            return r
    return None


def _array_bytes(msg: Message) -> int:
    if not msg.has_content():
        return 0
    return sum(rec.count_bytes() for rec in msg.content.array_records.values())


def _scalar_metrics(msg: Message) -> dict[str, float]:
    out: dict[str, float] = {}
    if not msg.has_content():
        return out
    for rec in msg.content.metric_records.values():
        for k, v in rec.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = float(v)
    return out


def _node_config_int(ctx: Context, key: str) -> int | None:
    v = ctx.node_config.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class EdgescopeMod:
    """A Flower client Mod (``(Message, Context, call_next) -> Message``) that records every
    message into the node's edgescope run; see the module's docstring.

    ``device_metrics`` adds the device's figures for the message to the reply's MetricRecord,
    and the thermal ones from the device's collector to its ``edgescope`` ConfigRecord;
    ``collector_timeout`` (seconds) bounds the connection to that collector and its handshake;
    ``closing_wait`` (seconds) the wait after the message for a sample that closes it.
    """

    def __init__(
        self,
        *,
        device_metrics: bool = False,
        collector_timeout: float = 1.0,
        closing_wait: float = 0.05,
    ) -> None:
        self.device_metrics = device_metrics
        self.collector_timeout = collector_timeout
        self.closing_wait = closing_wait

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        start_us = _now_us()
        cpu0 = time.process_time()
        run = self._node_run(ctxt)
        watch: _ThermalWatch | None = None
        missing: str | None = None
        if self.device_metrics:
            try:
                watch = _ThermalWatch.start(start_us, self.collector_timeout)
            except (TraceError, ValueError) as e:
                missing = str(e)
        try:
            reply = call_next(msg, ctxt)
        except Exception as e:
            if watch is not None:
                watch.stop()
            # the ClientApp raised: Flower turns it into an error reply; the node's run says so
            rnd = _round_of(msg)
            kind = message_kind(msg.metadata.message_type)
            if not run.finished:
                run._push(
                    Event(
                        FLOWER_MESSAGE,
                        f"round {rnd} {kind} on node {ctxt.node_id} raised "
                        f"{type(e).__name__}: {str(e)[:200]}",
                        run=0,
                        severity=2,
                        detail={
                            "flower_run": ctxt.run_id,
                            "node": ctxt.node_id,
                            "partition": _node_config_int(ctxt, "partition-id"),
                            "round": rnd,
                            "type": kind,
                            "action": msg.metadata.message_type,
                            "start_us": start_us,
                            "end_us": _now_us(),
                            "error": f"{type(e).__name__}: {str(e)[:1000]}",
                        },
                        t_us=start_us,
                    )
                )
            raise
        end_us = _now_us()
        wall = (end_us - start_us) / 1e6
        kind = message_kind(msg.metadata.message_type)
        rnd = _round_of(msg)
        metrics = _scalar_metrics(reply)
        error = reply.error.reason if reply.has_error() else None
        device: dict[str, float] = {}
        thermal: dict[str, float] = {}
        if self.device_metrics and not reply.has_error():
            device = _device_figures(wall, time.process_time() - cpu0)
        if watch is not None:
            samples = watch.finish(end_us, self.closing_wait)
            if not reply.has_error():
                thermal = _thermal_figures(samples, start_us, end_us)
        if self.device_metrics and not run.finished:
            self._say_collector(run, ctxt, missing)
        num = metrics.get("num-examples")
        detail: dict[str, Any] = {
            "flower_run": ctxt.run_id,
            "node": ctxt.node_id,
            "partition": _node_config_int(ctxt, "partition-id"),
            "num_partitions": _node_config_int(ctxt, "num-partitions"),
            "round": rnd,
            "type": kind,
            "action": msg.metadata.message_type,
            "message_id": msg.metadata.message_id,
            "start_us": start_us,
            "end_us": end_us,
            "duration_s": wall,
            "num_examples": int(num) if num is not None else None,
            "metrics": {k: v for k, v in metrics.items() if k != "num-examples"},
            "arrays_in": _array_bytes(msg),
            "arrays_out": _array_bytes(reply),
            "pid": os.getpid(),
        }
        if error is not None:
            detail["error"] = error
        if device or thermal:
            detail["device"] = {**device, **thermal}
        where = f"round {rnd}" if rnd is not None else "no round"
        text = f"{where} {kind} on node {ctxt.node_id}: {wall:.3f} s"
        if error is not None:
            text += f", failed: {error[:200]}"
        if run.finished:
            # the ClientApp started an edgescope run of its own (init finishes the active one)
            notify(
                f"{where} {kind} on node {ctxt.node_id} not recorded: the ClientApp's own "
                "edgescope.init() finished the node's run; record into it instead"
            )
        else:
            run._push(
                Event(
                    FLOWER_MESSAGE,
                    text,
                    run=0,
                    severity=2 if error else 0,
                    detail=detail,
                    t_us=start_us,
                )
            )
            values = {f"{kind}_s": wall}
            for k, v in detail["metrics"].items():
                values[f"{kind}_{k}"] = v
            run.log(values, step=rnd if rnd is not None else max(run._step, 0))
        if reply.has_content():
            self._annotate(reply, start_us, end_us, run.run_id, device, thermal)
        return reply

    def _node_run(self, ctxt: Context) -> edgescope.Run:
        rid = node_run_id(ctxt.run_id, ctxt.node_id)
        active = _run._active
        if active is not None and active.run_id == rid and not active.finished:
            return active
        part = _node_config_int(ctxt, "partition-id")
        config: dict[str, Any] = {
            "flower": {
                "run_id": ctxt.run_id,
                "node_id": ctxt.node_id,
                "partition_id": part,
                "num_partitions": _node_config_int(ctxt, "num-partitions"),
            }
        }
        tags = ["flower", f"flower-node:{ctxt.node_id}"]
        if part is not None:
            tags.append(f"flower-partition:{part}")
        return edgescope.init(
            name=f"flower-node{ctxt.node_id}-run{ctxt.run_id}",
            config=config,
            tags=tags,
            run_id=rid,
        )

    @staticmethod
    def _say_collector(run: edgescope.Run, ctxt: Context, missing: str | None) -> None:
        """One event when the collector stops answering (none since it last did)."""
        said = ctxt.state.config_records.get(_STATE)
        was = said is not None and said.get("collector-missing") is True
        if missing is None:
            if was:
                ctxt.state[_STATE] = ConfigRecord({"collector-missing": False})
            return
        if was:
            return
        host_port = os.environ.get(COLLECTOR_ENV) or "the loopback default"
        run._push(
            Event(
                DEVICE_FIGURES,
                f"node {ctxt.node_id}: no temperature or throttle figures in its replies: "
                f"{missing}",
                run=0,
                severity=1,
                detail={"node": ctxt.node_id, "collector": host_port, "reason": missing},
                t_us=_now_us(),
            )
        )
        ctxt.state[_STATE] = ConfigRecord({"collector-missing": True})

    @staticmethod
    def _annotate(
        reply: Message,
        start_us: int,
        end_us: int,
        run_id: str,
        device: dict[str, float],
        thermal: dict[str, float],
    ) -> None:
        content = reply.content
        # the thermal figures ride in the ConfigRecord, which strategies do not aggregate: a
        # device without a collector or without throttle counters has fewer of them, and FedAvg
        # stops the ServerApp when the replies' MetricRecords differ in their keys
        content[CLIENT_RECORD] = ConfigRecord(
            {"start": start_us / 1e6, "end": end_us / 1e6, "run-id": run_id, **thermal}
        )
        if device:
            records = list(content.metric_records.values())
            if len(records) == 1:
                records[0].update(device)
            elif not records:
                content["metrics"] = MetricRecord(dict(device.items()))


def _device_figures(wall: float, cpu: float) -> dict[str, float]:
    # ru_maxrss: KiB on Linux; the process is fresh for each message under the deployment
    # engine, so its peak is this message's
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        f"{DEVICE_PREFIX}wall-s": wall,
        f"{DEVICE_PREFIX}cpu-s": cpu,
        f"{DEVICE_PREFIX}rss-peak-mib": rss_peak / (1 << 20),
    }


class _ThermalWatch:
    """The device's collector's thermal samples over one message, read by a thread from the
    collector's stream (joined live at its latest keyframe, so the sample before the message
    is there too)."""

    def __init__(self, client: Client, start_us: int) -> None:
        self.client = client
        self.start_us = start_us
        self.before: ThermalSample | None = None
        self.samples: list[ThermalSample] = []
        self.done = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, name="edgescope-thermal", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, start_us: int, timeout: float) -> _ThermalWatch:
        """Connected to the collector; TraceError (a sentence) or ValueError where not."""
        host, port = collector_address()
        path = collector_token_file()
        token = read_token(path).value if path is not None else None
        client = Client.connect(host, port, token=token, timeout=timeout, idle_timeout=None)
        return cls(client, start_us)

    def _read(self) -> None:
        try:
            for item in self.client:
                if isinstance(item, ThermalSample):
                    with self.cond:
                        if item.t_us < self.start_us:
                            self.before = item
                        else:
                            self.samples.append(item)
                        self.cond.notify_all()
        except (TraceError, OSError):
            pass  # the stream ended or was shut: what was read is what there is
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def finish(self, end_us: int, wait: float) -> list[ThermalSample]:
        """The samples from the last before the message to the first after ``end_us``, waiting
        at most ``wait`` seconds for that one."""
        deadline = time.monotonic() + wait
        with self.cond:
            while not self.done and not any(s.t_us >= end_us for s in self.samples):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            got = ([self.before] if self.before is not None else []) + self.samples
        self.stop()
        return got

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the collector
            self.client.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(1.0)
        self.client.close()


def _hottest(th: ThermalSample) -> float | None:
    return max((z.temp_c for z in th.zones), default=None)


def _thermal_figures(samples: list[ThermalSample], start_us: int, end_us: int) -> dict[str, float]:
    """The message's temperature and throttle figures from the collector's samples (the last
    before ``start_us``, then in time order); only those the samples carry."""
    window: list[ThermalSample] = []
    for s in samples:
        window.append(s)
        if s.t_us >= end_us:
            break  # the sample that closes the message
    inside = [s for s in window if s.t_us >= start_us]
    out: dict[str, float] = {}
    if not inside:
        return out
    temps = [t for t in map(_hottest, inside) if t is not None]
    if temps:
        out[f"{DEVICE_PREFIX}temp-max-c"] = max(temps)
    first, last = _hottest(window[0]), _hottest(window[-1])
    if len(window) >= 2 and first is not None and last is not None:
        out[f"{DEVICE_PREFIX}temp-delta-c"] = last - first
    counters = [k for k in window[-1].throttle if k.endswith("_count")]
    rose = 0
    if len(window) >= 2 and counters:
        base = window[0].throttle
        rose = sum(
            max(0, window[-1].throttle[k] - base.get(k, window[-1].throttle[k])) for k in counters
        )
        out[f"{DEVICE_PREFIX}throttle-events"] = float(rose)
    pi = [s.throttle["pi.throttled"] for s in inside if "pi.throttled" in s.throttle]
    now = any(not f.endswith("_occurred") for v in pi for f in pi_throttled_flags(v))
    if pi or f"{DEVICE_PREFIX}throttle-events" in out:
        out[f"{DEVICE_PREFIX}throttled"] = 1.0 if rose or now else 0.0
    return out


edgescope_mod = EdgescopeMod()
"""The Mod with its defaults (no device figures in the reply):
``ClientApp(mods=[edgescope_mod])``."""


class _RecordingGrid(Grid):
    """The ServerApp's grid, with ``send_and_receive`` timed per reply."""

    def __init__(self, inner: Grid, poll_interval: float) -> None:
        self.inner = inner
        self.poll_interval = poll_interval
        self.last: dict[str, Any] | None = None
        """What the last ``send_and_receive`` saw: sends, replies, timeouts."""

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        msgs = list(messages)
        rnd = next((r for r in map(_round_of, msgs) if r is not None), None)
        kinds = {message_kind(m.metadata.message_type) for m in msgs}
        sent_us = _now_us()
        ids = list(self.inner.push_messages(msgs))
        dst = {mid: m.metadata.dst_node_id for mid, m in zip(ids, msgs, strict=False)}
        waiting = set(ids)
        replies: list[Message] = []
        seen: list[dict[str, Any]] = []
        end = time.monotonic() + timeout if timeout is not None else None
        while waiting:
            got = list(self.inner.pull_messages(waiting))
            arrived_us = _now_us()
            for m in got:
                mid = m.metadata.reply_to_message_id
                if mid not in waiting:
                    continue
                waiting.discard(mid)
                replies.append(m)
                seen.append(_reply_facts(m, dst.get(mid), sent_us, arrived_us))
            if not waiting or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll_interval)
        self.last = {
            "round": rnd,
            "type": kinds.pop() if len(kinds) == 1 else ",".join(sorted(kinds)),
            "sent_us": sent_us,
            "done_us": _now_us(),
            "timeout_s": timeout,
            "nodes": [dst[mid] for mid in ids],
            "replies": seen,
            "timed_out": sorted(dst[mid] for mid in waiting),
        }
        return replies


def _reply_facts(m: Message, node: int | None, sent_us: int, arrived_us: int) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "node": node if node is not None else m.metadata.src_node_id,
        "arrived_us": arrived_us,
        "latency_s": (arrived_us - sent_us) / 1e6,
    }
    if m.has_error():
        facts["error"] = m.error.reason
        return facts
    rec = m.content.config_records.get(CLIENT_RECORD)
    if rec is not None:
        start, end, rid = rec.get("start"), rec.get("end"), rec.get("run-id")
        if isinstance(start, float) and isinstance(end, float):
            facts["client_start_us"] = round(start * 1e6)
            facts["client_end_us"] = round(end * 1e6)
        if isinstance(rid, str):
            facts["client_run_id"] = rid
        device = {
            k: float(v)
            for k, v in rec.items()
            if k.startswith(DEVICE_PREFIX) and isinstance(v, float)
        }
        if device:
            facts["device"] = device
    return facts


class RecordedStrategy(Strategy):
    """A strategy wrapper that records each round into the server's edgescope run; see the
    module's docstring. Every strategy method is the wrapped strategy's.

    ``run``: an edgescope run to record into (default: ``flower-server-run<RUN>``, started by
    :meth:`start` and finished when it returns). ``poll_interval``: seconds between pulls for
    replies.
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        run: edgescope.Run | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self.strategy = strategy
        self.run = run
        self.poll_interval = poll_interval
        self._grid: _RecordingGrid | None = None

    def __getattr__(self, name: str) -> Any:
        # attributes of the wrapped strategy (fraction_train, ...) read through
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        self._record(server_round, "train", metrics)
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        self._record(server_round, "evaluate", metrics)
        return metrics

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """The wrapped strategy's rounds (``Strategy.start``), recorded."""
        own = self.run is None
        if self.run is None:
            flwr_run = grid.run.run_id
            self.run = edgescope.init(
                name=f"flower-server-run{flwr_run}",
                config={
                    "flower": {
                        "run_id": flwr_run,
                        "num_rounds": num_rounds,
                        "strategy": type(self.strategy).__name__,
                    }
                },
                tags=["flower", "flower-server"],
            )
        self._grid = _RecordingGrid(grid, self.poll_interval)
        try:
            return Strategy.start(
                self,
                self._grid,
                initial_arrays,
                num_rounds,
                timeout,
                train_config,
                evaluate_config,
                evaluate_fn,
            )
        finally:
            if own:
                self.run.finish()
                self.run = None

    def _record(self, server_round: int, kind: str, metrics: MetricRecord | None) -> None:
        grid, run = self._grid, self.run
        if grid is None or run is None or grid.last is None:
            return  # aggregate_* called outside start(): nothing was timed
        facts, grid.last = grid.last, None
        if not facts["nodes"]:
            return  # nothing was sent this phase (e.g. fraction_evaluate=0)
        agg = {
            k: float(v)
            for k, v in (metrics or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        facts["round"] = server_round
        facts["type"] = kind
        facts["flower_run"] = grid.run.run_id
        facts["metrics"] = agg
        failed = [r["node"] for r in facts["replies"] if "error" in r]
        ok = len(facts["replies"]) - len(failed)
        wait = (facts["done_us"] - facts["sent_us"]) / 1e6
        text = f"round {server_round} {kind}: {ok} of {len(facts['nodes'])} replied in {wait:.2f} s"
        if failed:
            text += f", {len(failed)} failed"
        if facts["timed_out"]:
            text += f", {len(facts['timed_out'])} timed out"
        run._push(
            Event(
                FLOWER_ROUND,
                text,
                run=0,
                severity=1 if failed or facts["timed_out"] else 0,
                detail=facts,
                t_us=facts["sent_us"],
            )
        )
        if agg:
            run.log({f"{kind}_{k}": v for k, v in agg.items()}, step=server_round)
