"""The collector's samplers: what the device and the runs' processes are doing, read from
/proc and /sys (and NVML where an NVIDIA driver is present).

Every sampler is a small stateful object with ``name`` and ``sample(t_us) -> list[Record]``.
``sample`` blocks (file reads, NVML calls) and is called off the event loop, one sampler at a
time; rates (CPU %, bytes per second, transitions) are deltas against the sampler's previous
call, so the first call of a rate source gives ``None`` for the rate. ``t_us`` is the sample's
wall time in integer microseconds since the epoch; rates are computed against it, which keeps
samplers deterministic under test.

All readers take their roots from :class:`Roots` (``--procfs``/``--sysfs``, as node_exporter's
path flags), so tests and containers point them at recorded trees. psutil is not used, nor a
dependency: it cannot be pointed at another root per sampler (``PROCFS_PATH`` is one global),
it lacks VmHWM, cgroup limits, PSI and the throttle files, and for what it has it reads the same
files at a higher cost (measured 2026-12-03: this module's process sample of a training process
and 3 children, with VmHWM and cgroup memory, 570 µs; psutil's memory, CPU times and threads
of the same tree, 1,944 µs; importing psutil adds 0.8 MiB RSS). The whole collector measured
the same way (``benchmarks/bench_collector_footprint.py`` with and without ``--psutil``, which
puts this sampler's tree, CPU times, state and threads on psutil; 1 Hz, a run logging 1,000
values/s, beside Glances, 2026-12-03 on a loaded 2-core VM): 0.82 and 0.98 % of a core, 29.9 MiB
by hand; 0.92 and 0.97 %, 30.8-30.9 MiB on psutil. No saving to pay for the dependency.

Sources (module, sampler name, what it reads):

- :mod:`.system` ``system``: CPU total and per core, memory and swap, load, PSI, disk and
  network rates (``/proc/stat``, ``meminfo``, ``loadavg``, ``pressure/*``, ``diskstats``,
  ``net/dev``).
- :mod:`.process` ``process``: each registered run process and its descendants (CPU, RSS,
  VmHWM peak, threads) and the run's cgroup memory (current, peak, limit, OOM kills).
- :mod:`.thermal` ``thermal``: thermal zones with trip points, cooling devices, cpufreq, x86
  thermal_throttle counters, Raspberry Pi throttled flags, hwmon inputs.
- :mod:`.power` ``power``: energy counters and power readings: RAPL (powercap), hwmon
  ``energyN``/``powerN`` inputs, the Jetson INA3221 rails (hwmon or iio).
- :mod:`.jetson` ``jetson_gpu``: the Jetson integrated GPU's load and clock from sysfs.
- :mod:`.nvml` ``nvml``: NVIDIA GPUs through NVML (``nvidia-ml-py``).

:func:`default_samplers` returns those that work on this machine and, for every source that
does not, one sentence saying why.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgescope_tracing.records import Record

__all__ = ["Roots", "ProcessWatch", "Sampler", "default_samplers"]


@dataclass(frozen=True)
class Roots:
    """Where procfs and sysfs are mounted (``--procfs``, ``--sysfs``)."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")

    @property
    def is_live(self) -> bool:
        """True when both roots are this machine's own /proc and /sys (not a recorded tree).

        ``vcgencmd``, the fallback for a sysfs file, only runs on a live root.
        """
        return self.procfs == Path("/proc") and self.sysfs == Path("/sys")


class ProcessWatch:
    """A thread-safe registry of the processes of each run.

    The collector adds a run's process when the SDK registers it; the process sampler reads
    them and their descendants. A pid that exited is simply not sampled any more.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: dict[int, set[int]] = {}

    def add(self, run: int, pid: int) -> None:
        with self._lock:
            self._pids.setdefault(run, set()).add(pid)

    def remove(self, run: int, pid: int) -> None:
        with self._lock:
            pids = self._pids.get(run)
            if pids is not None:
                pids.discard(pid)
                if not pids:
                    del self._pids[run]

    def remove_run(self, run: int) -> None:
        with self._lock:
            self._pids.pop(run, None)

    def items(self) -> list[tuple[int, int]]:
        """``(run, pid)`` pairs, sorted."""
        with self._lock:
            return sorted((run, pid) for run, pids in self._pids.items() for pid in pids)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._pids.values())


class Sampler(Protocol):
    """One source of records. ``sample`` blocks; the collector calls it off the event loop."""

    name: str

    def sample(self, t_us: int) -> list[Record]: ...

    def close(self) -> None:
        """Release what the sampler holds (NVML handles); it is not called again after."""
        ...


def default_samplers(roots: Roots, watch: ProcessWatch) -> tuple[list[Sampler], dict[str, str]]:
    """The samplers that work on this machine, and ``{source: why skipped}`` for the others.

    Source names are finer than sampler names: the thermal sampler is one sampler over several
    sources (``thermal_zones``, ``cpufreq``, ``pi_throttled``, ...), and each absent one is
    named with its reason.
    """
    from .jetson import JetsonGpuSampler
    from .nvml import NvmlSampler
    from .power import PowerSampler
    from .process import ProcessSampler
    from .system import SystemSampler
    from .thermal import ThermalSampler

    samplers: list[Sampler] = []
    skipped: dict[str, str] = {}

    system = SystemSampler(roots)
    skipped.update(system.skipped)
    samplers.append(system)
    samplers.append(ProcessSampler(roots, watch))

    thermal = ThermalSampler(roots)
    skipped.update(thermal.skipped)
    if thermal.sources:
        samplers.append(thermal)

    power = PowerSampler(roots)
    skipped.update(power.skipped)
    if power.sources:
        samplers.append(power)

    jetson = JetsonGpuSampler.open(roots)
    if isinstance(jetson, str):
        skipped["jetson_gpu"] = jetson
    else:
        samplers.append(jetson)

    nvml = NvmlSampler.open()
    if isinstance(nvml, str):
        skipped["nvml"] = nvml
    else:
        samplers.append(nvml)
    return samplers, skipped
