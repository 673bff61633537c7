"""The Flower Mod and the SDK's joined runs, in this process: real flwr Messages and Contexts
through ``EdgescopeMod`` (the deployment itself is ``test_flower.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="flwr is not installed (pip install flwr==1.42.0)")

from edgescope_tracing import Event, Metrics, RunStart, TraceReader  # noqa: E402
from edgescope_tracing.rounds import CLIENT_RECORD, FLOWER_MESSAGE, FLOWER_ROUND  # noqa: E402
from flowermsg import context as _context  # noqa: E402
from flowermsg import message as _message  # noqa: E402
from flwr.app import (  # noqa: E402
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from sdkutil import trace_files  # noqa: E402

import edgescope  # noqa: E402
from edgescope.cli import main  # noqa: E402
from edgescope.integrations.flower import (  # noqa: E402
    EdgescopeMod,
    RecordedStrategy,
    node_run_id,
)


def _train(msg: Message, ctx: Context) -> Message:
    w = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord({"train-loss": 0.25, "num-examples": 40})
    return Message(RecordDict({"arrays": ArrayRecord(w), "metrics": metrics}), reply_to=msg)


def _fail(msg: Message, ctx: Context) -> Message:
    return Message(Error(code=0, reason="out of memory"), reply_to=msg)


def _raise(msg: Message, ctx: Context) -> Message:
    return Message(RecordDict({"x": MetricRecord({"v": 1 / 0})}), reply_to=msg)


def _query(msg: Message, ctx: Context) -> Message:
    return Message(RecordDict({"metrics": MetricRecord({"classes": 10})}), reply_to=msg)


def _records(sdk: Path) -> list[object]:
    out: list[object] = []
    for f in trace_files(sdk):
        with TraceReader(f) as r:
            out.extend(r)
    return out


def test_the_mod_records_each_message_into_the_nodes_run(sdk: Path) -> None:
    mod = EdgescopeMod(device_metrics=True)
    ctx = _context()
    reply = mod(_message("train", 2), ctx, _train)
    # the reply keeps its one MetricRecord, with the device figures in it, and gains the
    # client's times for the server
    (metrics,) = reply.content.metric_records.values()
    assert metrics["train-loss"] == 0.25
    assert metrics["edgescope-wall-s"] > 0 and metrics["edgescope-rss-peak-mib"] > 1
    times = reply.content.config_records[CLIENT_RECORD]
    assert times["end"] >= times["start"] > 1e9
    assert times["run-id"] == node_run_id(99, 7)
    failed = mod(_message("evaluate", 2), ctx, _fail)
    assert failed.has_error()
    with pytest.raises(ZeroDivisionError):
        mod(_message("train", 3), ctx, _raise)
    answer = mod(_message("query", 3), ctx, _query)
    assert answer.content.metric_records["metrics"]["classes"] == 10
    edgescope.finish()

    recs = _records(sdk)
    (start,) = [r for r in recs if isinstance(r, RunStart)]
    assert start.run_id == node_run_id(99, 7)
    assert start.name == "flower-node7-run99"
    assert start.config["flower"] == {
        "run_id": 99,
        "node_id": 7,
        "partition_id": 1,
        "num_partitions": 3,
    }
    messages = [r for r in recs if isinstance(r, Event) and r.kind == FLOWER_MESSAGE]
    train, evaluate, raised, query = messages
    assert (query.detail["type"], query.detail["round"], query.severity) == ("query", 3, 0)
    assert query.detail["metrics"] == {"classes": 10}
    assert raised.severity == 2 and raised.detail["round"] == 3
    assert raised.detail["error"] == "ZeroDivisionError: division by zero"
    d = train.detail
    assert (d["round"], d["type"], d["node"], d["partition"]) == (2, "train", 7, 1)
    assert d["num_examples"] == 40 and d["metrics"] == {"train-loss": 0.25}
    assert d["arrays_in"] == d["arrays_out"] > 32
    assert d["end_us"] >= d["start_us"] == train.t_us
    assert evaluate.severity == 2 and evaluate.detail["error"] == "out of memory"
    assert "failed: out of memory" in evaluate.message
    logged = {m.key: m for m in recs if isinstance(m, Metrics)}
    assert logged["train_train-loss"].values == (0.25,) and logged["train_s"].steps == (2,)


def test_processes_that_init_with_one_run_id_join_one_run(sdk: Path) -> None:
    rid = "ab" * 16
    for _ in range(2):  # as two message processes would, one after the other
        with edgescope.init(name="joined", run_id=rid) as run:
            run.log({"x": 1.0})
    ids = {r.run_id for r in _records(sdk) if isinstance(r, RunStart)}
    assert ids == {rid}
    assert len(trace_files(sdk)) == 2
    for bad in ("XYZ", "ab", "AB" * 16, 5):
        with pytest.raises(ValueError, match="run_id must be 8 to 64 lower-case hex digits"):
            edgescope.init(name="bad", run_id=bad)  # type: ignore[arg-type]


class _SilentNodeGrid:
    """What Strategy.start asks of a grid (through RecordedStrategy's timing grid): nodes 1, 2
    and 3, of which node 3 never replies (a client that timed out)."""

    def __init__(self) -> None:
        self.sent: dict[str, Message] = {}

    @property
    def run(self) -> Any:
        return SimpleNamespace(run_id=5)

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex  # as the SuperLink does
            self.sent[mid] = m
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        out = []
        for mid in list(message_ids):
            m = self.sent[mid]
            if m.metadata.dst_node_id == 3:
                continue
            metrics = MetricRecord({"loss": 0.5, "num-examples": 10})
            content = RecordDict({"metrics": metrics})
            if m.metadata.message_type == "train":
                content["arrays"] = m.content["arrays"]
            out.append(Message(content, reply_to=m))
            del self.sent[mid]
        return out


def test_the_server_records_a_node_that_timed_out(
    sdk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real FedAvg under RecordedStrategy, one round with a 0.3 s timeout: nodes 1 and 2 reply,
    # node 3 never does; the round's event names it as timed out, and the round goes on.
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 5)  # what a ServerApp's process has set
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    strategy = RecordedStrategy(FedAvg(fraction_evaluate=1.0), poll_interval=0.01)
    arrays = ArrayRecord([np.zeros((4, 2), np.float32)])
    t0 = time.monotonic()
    result = strategy.start(_SilentNodeGrid(), arrays, num_rounds=1, timeout=0.3)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 10
    assert result.train_metrics_clientapp[1]["loss"] == pytest.approx(0.5)
    rounds = [e for e in _records(sdk) if isinstance(e, Event) and e.kind == FLOWER_ROUND]
    assert [(e.detail["round"], e.detail["type"]) for e in rounds] == [
        (1, "train"),
        (1, "evaluate"),
    ]
    for e in rounds:
        assert e.severity == 1
        assert sorted(e.detail["nodes"]) == [1, 2, 3] and e.detail["timed_out"] == [3]
        assert sorted(r["node"] for r in e.detail["replies"]) == [1, 2]
        assert e.detail["timeout_s"] == 0.3
        assert e.message.startswith(f"round 1 {e.detail['type']}: 2 of 3 replied in ")
        assert e.message.endswith(", 1 timed out")
    # and `edgescope rounds` says so from that server trace alone
    assert main(["rounds", *map(str, trace_files(sdk))]) == 0
    out = capsys.readouterr().out
    assert "node 3 timed out: no reply within 0.3 s" in out
    assert "the timeout, for node 3" in out
