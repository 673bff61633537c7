"""A minute of a training run on the recorded Raspberry Pi 4 (``tests/collector/trees/rpi4``),
sampled by the collector's own samplers and written as a trace.

The tree is copied and rewritten once a second as the run goes: the training process (pid
1234, ``python3 train.py --epochs 003``) and its data-loader child (1240) burn CPU, the run's
cgroup memory climbs towards its 3 GiB ``memory.max`` (to 94 % of it), the CPU zone warms
towards its trip point (given a 5 °C hysteresis here), and the child exits after 45 s. The run
logs a loss every step (10 steps a second), a validation accuracy four times (sparse), and the
device marks three events: info, warning, error. Everything is deterministic: the samplers
read only the tree and the times passed in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgescope_collector.samplers import ProcessWatch, Roots
from edgescope_collector.samplers.process import ProcessSampler
from edgescope_collector.samplers.system import SystemSampler
from edgescope_collector.samplers.thermal import ThermalSampler
from edgescope_tracing import Event, Metrics, Record, RunEnd, RunStart, TraceWriter

from edgescope.sdk._device import device_facts

TREE = Path(__file__).parents[1] / "collector" / "trees" / "rpi4"
T0 = 1_795_800_000_000_000
S = 1_000_000
SECONDS = 60
GiB = 1 << 30


def _stat(root: Path, pid: int, utime: int) -> None:
    p = root / "proc" / str(pid) / "stat"
    head, _, rest = p.read_text().rpartition(")")
    f = rest.split()
    f[11] = str(utime)
    p.write_text(head + ") " + " ".join(f) + "\n")


def device_records(work: Path) -> list[Record]:
    root = work / "rpi4"
    shutil.copytree(TREE, root, symlinks=True)
    roots = Roots(procfs=root / "proc", sysfs=root / "sys")
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    (zone / "trip_point_0_hyst").write_text("5000\n")
    (zone / "trip_point_0_temp").write_text("85000\n")
    cgroup = root / "sys" / "fs" / "cgroup" / "system.slice" / "train.service"
    watch = ProcessWatch()
    watch.add(0, 1234)
    samplers = [
        ProcessSampler(roots, watch, clk_tck=100, rescan_every=1),
        ThermalSampler(roots),
        SystemSampler(roots),
    ]
    config = {"model": "resnet18", "batch_size": 64, "optim": {"name": "sgd", "lr": 0.1}}
    # board, CPU and memory from the tree; what the SDK reads of the machine it runs on (the
    # kernel, Python, the CPU count) as the Pi's, so that every machine writes the same trace
    facts = device_facts(procfs=root / "proc", sysfs=root / "sys")
    facts.update(os="Linux", kernel="6.6.31+rpt-rpi-v8", machine="aarch64", python="3.11.2")
    facts["cpus"] = 4
    out: list[Record] = [
        RunStart(0, "9e0000000001", "pi-train", "rpi4", 1234, config, (), facts, t_us=T0)
    ]
    for sec in range(SECONDS + 1):
        t = T0 + sec * S
        _stat(root, 1234, 5000 + 95 * sec)  # 95 % of a core
        if sec < 45:
            _stat(root, 1240, 300 + 30 * sec)
        elif sec == 45:
            shutil.rmtree(root / "proc" / "1240")
            (root / "proc" / "1234" / "task" / "1234" / "children").write_text("\n")
        (cgroup / "memory.current").write_text(f"{int((1.6 + 1.22 * sec / SECONDS) * GiB)}\n")
        (zone / "temp").write_text(f"{50_000 + 550 * sec}\n")  # 50 °C to 83 °C
        for sampler in samplers:
            out += sampler.sample(t)
        steps = range(sec * 10, sec * 10 + 10) if sec < SECONDS else range(0)
        if steps:
            times = tuple(t + (i % 10) * 100_000 for i in steps)
            values = tuple(2.5 / (1 + 0.05 * i) for i in steps)
            out.append(Metrics(0, "loss", tuple(steps), times, values))
        if sec in (0, 20, 40, 59):
            step = min(sec * 10, 599)
            out.append(Metrics(0, "val_acc", (step,), (t,), (0.2 + sec / 100,)))
    out.append(Event("mark", "epoch 1 done", run=0, severity=0, t_us=T0 + 10 * S))
    out.append(
        Event(
            "anomaly",
            "step time up 40% while the cpu zone nears its trip",
            run=0,
            severity=1,
            t_us=T0 + 30 * S,
        )
    )
    out.append(Event("anomaly", "loss spike", run=0, severity=2, t_us=T0 + 50 * S))
    out.append(RunEnd(0, 0, t_us=T0 + SECONDS * S))
    return sorted(out, key=lambda r: r.t_us)


def write_device_trace(path: Path, work: Path) -> Path:
    with TraceWriter(path) as w:
        for rec in device_records(work):
            w.append(rec)
    return path
