"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

One :class:`GpuSample` per GPU per call: temperature, power draw and the enforced limit, SM
and memory clocks and their maxima, the clock-event (throttle) reasons bitmask, GPU and memory
utilisation, memory used and total, and the GPU memory each process uses (``processes``: NVML's
compute and graphics processes, by pid, as NVML gives pids: on most drivers the host's, even
to a collector in a container). A figure the GPU does not support is ``None``; a process whose
memory figure the driver does not give (``NVML_VALUE_NOT_AVAILABLE``, as under Windows WDDM) is
left out.

Beside the GPU samples, one :class:`PowerSample` per call gives each GPU's energy (source
``nvml``, reading ``gpu<index>``): ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver
loaded, Volta and later) as the counter, the power draw and the enforced limit. A GPU without
the energy counter gives its power alone (readers integrate it).

The reasons bitmask is decoded by :func:`clock_event_reason_names` (``0x4`` ->
``sw_power_cap``, ``0x40`` -> ``hw_thermal_slowdown``, ...); :data:`THROTTLE_REASONS` are the
bits that mean the clock is held down against the workload's wish (power or thermal), as
opposed to idle or a clock setting. Both live in :mod:`edgescope_tracing.signals`, shared with
the UI, and are re-exported here.

A full sample costs about 2 ms per GPU on an H200 (see ``tests/fixtures``); the collector
calls it off the event loop. :meth:`NvmlSampler.open` answers, instead of a sampler, one
sentence saying why NVML cannot be used: the package is not installed, there is no driver, or
there is no GPU.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from edgescope_tracing.records import GpuSample, PowerReading, PowerSample, Record
from edgescope_tracing.signals import (
    CLOCK_EVENT_REASONS,
    GPU_THROTTLE_MASK,
    clock_event_reason_names,
    gpu_throttled,
)

__all__ = [
    "CLOCK_EVENT_REASONS",
    "NOT_AVAILABLE",
    "THROTTLE_REASONS",
    "NvmlSampler",
    "clock_event_reason_names",
    "gpu_processes",
    "gpu_sample_from_readings",
    "power_reading_from_readings",
    "is_throttled",
]

THROTTLE_REASONS = GPU_THROTTLE_MASK
"""Bits that mean power or thermal throttling: :data:`edgescope_tracing.signals.GPU_THROTTLE_MASK`
under the name this module has always given it."""

is_throttled = gpu_throttled
"""True if the mask holds a power or thermal throttle reason (:func:`gpu_throttled`)."""


NOT_AVAILABLE = (1 << 64) - 1
"""NVML's ``NVML_VALUE_NOT_AVAILABLE`` as an unsigned long long (pynvml's
``NVML_VALUE_NOT_AVAILABLE_ulonglong.value``): a process's unknown memory figure. Recent
pynvml turns it into ``None``; older versions pass it through."""


def gpu_processes(infos: Iterable[Any]) -> tuple[tuple[int, int], ...]:
    """``(pid, used GPU memory bytes)`` pairs by pid, from NVML process infos.

    An info is what ``nvmlDeviceGetComputeRunningProcesses`` and
    ``nvmlDeviceGetGraphicsRunningProcesses`` return (objects with ``pid`` and
    ``usedGpuMemory``), or a mapping with those keys (a recorded sample). An unknown figure
    (``None``, :data:`NOT_AVAILABLE`) is skipped. A process in both lists (compute and graphics,
    ``C+G`` in nvidia-smi) is one process: its larger figure counts, once.
    """
    used: dict[int, int] = {}
    for info in infos:
        if isinstance(info, Mapping):
            pid, mem = info.get("pid"), info.get("usedGpuMemory")
        else:
            pid, mem = getattr(info, "pid", None), getattr(info, "usedGpuMemory", None)
        if pid is None or mem is None or int(mem) == NOT_AVAILABLE:
            continue
        used[int(pid)] = max(int(mem), used.get(int(pid), 0))
    return tuple(sorted(used.items()))


def gpu_sample_from_readings(
    index: int, name: str, readings: Mapping[str, Any], t_us: int
) -> GpuSample:
    """A :class:`GpuSample` from NVML readings keyed by the sample's field names.

    Readings come from :meth:`NvmlSampler.read` (or a recorded sample); missing or ``None``
    keys stay ``None``. Temperatures and utilisations become floats, the rest ints;
    ``processes`` holds NVML process infos, mapped by :func:`gpu_processes`.
    """

    def num(key: str, kind: Callable[[Any], Any]) -> Any:
        v = readings.get(key)
        return None if v is None else kind(v)

    return GpuSample(
        index=index,
        name=name,
        temp_c=num("temp_c", float),
        power_mw=num("power_mw", int),
        power_limit_mw=num("power_limit_mw", int),
        sm_clock_mhz=num("sm_clock_mhz", int),
        mem_clock_mhz=num("mem_clock_mhz", int),
        max_sm_clock_mhz=num("max_sm_clock_mhz", int),
        max_mem_clock_mhz=num("max_mem_clock_mhz", int),
        clock_event_reasons=num("clock_event_reasons", int),
        util_gpu=num("util_gpu", float),
        util_mem=num("util_mem", float),
        mem_used=num("mem_used", int),
        mem_total=num("mem_total", int),
        processes=gpu_processes(readings.get("processes") or ()),
        t_us=t_us,
    )


