"""The collector's footprint beside Glances, in the same run on the same machine.

The edgescope collector samples at 1 Hz while one training run (the real SDK, in its own
process) logs 1,000 metric values a second (10 keys at 100 steps/s) to its ingest socket.
Glances runs headless at 1 Hz (``glances --stdout cpu.total,mem.used,load -t 1``) at the same
time. After a warm-up, both are measured over the same window from /proc: CPU time (user +
system, children included) as a percentage of one core, and RSS (mean, and the peak VmHWM).

Target: the collector at most 1 % of one core and 40 MiB RSS, and below Glances on both.

Rerun::

    .venv/bin/python benchmarks/bench_collector_footprint.py            # 60 s window
    .venv/bin/python benchmarks/bench_collector_footprint.py --duration 10 -o footprint.json
    .venv/bin/python benchmarks/bench_collector_footprint.py \
        --sysfs tests/collector/trees/x86-laptop/sys

``--sysfs`` points the collector's sysfs at a recorded tree (the laptop's: RAPL zones for the
power sampler, thermal zones, cpufreq, hwmon), so that the power and thermal samplers run even
on a machine without them; procfs stays this machine's (the run's process is real).

``-o`` also writes the figures as a pyperf suite (``python -m pyperf show footprint.json``).
``--mqtt`` also publishes everything to a loopback Mosquitto that the benchmark starts (the
fleet, ``docs/fleet.md``), and measures the collector with its publisher on.
Glances comes from ``pip install glances``; without it the collector is measured alone.

``--psutil`` measures the collector with its process sampler on psutil where psutil has the API
(issue 12's question: should the samplers use it?): the process tree
(``Process.children(recursive=True)``), CPU times, parent, state, threads and name
(``Process.oneshot()``), one ``psutil.Process`` kept per pid as a psutil sampler would;
``/proc/PID/status`` is still read for VmRSS and VmHWM (psutil has no peak RSS) and the cgroup
files by hand (psutil has no API for them). The patch lives here, not in the collector: the
collector does not use psutil, and this is the figure that says why. Run it once without and
once with, beside Glances both times (the anchor that shows how loaded the machine was).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PRODUCER = r"""
import sys, time, math, edgescope
rate, keys = int(sys.argv[1]), int(sys.argv[2])
edgescope.init(name="footprint-bench", config={"rate": rate, "keys": keys})
names = [f"metric{k}" for k in range(keys)]
steps_per_s = rate // keys
t0 = time.monotonic()
step = 0
try:
    while True:
        for k in names:
            edgescope.log({k: math.sin(step * 0.01) + 1.5}, step=step)
        step += 1
        delay = t0 + step / steps_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
except KeyboardInterrupt:
    pass
finally:
    edgescope.finish()
"""


PSUTIL_COLLECTOR = r"""
import sys
from pathlib import Path

import psutil
from edgescope_collector.samplers import process as P

STATES = {
    psutil.STATUS_RUNNING: "R", psutil.STATUS_SLEEPING: "S", psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_STOPPED: "T", psutil.STATUS_TRACING_STOP: "t", psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_DEAD: "X", psutil.STATUS_IDLE: "I",
}
BOOT = psutil.boot_time()
known = {}

def handle(pid):
    p = known.get(pid)
    if p is None:
        p = known[pid] = psutil.Process(pid)
    return p

def read_proc_stat(path):
    pid = int(Path(path).parent.name)
    try:
        p = handle(pid)
        with p.oneshot():
            t = p.cpu_times()
            return P.ProcStat(
                p.ppid(), round((t.user + t.system) * P._CLK_TCK), p.num_threads(),
                round((p.create_time() - BOOT) * P._CLK_TCK), STATES.get(p.status(), "S"),
                p.name(),
            )
    except (psutil.Error, ValueError):
        known.pop(pid, None)
        return None

