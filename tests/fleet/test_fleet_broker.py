"""The fleet for real: collectors publishing to a real Mosquitto, the archiver, ``ls --mqtt``.

Each test starts its own broker (``broker.Broker``: its config, a free loopback port, a temp
data dir) and real ``edgescope collector --mqtt`` / ``edgescope archive`` processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from broker import Broker, available, free_port
from edgescope_tracing import (
    Event,
    Keyframe,
    Metrics,
    Record,
    RunEnd,
    RunStart,
    StreamEncoder,
    TraceReader,
)

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.slow,
]
pytest.importorskip("aiomqtt", reason="aiomqtt is not installed (pip install '.[mqtt]')")

from edgescope_tui.fleet import FleetDevice  # noqa: E402
from edgescope_tui.sources.mqtt import MqttSettings, snapshot  # noqa: E402

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def edgescope(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgescope", *args]


class Proc:
    """A command with its stderr in a file."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.log = tmp / f"{name}-{time.monotonic_ns()}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None) -> Proc:
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(self.args, stderr=err, stdout=err, env=ENV)
        if ready is not None:
            wait_for(lambda: ready in self.text(), f"{ready!r} in {self.log}", self.text)
        return self

    def text(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(20)


def wait_for(
    cond: Callable[[], object], what: str, info: Callable[[], str] = str, t: float = 20
) -> None:
    deadline = time.monotonic() + t
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {info()}")
        time.sleep(0.05)


def collector(tmp: Path, url: str, device: str, *extra: str) -> Proc:
    data = tmp / f"data-{device}"
    return Proc(
        tmp,
        f"collector-{device}",
        edgescope(
            "collector",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(data),
            "--ingest",
            str(tmp / f"{device}.sock"),
            "--interval",
            "0.2",
            "--no-mdns",
            "--mqtt",
            url,
            "--device",
            device,
            *extra,
        ),
    )


def produce(sock: Path, batches: int, run_id: str, values: int = 50) -> None:
    """An SDK-like producer on the ingest socket: one run, ``batches`` metric batches, its end."""
    enc = StreamEncoder()
    now = time.time_ns() // 1000
    enc.add(RunStart(0, run_id, "mlp", "testhost", os.getpid(), t_us=now))
    for b in range(batches):
        steps = tuple(range(b * values, (b + 1) * values))
        enc.add(Metrics(0, "loss", steps, tuple(now + s for s in steps),
                        tuple(1.0 / (1 + s) for s in steps)))  # fmt: skip
    enc.add(RunEnd(0, exit_code=0, t_us=now + batches))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(enc.take())


def same(rec: Record) -> Record:
    return dataclasses.replace(rec, seq=0)


def store_records(data: Path) -> list[Record]:
    out: list[Record] = []
    for seg in sorted(data.glob("seg-*.est")):
        out += [r for r in TraceReader(seg) if not isinstance(r, Keyframe)]
    return out


def cursor(root: Path, device: str) -> dict[str, object] | None:
    p = root / device / f".{device}.cursor"
    try:
        obj: dict[str, object] = msgpack.unpackb(p.read_bytes(), raw=False)
        return obj
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path).start()
    yield b
    b.stop()