def power_reading_from_readings(index: int, readings: Mapping[str, Any]) -> PowerReading | None:
    """The GPU's :class:`PowerReading` from NVML readings (``energy_mj``, ``power_mw``,
    ``power_limit_mw``), or None where it gives neither energy nor power."""

    def micro(key: str) -> int | None:
        v = readings.get(key)
        return None if v is None or int(v) < 0 else int(v) * 1000

    energy, power = micro("energy_mj"), micro("power_mw")
    if energy is None and power is None:
        return None
    return PowerReading("nvml", f"gpu{index}", energy, power, None, micro("power_limit_mw"))


class NvmlSampler:
    """Every NVIDIA GPU NVML sees. Build it with :meth:`open`."""

    name = "nvml"

    def __init__(self, nvml: Any, handles: list[tuple[int, str, Any]]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._static: dict[int, dict[str, Any]] = {}
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        self._reasons_fn: Callable[[Any], int] = (
            reasons or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        self._closed = False

    @property
    def gpus(self) -> list[tuple[int, str]]:
        return [(i, n) for i, n, _ in self._handles]

    @classmethod
    def open(cls) -> NvmlSampler | str:
        """A sampler over every GPU, or the reason NVML cannot be used here.

        NVML asks the driver, not a file tree: ``--procfs``/``--sysfs`` (a container reading
        the host's trees) do not change what it sees.
        """
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return "nvidia-ml-py is not installed (pip install 'edgescope-collector[nvidia]')"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            if isinstance(e, nvml.NVMLError_LibraryNotFound):
                return "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found"
            if isinstance(e, getattr(nvml, "NVMLError_DriverNotLoaded", ())):
                return "the NVIDIA driver is not loaded"
            if isinstance(e, getattr(nvml, "NVMLError_NoPermission", ())):
                return "no permission to use NVML (is this user allowed /dev/nvidia*?)"
            return f"NVML failed to start: {e}"
        try:
            count = nvml.nvmlDeviceGetCount()
            handles = []
            for i in range(count):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                handles.append((i, name.decode() if isinstance(name, bytes) else str(name), h))
        except nvml.NVMLError as e:
            nvml.nvmlShutdown()
            return f"NVML could not list the GPUs: {e}"
        if not handles:
            nvml.nvmlShutdown()
            return "NVML found no NVIDIA GPU"
        return cls(nvml, handles)

    def read(self, index: int, handle: Any) -> dict[str, Any]:
        """One GPU's raw readings keyed by :class:`GpuSample` field names (None: unsupported)."""
        nvml = self._nvml

        def get(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return fn(handle, *args)
            except nvml.NVMLError:
                return None

        static = self._static.get(index)
        if static is None:
            # Limits and maxima do not change while the driver is loaded: read them once.
            static = {
                "max_sm_clock_mhz": get(nvml.nvmlDeviceGetMaxClockInfo, nvml.NVML_CLOCK_SM),
                "max_mem_clock_mhz": get(nvml.nvmlDeviceGetMaxClockInfo, nvml.NVML_CLOCK_MEM),
            }
            self._static[index] = static
        util = get(nvml.nvmlDeviceGetUtilizationRates)
        mem = get(nvml.nvmlDeviceGetMemoryInfo)
        processes = list(get(nvml.nvmlDeviceGetComputeRunningProcesses) or ())
        # Data-centre GPUs answer NotSupported or nothing here: then it adds nothing.
        processes += get(nvml.nvmlDeviceGetGraphicsRunningProcesses) or ()
        return {
            **static,
            "temp_c": get(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
            "power_mw": get(nvml.nvmlDeviceGetPowerUsage),
            "power_limit_mw": get(nvml.nvmlDeviceGetEnforcedPowerLimit),
            "sm_clock_mhz": get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM),
            "clock_event_reasons": get(self._reasons_fn),
            "util_gpu": util.gpu if util is not None else None,
            "util_mem": util.memory if util is not None else None,
            "mem_used": mem.used if mem is not None else None,
            "mem_total": mem.total if mem is not None else None,
            "processes": processes,
            "energy_mj": get(nvml.nvmlDeviceGetTotalEnergyConsumption),
        }

    def sample(self, t_us: int) -> list[Record]:
        gpus: list[Record] = []
        power = []
        for i, name, h in self._handles:
            readings = self.read(i, h)
            gpus.append(gpu_sample_from_readings(i, name, readings, t_us))
            reading = power_reading_from_readings(i, readings)
            if reading is not None:
                power.append(reading)
        # The power record first: a reader then never takes the GPU samples' power for the
        # energy (it does so only in traces without NVML power records).
        return [PowerSample(tuple(power), t_us=t_us), *gpus] if power else gpus

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # shutting down: an error here leaves nothing to release
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
