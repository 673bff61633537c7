"""The example's ClientApp (``examples/flower``) on a node that overheats: copied into the app
by ``test_flower.py`` as ``digits_fl/heated.py``.

From round 2 on, the node whose ``--node-config`` has ``heat-tree=DIR`` (the recorded sysfs tree
its collector reads with ``--sysfs``) heats up while it trains, as a device in the sun does: the
CPU temperature in the tree goes to 96 °C and every CPU's throttle counters rise, and the
training takes as long as it would on a CPU slowed to a fraction of its clock (it waits out the
difference, and at least until the node's collector, ``heat-collector=HOST:PORT``, has sampled
the heat twice: a loaded machine may sample late, and the cause is what its collector saw); when
it is done the temperature falls back. The counters stay risen, as the kernel's do.

The node whose ``--node-config`` has ``fail-evaluate-round=N`` fails its evaluation in round N.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from digits_fl.client_app import evaluate, train
from edgescope_tracing import ThermalSample
from edgescope_tracing.protocol import Client
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from edgescope.integrations.flower import EdgescopeMod

app = ClientApp(mods=[EdgescopeMod(device_metrics=True)])

HOT_ZONES = ("thermal_zone4", "thermal_zone5")  # TCPU and x86_pkg_temp in the x86-laptop tree
SLOWED_S = 1.5
"""The throttled training's least length: several of its collector's samples (every 0.2 s)."""
HOT_C = 96.0
SAMPLED_S = 300.0
"""How long the collector may take to sample the heat before the training fails."""


def _write(path: Path, text: str) -> None:
    # whole or not at all, as sysfs reads are: the collector never sees half a number
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _heat(tree: Path, hot: bool) -> None:
    for zone in HOT_ZONES:
        _write(tree / "class/thermal" / zone / "temp", "96000\n" if hot else "61000\n")
    if hot:
        for counter in tree.glob("devices/system/cpu/cpu*/thermal_throttle/*_throttle_count"):
            _write(counter, f"{int(counter.read_text()) + 1}\n")


@app.evaluate()
def failing_evaluate(msg: Message, context: Context) -> Message:
    """The example's evaluation, except in the round ``fail-evaluate-round`` of the node's
    ``--node-config``, where it raises (Flower replies with an error)."""
    if context.node_config.get("fail-evaluate-round") == msg.content["config"]["server-round"]:
        raise RuntimeError("the evaluation data is unreadable")
    return evaluate(msg, context)


@app.train()
def heated_train(msg: Message, context: Context) -> Message:
    tree = context.node_config.get("heat-tree")
    round_ = msg.content["config"]["server-round"]
    if not isinstance(tree, str) or not isinstance(round_, int) or round_ < 2:
        return train(msg, context)
    addr = context.node_config.get("heat-collector")
    assert isinstance(addr, str), "heat-collector=HOST:PORT: the node's collector"
    host, port = addr.rsplit(":", 1)
    with Client.connect(host, int(port), since=None, idle_timeout=SAMPLED_S) as collector:
        _heat(Path(tree), hot=True)
        try:
            started = time.monotonic()
            reply = train(msg, context)
            _sampled(collector, since=collector.welcome.next_seq)
            time.sleep(max(0.0, SLOWED_S - (time.monotonic() - started)))
        finally:
            _heat(Path(tree), hot=False)
    return reply


def _sampled(collector: Client, since: int, times: int = 2) -> None:
    """Until the collector's stream, from record ``since`` on, holds ``times`` thermal samples
    that read the heat (the second was read wholly after the tree was heated)."""
    deadline = time.monotonic() + SAMPLED_S
    seen = 0
    for rec in collector:
        if time.monotonic() > deadline:
            break
        if getattr(rec, "seq", -1) < since or not isinstance(rec, ThermalSample):
            continue
        if any(z.temp_c >= HOT_C for z in rec.zones):
            seen += 1
            if seen >= times:
                return
    raise RuntimeError(f"the node's collector did not sample the heat in {SAMPLED_S:g} s")
