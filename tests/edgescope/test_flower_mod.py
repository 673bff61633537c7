"""The Flower Mod and the SDK's joined runs, in this process: real flwr Messages and Contexts
through ``EdgescopeMod`` (the deployment itself is ``test_flower.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

flwr = pytest.importorskip("flwr", reason="flwr is not installed (pip install flwr==1.42.0)")

from edgescope_tracing import Event, Metrics, RunStart, TraceReader  # noqa: E402
from edgescope_tracing.rounds import CLIENT_RECORD, FLOWER_MESSAGE  # noqa: E402
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

import edgescope  # noqa: E402
from edgescope.integrations.flower import EdgescopeMod, node_run_id  # noqa: E402


def _train(msg: Message, ctx: Context) -> Message:
    w = msg.content["arrays"].to_numpy_ndarrays()
    metrics = MetricRecord({"train-loss": 0.25, "num-examples": 40})
    return Message(RecordDict({"arrays": ArrayRecord(w), "metrics": metrics}), reply_to=msg)


def _fail(msg: Message, ctx: Context) -> Message:
    return Message(Error(code=0, reason="out of memory"), reply_to=msg)


def _raise(msg: Message, ctx: Context) -> Message:
    return Message(RecordDict({"x": MetricRecord({"v": 1 / 0})}), reply_to=msg)


def _records(sdk: Path) -> list[object]:
    out: list[object] = []
    for f in sorted((sdk / "runs").glob("*.est")):
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
    train, evaluate, raised = [r for r in recs if isinstance(r, Event) and r.kind == FLOWER_MESSAGE]
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
    assert len(list((sdk / "runs").glob("*.est"))) == 2
    for bad in ("XYZ", "ab", "AB" * 16, 5):
        with pytest.raises(ValueError, match="run_id must be 8 to 64 lower-case hex digits"):
            edgescope.init(name="bad", run_id=bad)  # type: ignore[arg-type]
