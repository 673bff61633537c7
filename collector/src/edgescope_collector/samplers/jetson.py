"""The NVIDIA Jetson integrated GPU from sysfs, as a :class:`GpuSample` (index 0).

NVML does not cover Jetson's integrated GPU; the kernel's GPU driver does, under
``roots.sysfs/devices/platform``:

- ``platform/gpu.0/load`` (Orin, Xavier; ``17000000.ga10b``/``17000000.gv11b``/``57000000.gpu``
  on others; directly under ``devices`` on the Nano and TX2): the GPU's busy share in tenths
  of a percent (``load`` 875 = 87.5 %);
- ``<gpu>/devfreq/*/cur_freq`` and ``max_freq`` (Hz): the GPU clock and its current ceiling,
  reported as ``sm_clock_mhz`` and ``max_sm_clock_mhz``;
- the GPU thermal zone (``class/thermal`` zone whose type starts with ``gpu``,
  case-insensitive: ``gpu-thermal``, ``GPU-therm``) as ``temp_c``.

The name is the board model from the device tree (``/proc/device-tree/model``) when readable.
"""

from __future__ import annotations

from pathlib import Path

from edgescope_tracing.records import GpuSample, Record

from . import Roots
from ._files import numbered, read_int, read_text

__all__ = ["JetsonGpuSampler", "GPU_DIRS"]

GPU_DIRS = ("gpu.0", "17000000.ga10b", "17000000.gpu", "17000000.gv11b", "57000000.gpu")
"""Platform device names of Jetson GPUs, newest boards first."""


class JetsonGpuSampler:
    """GPU load, clock and temperature of a Jetson board."""

    name = "jetson_gpu"

    def __init__(self, load: Path, devfreq: Path | None, zone: Path | None, name: str) -> None:
        self._load = load
        self._devfreq = devfreq
        self._zone = zone
        self.gpu_name = name

    @classmethod
    def open(cls, roots: Roots) -> JetsonGpuSampler | str:
        """The sampler, or why there is no Jetson GPU here."""
        platform = roots.sysfs / "devices" / "platform"
        # Orin and Xavier put the GPU under devices/platform, the Nano and TX2 (L4T 32) under
        # devices itself.
        places = [parent / d for d in GPU_DIRS for parent in (platform, platform.parent)]
        for gpu in places:
            load = gpu / "load"
            if read_int(load) is not None:
                break
        else:
            return f"no Jetson GPU load file under {platform} (not a Jetson board)"
        devfreq = None
        for candidate in sorted((gpu / "devfreq").glob("*")):
            if (candidate / "cur_freq").exists():
                devfreq = candidate
                break
        zone = None
        for _, z in numbered(roots.sysfs / "class" / "thermal", "thermal_zone"):
            if (read_text(z / "type") or "").lower().startswith("gpu"):
                zone = z
                break
        model = read_text(roots.procfs / "device-tree" / "model")
        name = (model or "Jetson").rstrip("\x00") + " GPU"
        return cls(load, devfreq, zone, name)

    def close(self) -> None:
        pass

    def sample(self, t_us: int) -> list[Record]:
        load = read_int(self._load)
        cur = maxf = None
        if self._devfreq is not None:
            cur = read_int(self._devfreq / "cur_freq")
            maxf = read_int(self._devfreq / "max_freq")
        temp = read_int(self._zone / "temp") if self._zone is not None else None
        return [
            GpuSample(
                index=0,
                name=self.gpu_name,
                temp_c=temp / 1000 if temp is not None else None,
                sm_clock_mhz=round(cur / 1e6) if cur is not None else None,
                max_sm_clock_mhz=round(maxf / 1e6) if maxf is not None else None,
                util_gpu=load / 10 if load is not None else None,
                t_us=t_us,
            )
        ]
