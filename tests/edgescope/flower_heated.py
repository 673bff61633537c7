"""The example's ClientApp (``examples/flower``) on a node that overheats: copied into the app
by ``test_flower.py`` as ``digits_fl/heated.py``.

From round 2 on, the node whose ``--node-config`` has ``heat-tree=DIR`` (the recorded sysfs tree
its collector reads with ``--sysfs``) heats up while it trains, as a device in the sun does: the
CPU temperature in the tree goes to 96 °C and every CPU's throttle counters rise, and the
training takes as long as it would on a CPU slowed to a fraction of its clock (it waits out the
difference); when it is done the temperature falls back. The counters stay risen, as the
kernel's do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from digits_fl.client_app import evaluate, train
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from edgescope.integrations.flower import EdgescopeMod

app = ClientApp(mods=[EdgescopeMod(device_metrics=True)])
app.evaluate()(evaluate)

HOT_ZONES = ("thermal_zone4", "thermal_zone5")  # TCPU and x86_pkg_temp in the x86-laptop tree
SLOWED_S = 1.5
"""The throttled training's length: long enough for its collector to sample it several times."""


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


@app.train()
def heated_train(msg: Message, context: Context) -> Message:
    tree = context.node_config.get("heat-tree")
    round_ = msg.content["config"]["server-round"]
    if not isinstance(tree, str) or not isinstance(round_, int) or round_ < 2:
        return train(msg, context)
    _heat(Path(tree), hot=True)
    try:
        started = time.monotonic()
        reply = train(msg, context)
        time.sleep(max(0.0, SLOWED_S - (time.monotonic() - started)))
    finally:
        _heat(Path(tree), hot=False)
    return reply
