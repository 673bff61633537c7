"""Facts about the device a run starts on, for ``RunStart.device``: a few small reads at init."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edgescope_tracing.containers import cgroup_paths

__all__ = ["device_facts"]


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode(errors="replace").strip() or None
    except OSError:
        return None


def _board(sysfs: Path, procfs: Path) -> str | None:
    model = _read(procfs / "device-tree" / "model") or _read(
        Path("/sys/firmware/devicetree/base/model")
    )
    if model:
        return model
    dmi = sysfs / "class" / "dmi" / "id"
    vendor, product = _read(dmi / "sys_vendor"), _read(dmi / "product_name")
    parts = [p for p in (vendor, product) if p and p.lower() not in ("", "to be filled by o.e.m.")]
    return " ".join(parts) or None


def _cpu_model(procfs: Path) -> str | None:
    text = _read(procfs / "cpuinfo")
    if not text:
        return None
    for want in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == want and value.strip():
                return value.strip()
    return None


def _mem_total(procfs: Path) -> int | None:
    text = _read(procfs / "meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def _cgroup(procfs: Path) -> str | None:
    """This process's cgroup (the container it is in, where the path shows one); None in the
    root cgroup, or in a container whose cgroup namespace shows only "/"."""
    name = cgroup_paths(_read(procfs / "self" / "cgroup") or "").name
    return name if name and name != "/" else None


def device_facts(procfs: Path = Path("/proc"), sysfs: Path = Path("/sys")) -> dict[str, Any]:
    """Board model, CPU, memory, kernel and Python of this machine, and the cgroup this process
    is in (``cgroup``: readers name its container from it where no collector sampled the run);
    absent facts are left out."""
    facts: dict[str, Any] = {
        "os": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    for name, value in (
        ("board", _board(sysfs, procfs)),
        ("cpu", _cpu_model(procfs)),
        ("mem_total", _mem_total(procfs)),
        ("cgroup", _cgroup(procfs)),
    ):
        if value is not None:
            facts[name] = value
    return facts