def test_nothing_lost_across_a_broker_restart_and_an_archiver_kill(
    tmp_path: Path, broker: Broker
) -> None:
    out = tmp_path / "archive"
    archive = Proc(tmp_path, "archive", edgescope("archive", "--mqtt", broker.url, "-o", str(out)))
    archive.start("subscribed")
    dev = collector(tmp_path, broker.url, "dev1").start("mqtt: publishing")
    sock = tmp_path / "dev1.sock"
    produce(sock, 20, "aa01")
    wait_for(
        lambda: ((cursor(out, "dev1") or {}).get("next") or 0) > 20, "the first records archived"
    )
    broker.restart()  # the broker goes away and comes back (its persistent sessions kept)
    produce(sock, 20, "aa02")
    wait_for(lambda: "connected to" in dev.text(), "the collector back on the broker", dev.text)
    assert archive.signal(signal.SIGKILL) == -signal.SIGKILL  # the archiver dies mid-stream
    produce(sock, 20, "aa03")  # ... while records go on coming: the broker keeps them for it
    time.sleep(0.5)
    archive = Proc(tmp_path, "archive2", archive.args).start("subscribed")
    assert dev.signal(signal.SIGTERM) == 0
    state = json.loads((tmp_path / "data-dev1" / "mqtt.state").read_text())
    wait_for(lambda: (cursor(out, "dev1") or {}).get("next") == state["acked"],
             "the archive to hold all the collector published", archive.text)  # fmt: skip
    assert archive.signal(signal.SIGTERM) == 0

    stored = store_records(tmp_path / "data-dev1")
    assert [r.seq for r in stored][-1] == state["acked"] - 1
    files = sorted((out / "dev1").glob("*.est"))
    assert [f.name for f in files] == [f"dev1-{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.est"]
    archived = [r for r in TraceReader(files[0]) if not isinstance(r, Keyframe)]
    gaps = [r for r in archived if isinstance(r, Event) and r.kind == "gap"]
    assert gaps == []
    # The same records as the store, in the same order: none lost, none twice.
    assert [same(r) for r in archived] == [same(r) for r in stored]
    assert sum(isinstance(r, RunStart) for r in archived) == 3
    inspect = subprocess.run(edgescope("inspect", str(files[0])), capture_output=True, text=True)
    assert inspect.returncode == 0 and "damage  none" in inspect.stdout, inspect.stdout


def ls_json(url: str, *extra: str) -> list[dict[str, object]]:
    r = subprocess.run(edgescope("ls", "--mqtt", url, "--json", *extra), capture_output=True,
                       text=True, timeout=30, env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out: list[dict[str, object]] = json.loads(r.stdout)
    return out


def fleet(url: str) -> dict[str, FleetDevice]:
    """The fleet as ``ls --mqtt`` reads it, in this process (quicker to poll)."""
    model = asyncio.run(snapshot(MqttSettings(url), timeout=3, settle=0.2))
    return model.devices


def test_presence_offline_within_keepalive_when_a_device_hangs_or_dies(
    tmp_path: Path, broker: Broker
) -> None:
    a = collector(tmp_path, broker.url, "pi-a", "--mqtt-keepalive", "2").start("mqtt: publishing")
    b = collector(tmp_path, broker.url, "pi-b", "--mqtt-keepalive", "2").start("mqtt: publishing")
    wait_for(lambda: [d.online for d in fleet(broker.url).values()] == [True, True], "both on")
    first = {d["device"]: d for d in ls_json(broker.url)}
    assert first["pi-a"]["facts"]["collector"]  # type: ignore[index]
    assert first["pi-a"]["summary"]["seq"] is not None  # type: ignore[index]
    # A device that hangs without closing its connection (power gone, cable out): the broker
    # says its Last Will after 1.5 keep-alives.
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    t = time.monotonic()
    wait_for(lambda: not fleet(broker.url)["pi-a"].online, "pi-a offline", t=15)
    # Mosquitto 2.0 checks keep-alives on its own timer: 3 to 9 s here for 1.5 x 2 s.
    assert time.monotonic() - t < 15
    a.proc.send_signal(signal.SIGCONT)  # it comes back: a new session, a higher bd_seq
    wait_for(lambda: fleet(broker.url)["pi-a"].online, "pi-a back")
    again = {d["device"]: d for d in ls_json(broker.url)}
    assert again["pi-a"]["bd_seq"] > first["pi-a"]["bd_seq"]  # type: ignore[operator]
    assert b.signal(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: not fleet(broker.url)["pi-b"].online, "pi-b offline")
    assert a.signal(signal.SIGTERM) == 0  # a clean stop says its death itself
    assert not fleet(broker.url)["pi-a"].online
    table = subprocess.run(edgescope("ls", "--mqtt", broker.url, "--filter", "pi-b"),
                           capture_output=True, text=True, env=ENV)  # fmt: skip
    assert "pi-b" in table.stdout and "pi-a" not in table.stdout and "offline" in table.stdout
