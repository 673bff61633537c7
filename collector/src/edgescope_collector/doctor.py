"""What the collector can see on this machine, and why not where it can't.

:func:`diagnose` opens every sampler against the given roots, takes one sample from each that
opens (timing it, so the cost of a sample on this machine is known; the doctor's own process
stands in for a run so the process sampler reads real figures), and asks each stack backend
whether it can run here (:func:`edgescope_collector.stacks.backend_problem`, which runs the
tool once). The answer is a :class:`Diagnosis`: plain data, printed by the ``edgescope doctor``
command for people (:func:`print_human`) or as JSON.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgescope_tracing.records import ProcessSample, Record

from .samplers import ProcessWatch, Roots, default_samplers
from .samplers._files import read_text
from .stacks import BACKENDS, backend_problem

__all__ = ["Diagnosis", "SamplerCheck", "BackendCheck", "diagnose", "print_human"]

DOCTOR_RUN = 0
"""The run number the doctor's own process is registered under for the process sampler."""


@dataclass(frozen=True)
class SamplerCheck:
    name: str
    ok: bool
    records: int = 0
    sample_ms: float | None = None
    error: str | None = None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendCheck:
    name: str
    ok: bool
    problem: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    host: str
    kernel: str
    machine: str
    board: str | None
    roots: Roots
    samplers: tuple[SamplerCheck, ...]
    skipped: dict[str, str]
    backends: tuple[BackendCheck, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kernel": self.kernel,
            "machine": self.machine,
            "board": self.board,
            "roots": {"procfs": str(self.roots.procfs), "sysfs": str(self.roots.sysfs)},
            "samplers": [
                {
                    "name": s.name,
                    "ok": s.ok,
                    "records": s.records,
                    "sample_ms": s.sample_ms,
                    "error": s.error,
                    "sources": list(s.sources),
                }
                for s in self.samplers
            ],
            "skipped": dict(self.skipped),
            "stack_backends": [
                {"name": b.name, "ok": b.ok, "problem": b.problem, "version": b.version}
                for b in self.backends
            ],
            "notes": list(self.notes),
        }


_SOURCES = {
    "system": ("cpu", "memory", "load", "psi", "disk", "net"),
    "thermal": (
        "thermal_zones",
        "cooling_devices",
        "cpufreq",
        "x86_thermal_throttle",
        "pi_throttled",
        "hwmon",
    ),
    "power": ("rapl", "hwmon_power", "ina3221"),
}


def _board(roots: Roots) -> str | None:
    for p in (
        roots.procfs / "device-tree" / "model",
        roots.sysfs / "firmware" / "devicetree" / "base" / "model",
        roots.sysfs / "class" / "dmi" / "id" / "product_name",
    ):
        text = read_text(p)
        if text:
            return text.rstrip("\x00").strip() or None
    return None


def _version(tool: str) -> str | None:
    path = shutil.which(tool)
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = (out.stdout or out.stderr).strip().splitlines()
    return f"{path}: {line[0]}" if line else path


def _cgroup_note(roots: Roots) -> str:
    """Which cgroup hierarchy the runs' cgroup figures come from, with the controllers that
    give them (memory: limits and OOM kills; cpu: the quota and its throttling)."""
    base = roots.sysfs / "fs" / "cgroup"
    if (base / "cgroup.controllers").exists():
        have = (read_text(base / "cgroup.controllers") or "").split()
        wanted = [c for c in ("cpu", "memory") if c in have]
        return f"cgroup v2 (unified hierarchy), controllers for runs: {', '.join(wanted) or 'none'}"
    cpu = (base / "cpu").is_dir() or (base / "cpu,cpuacct").is_dir()
    v1 = [c for c, there in (("memory", (base / "memory").is_dir()), ("cpu", cpu)) if there]
    if v1:
        names = " and ".join(v1)
        return f"cgroup v1 {names} controller{'s' if len(v1) > 1 else ''}" + (
            " with a v2 hierarchy beside it (hybrid)" if (base / "unified").is_dir() else ""
        )
    return f"no cgroup memory or cpu controller under {base}: runs get no cgroup figures"


def _cgroup_sources(records: list[Record]) -> tuple[str, ...]:
    """What the doctor's own process sample got of its cgroup."""
    procs = [r for r in records if isinstance(r, ProcessSample)]
    out = []
    if any(p.cgroup_current is not None for p in procs):
        out.append("cgroup memory")
    if any(p.memory_high_events is not None or p.memory_max_events is not None for p in procs):
        out.append("memory events")
    if any(p.cpu_periods is not None for p in procs):
        out.append("CPU quota")
    return tuple(out)


ENERGY_SOURCES = ("rapl", "hwmon_power", "ina3221", "pi_pmic")
"""The power sampler's sources (:mod:`.samplers.power`); NVML's energy is the nvml sampler's."""


