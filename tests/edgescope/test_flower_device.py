"""The Mod's thermal figures from the device's own collector: a real collector reading a copy
of a recorded sysfs tree (x86-laptop) that heats during a message, the Mod called directly with
real flwr Messages and a Context (the deployment itself is ``test_flower.py``); and the cases
where no collector answers (none listens; one that never speaks), where the figures are left
out and the node's trace says so once."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

flwr = pytest.importorskip("flwr", reason="flwr is not installed (pip install flwr==1.42.0)")

from edgescope_tracing import Event, ThermalSample, TraceReader  # noqa: E402
from edgescope_tracing.paths import COLLECTOR_ENV  # noqa: E402
from edgescope_tracing.protocol import Client  # noqa: E402
from edgescope_tracing.rounds import CLIENT_RECORD, FLOWER_MESSAGE  # noqa: E402
from flowermsg import context as _context  # noqa: E402
from flowermsg import message as _message  # noqa: E402
from flwr.app import (  # noqa: E402
    ArrayRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)

import edgescope  # noqa: E402
from edgescope.integrations.flower import DEVICE_FIGURES, EdgescopeMod, _reply_facts  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "tui"))
from sshd.collector import Collector  # noqa: E402

TREE = TESTS / "collector" / "trees" / "x86-laptop" / "sys"
HOT_ZONES = ("thermal_zone4", "thermal_zone5")  # TCPU and x86_pkg_temp
COOL_MC, HOT_MC = 50000, 96000
THERMAL = ("edgescope-temp-max-c", "edgescope-temp-delta-c")
THROTTLE = ("edgescope-throttle-events", "edgescope-throttled")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")  # whole or not at all, as sysfs reads are
    tmp.write_text(text)
    os.replace(tmp, path)


def _reply(msg: Message) -> Message:
    metrics = MetricRecord({"train-loss": 0.25, "num-examples": 40})
    arrays = ArrayRecord(msg.content["arrays"].to_numpy_ndarrays())
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _events(sdk: Path) -> list[Event]:
    out: list[Event] = []
    for f in sorted((sdk / "runs").glob("*.est")):
        with TraceReader(f) as r:
            out.extend(x for x in r if isinstance(x, Event))
    return out


class Device:
    """The collector on a copied, cooled tree; :meth:`sampled` waits (on its stream) for a
    thermal sample after a time that reads a given temperature."""

    def __init__(self, tmp: Path) -> None:
        self.sysfs = tmp / "sysfs"
        shutil.copytree(TREE, self.sysfs, symlinks=True)
        for t in [
            *self.sysfs.glob("class/thermal/thermal_zone*/temp"),
            *self.sysfs.glob("class/hwmon/hwmon*/temp*_input"),
        ]:
            _write(t, f"{COOL_MC}\n")
        self.counters = sorted(
            self.sysfs.glob("devices/system/cpu/cpu*/thermal_throttle/*_throttle_count")
        )
        self.collector = Collector(
            tmp / "collector",
            interval=0.1,
            extra=("--sysfs", str(self.sysfs), "--sample-every", "thermal=0.1"),
        )

    def heat(self) -> None:
        for c in self.counters:  # the counters first: a sample that reads the heat reads them
            _write(c, f"{int(c.read_text()) + 1}\n")
        for zone in HOT_ZONES:
            _write(self.sysfs / "class/thermal" / zone / "temp", f"{HOT_MC}\n")

    def sampled(self, after_us: int, temp_c: float) -> None:
        deadline = time.monotonic() + 60  # seconds idle; only reached where something is wrong
        with Client.connect("127.0.0.1", self.collector.port, idle_timeout=30) as c:
            for item in c:
                assert time.monotonic() < deadline, f"no sample at {temp_c} °C"
                if (
                    isinstance(item, ThermalSample)
                    and item.t_us > after_us
                    and max(z.temp_c for z in item.zones) == temp_c
                ):
                    return
        raise AssertionError("the collector's stream ended")


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Device]:
    dev = Device(tmp_path)
    dev.collector.start()
    monkeypatch.setenv(COLLECTOR_ENV, f"127.0.0.1:{dev.collector.port}")
    try:
        yield dev
    finally:
        dev.collector.stop()


def test_a_message_that_heats_the_device_says_so_in_the_reply(sdk: Path, device: Device) -> None:
    mod = EdgescopeMod(device_metrics=True)
    ctx = _context()

    def cool(msg: Message, ctx: Context) -> Message:
        # the collector samples the device inside the message, still cool
        device.sampled(time.time_ns() // 1000, COOL_MC / 1000)
        return _reply(msg)

    def hot(msg: Message, ctx: Context) -> Message:
        device.sampled(time.time_ns() // 1000, COOL_MC / 1000)
        device.heat()  # the device throttles mid-message, and the collector sees it
        device.sampled(time.time_ns() // 1000, HOT_MC / 1000)
        return _reply(msg)

    replies = [mod(_message("train", 1), ctx, cool), mod(_message("train", 2), ctx, hot)]
    edgescope.finish()

    for reply in replies:
        # the MetricRecord keeps the figures every device has (FedAvg needs the same keys in
        # every reply); the thermal ones ride in the ConfigRecord strategies do not aggregate
        (metrics,) = reply.content.metric_records.values()
        assert metrics["train-loss"] == 0.25 and metrics["edgescope-wall-s"] > 0
        assert not {*THERMAL, *THROTTLE} & set(metrics.keys())
    calm, heated = (r.content.config_records[CLIENT_RECORD] for r in replies)
    assert (calm["edgescope-temp-max-c"], calm["edgescope-temp-delta-c"]) == (50.0, 0.0)
    assert (calm["edgescope-throttle-events"], calm["edgescope-throttled"]) == (0.0, 0.0)
    assert (heated["edgescope-temp-max-c"], heated["edgescope-temp-delta-c"]) == (96.0, 46.0)
    # every counter of the tree rose by one: cpu0..3's core counters and the package's (the
    # collector reads the package counter once, not once per CPU)
    assert heated["edgescope-throttle-events"] == 5
    assert heated["edgescope-throttled"] == 1.0
    # the server helper records each reply's figures in the server's trace
    facts = _reply_facts(replies[1], 7, 0, 1)
    assert facts["device"]["edgescope-temp-max-c"] == 96.0
    assert facts["device"]["edgescope-throttle-events"] == 5
    # the node's trace holds the same figures, and nothing said the collector was missing
    events = _events(sdk)
    msgs = [e for e in events if e.kind == FLOWER_MESSAGE]
    assert [m.detail["device"]["edgescope-temp-max-c"] for m in msgs] == [50.0, 96.0]  # type: ignore[index, call-overload]
    assert not [e for e in events if e.kind == DEVICE_FIGURES]


@pytest.mark.parametrize("collector", ["none", "silent"])
def test_without_a_collector_the_figures_are_left_out_and_said_once(
    sdk: Path, monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    s = socket.socket()  # a listener that accepts and never speaks: a hung collector
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    port = s.getsockname()[1]
    if collector == "none":
        s.close()  # nothing listens there any more
    monkeypatch.setenv(COLLECTOR_ENV, f"127.0.0.1:{port}")
    mod = EdgescopeMod(device_metrics=True, collector_timeout=0.3)
    ctx = _context()
    replies = [mod(_message("train", r), ctx, lambda m, c: _reply(m)) for r in (1, 2, 3)]
    edgescope.finish()
    s.close()

    for reply in replies:
        (metrics,) = reply.content.metric_records.values()
        assert metrics["edgescope-wall-s"] > 0 and metrics["edgescope-rss-peak-mib"] > 1
        assert not {*THERMAL, *THROTTLE} & set(metrics.keys())  # left out, not zero
        assert not {*THERMAL, *THROTTLE} & set(reply.content.config_records[CLIENT_RECORD])
    events = _events(sdk)
    assert len([e for e in events if e.kind == FLOWER_MESSAGE]) == 3
    (said,) = [e for e in events if e.kind == DEVICE_FIGURES]
    assert said.severity == 1 and said.detail["collector"] == f"127.0.0.1:{port}"
    reason = "connection refused" if collector == "none" else "did not complete the handshake"
    assert reason in said.message, said.message