def descendants(self, pid):
    try:
        return [c.pid for c in handle(pid).children(recursive=True)]
    except psutil.Error:
        known.pop(pid, None)
        return []

P.read_proc_stat = read_proc_stat
P.ProcessSampler.descendants = descendants
from edgescope_collector.__main__ import main
sys.exit(main())
"""
"""``python -m edgescope_collector`` with the process sampler on psutil (``--psutil``)."""


@dataclass
class Watched:
    """A process measured from /proc over the window."""

    label: str
    proc: subprocess.Popen[bytes]
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss: list[int] = field(default_factory=list)
    hwm: int = 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of stat.
        return sum(int(x) for x in fields[11:15]) / TICK

    def status(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def tree_rss(self) -> int:
        """RSS of the process and its children (Glances has none; the collector's perf none)."""
        total = self.status("VmRSS")
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            children = ""
        for pid in children.split():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise SystemExit(f"bench: {path.name} process exited: {path.read_text()[-500:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no {text!r} from {path.name} in {timeout:g} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="measured window, s (60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (5)")
    ap.add_argument("--rate", type=int, default=1000, help="metric values per second (1000)")
    ap.add_argument("--keys", type=int, default=10, help="distinct metric keys (10)")
    ap.add_argument("-o", "--output", help="also write a pyperf suite (JSON) here")
    ap.add_argument("--no-glances", action="store_true", help="measure the collector alone")
    ap.add_argument("--sysfs", metavar="PATH", help="the collector's sysfs root (default /sys)")
    ap.add_argument("--mqtt", action="store_true", help="the collector publishes to a broker")
    ap.add_argument(
        "--psutil", action="store_true", help="the process sampler on psutil (see above)"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgescope-footprint-"))
    env = {**os.environ, "EDGESCOPE_SOCKET": str(tmp / "ingest.sock"), "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    watched: list[Watched] = []
    broker = None
    mqtt: list[str] = []
    if args.mqtt:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fleet"))
        from broker import Broker

        broker = Broker(tmp).start()
        mqtt = ["--mqtt", broker.url, "--device", "bench"]
    try:
        log = tmp / "collector.log"
        with open(log, "wb") as err:
            collector = subprocess.Popen(
                [
                    sys.executable,
                    *(("-c", PSUTIL_COLLECTOR) if args.psutil else ("-m", "edgescope_collector")),
                    "--listen",
                    f"127.0.0.1:{free_port()}",
                    "--data-dir",
                    str(tmp / "data"),
                    "--ingest",
                    str(tmp / "ingest.sock"),
                    "--interval",
                    "1",
                    "--no-mdns",
                    *(("--sysfs", str(Path(args.sysfs).resolve())) if args.sysfs else ()),
                    *mqtt,
                ],
                stderr=err,
                env=env,
            )
        procs.append(collector)
        wait_for(log, "listening on", collector, 30)
        label = "edgescope collector" + (" --mqtt" if mqtt else "")
        label += " on psutil" if args.psutil else ""
        watched.append(Watched(label, collector))

        glances_bin = shutil.which("glances") or str(Path(sys.executable).parent / "glances")
        glances_version = ""
        if not args.no_glances and Path(glances_bin).exists():
            glances_version = (
                subprocess.run([glances_bin, "--version"], capture_output=True, text=True)
                .stdout.split("\n")[0]
                .split()[-1]
            )
            glances = subprocess.Popen(
                [glances_bin, "--stdout", "cpu.total,mem.used,load", "-t", "1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(glances)
            watched.append(Watched(f"Glances {glances_version} (--stdout, 1 Hz)", glances))
        elif not args.no_glances:
            print("bench: glances is not installed (pip install glances): collector alone")

        producer = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(args.rate), str(args.keys)],
            env=env,
        )
        procs.append(producer)
        time.sleep(args.warmup)
        for w in watched:
            w.cpu_start = w.cpu_seconds()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            for w in watched:
                w.rss.append(w.tree_rss())
            if any(p.poll() is not None for p in procs):
                raise SystemExit("bench: a process died during the measurement")
        wall = time.monotonic() - t0
        for w in watched:
            w.cpu_end = w.cpu_seconds()
            w.hwm = w.status("VmHWM")
        stop(producer, signal.SIGINT)
        records, power, processes = _count_records(tmp / "data")
    finally:
        for p in reversed(procs):
            stop(p)
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    mib = 1024 * 1024
    rows = []
    for w in watched:
        cpu = 100.0 * (w.cpu_end - w.cpu_start) / wall
        rows.append((w.label, cpu, sum(w.rss) / len(w.rss) / mib, w.hwm / mib))
    print()
    print(
        f"Footprint over {wall:.0f} s (after {args.warmup:g} s warm-up): sampling at 1 Hz, one "
        f"run logging {args.rate} metric values/s ({args.keys} keys); {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print()
    print(
        f"| {'process':<36} | {'CPU % of one core':>17} | {'RSS mean MiB':>12} | {'peak MiB':>8} |"
    )
    print(f"|{'-' * 38}|{'-' * 19}|{'-' * 14}|{'-' * 10}|")
    for label, cpu, rss, hwm in rows:
        print(f"| {label:<36} | {cpu:>17.2f} | {rss:>12.1f} | {hwm:>8.1f} |")
    print(f"| {'target for the collector':<36} | {'<= 1.00':>17} | {'<= 40.0':>12} | {'':>8} |")
    print()
    print(
        f"The collector stored {records} metric values of the run and {power} power records "
        f"(0: no energy source under its sysfs) and {processes} process samples of the run in "
        "that time."
    )
    ok = rows[0][1] <= 1.0 and rows[0][2] <= 40.0
    if len(rows) > 1:
        ok = ok and rows[0][1] < rows[1][1] and rows[0][2] < rows[1][2]
    print("Target met." if ok else "Target NOT met.")
    flags = f"--duration {wall:.0f}" + (f" --sysfs {args.sysfs}" if args.sysfs else "")
    flags += " --mqtt" if mqtt else ""
    flags += " --psutil" if args.psutil else ""
    print(f"Rerun: .venv/bin/python benchmarks/bench_collector_footprint.py {flags}")
    if args.output:
        _write_pyperf(args.output, rows)
        print(f"pyperf suite: {args.output} (python -m pyperf show {args.output})")
    return 0


def _count_records(data: Path) -> tuple[int, int, int]:
    """Metric values of the run, power records, and process samples of the run in the
    collector's store."""
    from edgescope_tracing import Metrics, PowerSample, ProcessSample, TraceReader

    total = power = processes = 0
    for p in sorted(data.glob("seg-*.est")):
        with TraceReader(p) as r:
            for x in r:
                if isinstance(x, Metrics) and x.run >= 0:
                    total += len(x.values)
                power += isinstance(x, PowerSample)
                processes += isinstance(x, ProcessSample) and x.run >= 0 and x.rss is not None
    return total, power, processes


def _write_pyperf(path: str, rows: list[tuple[str, float, float, float]]) -> None:
    import pyperf  # type: ignore[import-untyped]

    benches = []
    for label, cpu, rss, _ in rows:
        slug = label.split(" (")[0].lower().replace(" ", "-")
        benches.append(
            pyperf.Benchmark(
                [pyperf.Run([cpu / 100.0], metadata={"name": f"{slug} cpu-seconds-per-second"})]
            )
        )
        benches.append(
            pyperf.Benchmark(
                [
                    pyperf.Run(
                        [int(rss * 1024 * 1024)],
                        metadata={"name": f"{slug} rss", "unit": "byte"},
                    )
                ]
            )
        )
    pyperf.BenchmarkSuite(benches).dump(path, replace=True)


if __name__ == "__main__":
    sys.exit(main())