def _energy_note(checks: list[SamplerCheck], skipped: dict[str, str]) -> str:
    """Which energy sources this machine has, and which were looked for and are absent."""
    have = [s for s in ENERGY_SOURCES if s not in skipped]
    if any(c.name == "nvml" and c.ok for c in checks):
        have.append("nvml (GPU total energy and power)")
    absent = [s for s in ENERGY_SOURCES if s in skipped]
    if "nvml" in skipped:
        absent.append("nvml")
    found = ", ".join(have) if have else "none: runs get no energy figures"
    return f"energy sources: {found}" + (
        f"; looked for, absent: {', '.join(absent)}" if absent else ""
    )


def diagnose(roots: Roots | None = None, backends: bool = True) -> Diagnosis:
    """Check every sampler and stack backend here (``backends=False`` skips the latter)."""
    roots = roots or Roots()
    watch = ProcessWatch()
    if roots.is_live:
        watch.add(DOCTOR_RUN, os.getpid())
    samplers, skipped = default_samplers(roots, watch)
    checks = []
    try:
        for s in samplers:
            try:
                s.sample(time.time_ns() // 1000)  # the first call primes rates
                t1 = time.perf_counter()
                records = s.sample(time.time_ns() // 1000)
                t2 = time.perf_counter()
            except Exception as e:  # a sampler that breaks here is the doctor's finding
                checks.append(SamplerCheck(s.name, False, error=f"{type(e).__name__}: {e}"))
                continue
            sources = tuple(x for x in _SOURCES.get(s.name, ()) if x not in skipped)
            if s.name == "process":
                sources = ("processes", "VmHWM", *_cgroup_sources(records))
            checks.append(
                SamplerCheck(s.name, True, len(records), round((t2 - t1) * 1e3, 3), None, sources)
            )
    finally:
        for s in samplers:
            s.close()
    names = {c.name for c in checks}
    for name in ("thermal", "power", "jetson_gpu", "nvml"):
        if name not in names:
            why = skipped.get(name) or "none of its sources is present (see below)"
            checks.append(SamplerCheck(name, False, error=why))

    backend_checks = []
    if backends:
        for name in BACKENDS:
            problem = backend_problem(name)
            version = None if name == "python" or problem else _version(name)
            backend_checks.append(BackendCheck(name, problem is None, problem, version))

    notes = [_cgroup_note(roots), _energy_note(checks, skipped)]
    if roots.is_live:
        btf = Path("/sys/kernel/btf/vmlinux")
        notes.append(
            "kernel BTF present (bpftrace can read kernel types)"
            if btf.exists()
            else "no kernel BTF at /sys/kernel/btf/vmlinux (bpftrace's user-stack profile "
            "does not need it; kernel-type scripts do)"
        )
        paranoid = read_text(roots.procfs / "sys" / "kernel" / "perf_event_paranoid")
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        notes.append(f"perf_event_paranoid {paranoid}, running as {who}")
    uname = platform.uname()
    return Diagnosis(
        host=uname.node,
        kernel=uname.release,
        machine=uname.machine,
        board=_board(roots),
        roots=roots,
        samplers=tuple(checks),
        skipped=skipped,
        backends=tuple(backend_checks),
        notes=tuple(notes),
    )


def print_human(d: Diagnosis, out: TextIO) -> None:
    w = out.write
    board = f", {d.board}" if d.board else ""
    w(f"edgescope doctor: {d.host} (Linux {d.kernel}, {d.machine}{board})\n")
    if not d.roots.is_live:
        w(f"  reading procfs {d.roots.procfs} and sysfs {d.roots.sysfs}\n")
    w("\nsamplers\n")
    for s in d.samplers:
        if s.ok:
            what = ", ".join(s.sources) if s.sources else f"{s.records} records"
            w(f"  ok   {s.name:<11} {what} ({s.sample_ms:.2f} ms a sample)\n")
        else:
            w(f"  --   {s.name:<11} {s.error}\n")
    within = {k: v for k, v in d.skipped.items() if k not in ("jetson_gpu", "nvml")}
    if within:
        w("\nsources not available\n")
        width = max(len(k) for k in within)
        for k, v in within.items():
            w(f"  {k:<{width}}  {v}\n")
    if d.backends:
        w("\nstack backends\n")
        for b in d.backends:
            if b.ok:
                what = "in-process, inside the SDK" if b.name == "python" else (b.version or "")
                w(f"  ok   {b.name:<9} {what}\n")
            else:
                w(f"  --   {b.name:<9} {b.problem}\n")
    if d.notes:
        w("\nnotes\n")
        for n in d.notes:
            w(f"  {n}\n")
