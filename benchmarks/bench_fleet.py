"""The fleet on one loopback Mosquitto: 200 simulated devices, the archiver, the fleet view.

Each simulated device is the collector's real publishing code (``MqttPublisher`` reading a
real ``SegmentStore``), many to a process: a system sample a second and 100 logged values a
second (a metric batch every 0.25 s, the store's flush interval), from one run. ``edgescope
archive`` (a process of its own) stores them all; a fleet watcher (the TUI's ``watch_fleet``
and ``FleetModel``, what the fleet screen draws) measures the view's staleness: the age of the
newest summary shown, and of the oldest. Midway the broker is stopped and started again (with
``--kill``: SIGKILL instead of SIGTERM). At the end each device's store is compared with its
archive: records lost, gaps.

Reports, beside each other in one run: records stored by the devices and by the archiver, gaps,
the archiver's CPU (% of one core, and per device), the fleet view's staleness.

Rerun::

    .venv/bin/python benchmarks/bench_fleet.py                      # 200 devices, 60 s
    .venv/bin/python benchmarks/bench_fleet.py --devices 50 --duration 20 --procs 2
    .venv/bin/python benchmarks/bench_fleet.py --kill               # the broker SIGKILLed

Needs Mosquitto (``apt-get install mosquitto``) and aiomqtt (``pip install '.[mqtt]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fleet"))
TICK = os.sysconf("SC_CLK_TCK")


# --- the simulated devices (a process runs --sim) ----------------------------------------------


async def simulate(url: str, names: list[str], base: Path, stop_file: Path) -> None:
    from edgescope_collector.mqtt import MqttPublisher, MqttSettings
    from edgescope_collector.store import SegmentStore
    from edgescope_tracing import Metrics, RunStart, SystemSample
    from edgescope_tracing.fleet import parse_broker_url

    broker = parse_broker_url(url)
    stores, pubs, tasks = [], [], []
    stop = asyncio.Event()
    now = time.time_ns() // 1000
    for name in names:
        store = SegmentStore(base / name, max_disk=64 << 20)
        store.open()
        store.append(RunStart(0, f"run-{name}", "bench", name, os.getpid(), t_us=now))
        pub = MqttPublisher(MqttSettings(broker, name, keepalive=10), store, base / name,
                            first_seq=0)  # fmt: skip
        stores.append(store)
        pubs.append(pub)
        tasks.append(asyncio.ensure_future(pub.run(stop)))
    step = 0
    tick = 0
    t0 = time.monotonic()
    while not stop_file.exists():
        tick += 1
        await asyncio.sleep(max(0.0, t0 + tick * 0.25 - time.monotonic()))
        t = time.time_ns() // 1000
        steps = tuple(range(step, step + 25))
        step += 25
        for store in stores:
            store.append(Metrics(0, "loss", steps, tuple(t + i for i in range(25)),
                                 tuple(1.0 / (1 + s) for s in steps)))  # fmt: skip
            if tick % 4 == 0:
                store.append(SystemSample(cpu_percent=12.5, mem_used=1 << 30, t_us=t))
            store.poll()
    for store in stores:
        store.flush()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for store, pub, name in zip(stores, pubs, names, strict=True):
        (base / name / "final.json").write_text(json.dumps({"acked": pub.acked,
                                                            "next": store.next_seq}))  # fmt: skip
        store.close()


# --- the measurement ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


class Watcher(threading.Thread):
    """The fleet view in a thread of its own: what the fleet screen would show, each second."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.newest: list[float] = []
        self.oldest: list[float] = []
        self.online: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from edgescope_tui.fleet import FleetModel
        from edgescope_tui.sources.mqtt import MqttSettings, watch_fleet

        model = FleetModel()
        stop = asyncio.Event()
        task = asyncio.ensure_future(watch_fleet(MqttSettings(self.url), model, stop))
        while not self.done.is_set():
            await asyncio.sleep(1.0)
            now = time.time_ns() // 1000
            ages = [a for d in model.devices.values() if d.online and (a := d.age(now)) is not None]
            if ages:
                self.newest.append(min(ages))
                self.oldest.append(max(ages))
                self.online.append(len(ages))
        stop.set()
        await asyncio.wait_for(task, 10)


