"""The ClientApp: trains and evaluates on its partition (``partition-id`` and ``num-partitions``
from the SuperNode's ``--node-config``); the edgescope Mod records every message into the
node's edgescope run and adds the device's figures to each reply's metrics."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digits_fl.task import load_partition, loss_and_accuracy
from digits_fl.task import train as train_model
from edgescope.integrations.flower import EdgescopeMod

app = ClientApp(mods=[EdgescopeMod(device_metrics=True)])


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y, _, _ = load_partition(*_partition(context))
    weights = msg.content["arrays"].to_numpy_ndarrays()
    config = msg.content["config"]
    epochs = int(context.run_config["local-epochs"])
    lr = float(config.get("lr", context.run_config["learning-rate"]))
    new, loss = train_model(weights, x, y, epochs, lr)
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    content = RecordDict({"arrays": ArrayRecord(new), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, x, y = load_partition(*_partition(context))
    weights = msg.content["arrays"].to_numpy_ndarrays()
    loss, accuracy = loss_and_accuracy(weights, x, y)
    metrics = MetricRecord({"eval-loss": loss, "eval-acc": accuracy, "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