def count(path: Path) -> tuple[int, int]:
    """(records that are not keyframes, gap events) in the trace files under ``path``."""
    from edgescope_tracing import Event, Keyframe, TraceReader

    n = gaps = 0
    for f in sorted(path.glob("*.est")):
        with TraceReader(f) as r:
            for rec in r:
                if isinstance(rec, Event) and rec.kind == "gap":
                    gaps += 1
                elif not isinstance(rec, Keyframe):
                    n += 1
    return n, gaps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--procs", type=int, default=4, help="processes the devices run in (4)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    ap.add_argument("--kill", action="store_true", help="SIGKILL the broker instead of SIGTERM")
    ap.add_argument("--sim", nargs=4, metavar=("URL", "FIRST", "N", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sim:
        url, first, n, base = args.sim
        names = [f"dev{i:03d}" for i in range(int(first), int(first) + int(n))]
        asyncio.run(simulate(url, names, Path(base), Path(base) / "stop"))
        return 0

    from broker import Broker, available

    if available() is not None:
        raise SystemExit(f"bench: {available()}")
    tmp = Path(tempfile.mkdtemp(prefix="edgescope-fleet-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    broker = Broker(tmp, max_queued=1_000_000).start()
    try:
        out = tmp / "archive"
        alog = open(tmp / "archive.log", "wb")  # noqa: SIM115
        archiver = subprocess.Popen(
            [sys.executable, "-m", "edgescope", "archive", "--mqtt", broker.url, "-o", str(out)],
            stderr=alog, env=env,
        )  # fmt: skip
        time.sleep(2)
        watcher = Watcher(broker.url)
        watcher.start()
        per = -(-args.devices // args.procs)
        base = tmp / "devices"
        base.mkdir()
        for k in range(args.procs):
            first, n = k * per, min(per, args.devices - k * per)
            if n <= 0:
                break
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--sim", broker.url, str(first), str(n), str(base)],
                env=env, stderr=open(tmp / f"sim{k}.log", "wb"),  # noqa: SIM115
            ))  # fmt: skip
        time.sleep(3)  # connected, publishing
        a0, t0 = cpu_seconds(archiver.pid), time.monotonic()
        time.sleep(args.duration / 2)
        how = "SIGKILLed" if args.kill else "stopped (SIGTERM)"
        broker.stop(signal.SIGKILL if args.kill else signal.SIGTERM)
        time.sleep(3)  # the broker is away: the devices keep storing
        broker.start()
        time.sleep(args.duration / 2)
        a1, wall = cpu_seconds(archiver.pid), time.monotonic() - t0
        (base / "stop").write_text("")
        for p in procs:
            p.wait(120)
        finals = {d.name: json.loads((d / "final.json").read_text())
                  for d in base.iterdir() if d.is_dir()}  # fmt: skip
        deadline = time.monotonic() + 120
        import msgpack

        while time.monotonic() < deadline:
            behind = 0
            for name, f in finals.items():
                c = out / name / f".{name}.cursor"
                got = msgpack.unpackb(c.read_bytes())["next"] if c.exists() else 0
                behind += got != f["acked"]
            if not behind:
                break
            time.sleep(0.5)
        watcher.done.set()
        watcher.join(15)
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(60)
        stored = archived = gaps = lost = 0
        for name in finals:
            from edgescope_tracing import Keyframe, TraceReader

            s = 0
            for seg in sorted((base / name).glob("seg-*.est")):
                with TraceReader(seg) as r:
                    s += sum(not isinstance(x, Keyframe) for x in r)
            a, g = count(out / name)
            stored, archived, gaps, lost = stored + s, archived + a, gaps + g, lost + max(0, s - a)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()
    cpu = 100.0 * (a1 - a0) / wall
    print()
    print(f"Fleet over {wall:.0f} s: {len(finals)} simulated devices in {len(procs)} processes, "
          f"each 1 system sample/s + 100 logged values/s; broker {how} midway for 3 s; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")  # fmt: skip
    print()
    print(f"| {'figure':<44} | {'value':>14} |")
    print(f"|{'-' * 46}|{'-' * 16}|")
    for label, value in (
        ("records stored by the devices", f"{stored}"),
        ("records in the archive", f"{archived}"),
        ("records lost", f"{lost}"),
        ("gaps in the archive", f"{gaps}"),
        ("archiver CPU, % of one core", f"{cpu:.1f}"),
        ("archiver CPU per device, % of one core", f"{cpu / max(1, len(finals)):.3f}"),
        ("fleet view: newest summary age, median s", f"{statistics.median(watcher.newest):.2f}"
         if watcher.newest else "-"),
        ("fleet view: oldest summary age, median s", f"{statistics.median(watcher.oldest):.2f}"
         if watcher.oldest else "-"),
        ("fleet view: oldest summary age, max s", f"{max(watcher.oldest):.2f}"
         if watcher.oldest else "-"),
    ):  # fmt: skip
        print(f"| {label:<44} | {value:>14} |")
    print()
    print("0 records lost, 0 gaps." if lost == 0 and gaps == 0 else "RECORDS LOST or GAPS.")
    rerun = f"--devices {args.devices} --procs {args.procs} --duration {args.duration:g}"
    print(
        f"Rerun: .venv/bin/python benchmarks/bench_fleet.py {rerun}{' --kill' if args.kill else ''}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
