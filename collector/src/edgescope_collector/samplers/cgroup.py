"""A process's cgroup and its figures: memory, memory limits and events, CPU quota throttling.

The one home of the cgroup-path logic: which cgroup ``/proc/PID/cgroup`` names, where its
files are under ``roots.sysfs/fs/cgroup`` (so ``--sysfs`` pointing at a host's ``/sys`` reads
the host's cgroups), and which ancestor's limit bites. The process sampler
(:mod:`.process`) reads one :class:`Cgroup` per distinct cgroup per sample.

cgroup v2 (the unified hierarchy at ``fs/cgroup``, or at ``fs/cgroup/unified`` on a hybrid
system):

- memory: ``memory.current``, ``memory.peak`` (5.19+), ``memory.max`` and ``memory.high``
  (the lowest on the way up to the root is the one that bites), ``memory.events`` (``high``,
  ``max``, ``oom`` of the cgroup whose limit is lowest; ``oom_kill`` of the process's own
  cgroup: a kill is counted where the killed process was, and up), ``memory.swap.current``;
- CPU: ``cpu.max`` (``$MAX $PERIOD``, ``max`` for none) on the way up, the lowest quota in
  CPUs; that cgroup's ``cpu.stat`` ``nr_periods``, ``nr_throttled``, ``throttled_usec``. A
  quota set on a parent throttles the parent's run queue, so the parent's counters are the
  ones that rise (the child's do not).

cgroup v1 (a controller per mount: ``fs/cgroup/memory``, ``fs/cgroup/cpu`` or
``fs/cgroup/cpu,cpuacct``):

- memory: ``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``, ``memory.limit_in_bytes``
  (or ``hierarchical_memory_limit`` from ``memory.stat``), ``memory.oom_control`` ``oom_kill``,
  ``memory.failcnt`` (times usage hit the limit: the ``max`` event's equivalent), swap as
  ``memory.memsw.usage_in_bytes`` minus usage where swap accounting is on. v1 has no
  ``memory.high`` and no ``oom`` event counter;
- CPU: ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us`` on the way up, that cgroup's
  ``cpu.stat`` ``nr_periods``, ``nr_throttled``, ``throttled_time`` (ns).

A process in the root cgroup has no cgroup figures (the root's are the whole machine's, which
the system sample already has); in a container with its own cgroup namespace, ``/`` is the
container's cgroup and is read (the host's v2 root has neither ``memory.current`` nor
``cpu.max``, so it is never mistaken for one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgescope_tracing.containers import CgroupPaths, cgroup_paths

from . import Roots
from ._files import read_int, read_kv, read_text

__all__ = ["Cgroup", "UNLIMITED", "read_cgroup"]

UNLIMITED = 1 << 62
"""cgroup v1 reports "no limit" as a huge page-rounded number; anything above this is none."""


@dataclass(frozen=True, slots=True)
class Cgroup:
    """A cgroup's figures (``None`` where the kernel lacks the file or the controller)."""

    path: str
    """As ``/proc/PID/cgroup`` names it: the v2 path, else the v1 memory controller's."""
    version: int
    current: int | None = None
    peak: int | None = None
    """The cgroup's own peak file: its lifetime maximum, not a run's (see ``RunPeak``)."""
    limit: int | None = None
    oom_kills: int | None = None
    directory: Path | None = None
    """Where the cgroup's memory files are."""
    memory_high: int | None = None
    high_events: int | None = None
    max_events: int | None = None
    oom_events: int | None = None
    swap: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_periods: int | None = None
    cpu_throttled: int | None = None
    cpu_throttled_us: int | None = None


def _limit(value: int | None) -> int | None:
    return value if value is not None and value < UNLIMITED else None


def _cgroup_dir(mount: Path, path: str) -> Path | None:
    d = mount / path.lstrip("/")
    return d if d.is_dir() else None


def _up_to(mount: Path, d: Path) -> list[Path]:
    """``d`` and its ancestors below ``mount`` (the root's own files are the machine's)."""
    out = [d]
    while d != mount and mount in d.parents:
        d = d.parent
        if d != mount:
            out.append(d)
    return out


def _lowest(dirs: list[Path], name: str) -> tuple[int | None, Path | None]:
    """The lowest limit in file ``name`` over ``dirs``, and the directory that holds it."""
    best: tuple[int | None, Path | None] = (None, None)
    for p in dirs:
        v = _limit(read_int(p / name))
        if v is not None and (best[0] is None or v < best[0]):
            best = (v, p)
    return best


@dataclass(frozen=True, slots=True)
class _Cpu:
    quota_us: int | None
    period_us: int | None
    periods: int | None
    throttled: int | None
    throttled_us: int | None


def _cpu_v2(mount: Path, d: Path) -> _Cpu | None:
    # A cgroup without cpu.max is one whose parent does not enable the cpu controller for its
    # children: its processes are then the nearest ancestor's that has it, quota and all.
    up = [p for p in _up_to(mount, d) if (p / "cpu.max").exists()]
    if not up:
        return None  # the cpu controller is not enabled on the way up
    best: tuple[float, int, int, Path] | None = None
    for p in up:
        parts = (read_text(p / "cpu.max") or "").split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
            quota, period = int(parts[0]), int(parts[1])
            if best is None or quota / period < best[0]:
                best = (quota / period, quota, period, p)
    where = best[3] if best is not None else up[0]
    stat = read_kv(where / "cpu.stat")
    return _Cpu(
        best[1] if best else None,
        best[2] if best else None,
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
        stat.get("throttled_usec"),
    )


def _cpu_v1(mount: Path, d: Path) -> _Cpu | None:
    if not (d / "cpu.cfs_quota_us").exists():
        return None
    best: tuple[float, int, int, Path] | None = None
    for p in _up_to(mount, d):
        quota, period = read_int(p / "cpu.cfs_quota_us"), read_int(p / "cpu.cfs_period_us")
        if quota is None or quota <= 0 or not period:
            continue  # -1: no quota here
        if best is None or quota / period < best[0]:
            best = (quota / period, quota, period, p)
    where = best[3] if best is not None else d
    stat = read_kv(where / "cpu.stat")
    ns = stat.get("throttled_time")
    return _Cpu(
        best[1] if best else None,
        best[2] if best else None,
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
        None if ns is None else ns // 1000,
    )


def _v1_dir(base: Path, paths: CgroupPaths, controller: str) -> tuple[Path, Path] | None:
    """A v1 controller's mount and the process's cgroup directory in it. The mount is named
    after the controller (``cpu``, often a symlink), else after its hierarchy's controller
    list (``cpu,cpuacct``)."""
    for name in (controller, paths.v1_mounts.get(controller)):
        if name and (base / name).is_dir():
            d = _cgroup_dir(base / name, paths.v1[controller])
            return None if d is None else (base / name, d)
    return None


def read_cgroup(roots: Roots, cgroup_file_text: str) -> Cgroup | None:
    """The figures of the cgroup named by a ``/proc/PID/cgroup`` text, or None.

    None for the root cgroup and where neither a memory nor a cpu controller is there under
    ``roots.sysfs/fs/cgroup``.
    """
    paths = cgroup_paths(cgroup_file_text)
    base = roots.sysfs / "fs" / "cgroup"
    mem: Cgroup | None = None
    cpu: _Cpu | None = None
    version = 0
    if paths.v2 is not None:
        for mount in (base, base / "unified"):
            d = _cgroup_dir(mount, paths.v2)
            if d is None:
                continue
            if mem is None and (d / "memory.current").exists():
                mem = _memory_v2(mount, d, paths.v2)
            if cpu is None:
                cpu = _cpu_v2(mount, d)
                version = version or (2 if cpu is not None else 0)
    if mem is None and "memory" in paths.v1:
        at = _v1_dir(base, paths, "memory")
        if at is not None and (at[1] / "memory.usage_in_bytes").exists():
            mem = _memory_v1(at[1], paths.v1["memory"])
    if cpu is None and "cpu" in paths.v1:
        at = _v1_dir(base, paths, "cpu")
        if at is not None:
            cpu = _cpu_v1(*at)
            if cpu is not None and paths.v1["cpu"] == "/" and cpu.quota_us is None:
                cpu = None  # the true root: the whole machine, never throttled by a quota
            version = version or (1 if cpu is not None else 0)
    if mem is None and cpu is None:
        return None
    if mem is None:
        name = paths.name
        assert name is not None
        mem = Cgroup(path=name, version=version)
    if cpu is None:
        return mem
    return dataclasses.replace(
        mem,
        cpu_quota_us=cpu.quota_us,
        cpu_period_us=cpu.period_us,
        cpu_periods=cpu.periods,
        cpu_throttled=cpu.throttled,
        cpu_throttled_us=cpu.throttled_us,
    )


def _memory_v2(mount: Path, d: Path, path: str) -> Cgroup:
    up = _up_to(mount, d)
    limit, limit_at = _lowest(up, "memory.max")
    high, high_at = _lowest(up, "memory.high")
    own = read_kv(d / "memory.events")
    at_limit = read_kv(limit_at / "memory.events") if limit_at not in (None, d) else own
    at_high = read_kv(high_at / "memory.events") if high_at not in (None, d) else own
    return Cgroup(
        path=path,
        version=2,
        current=read_int(d / "memory.current"),
        peak=read_int(d / "memory.peak"),
        limit=limit,
        oom_kills=own.get("oom_kill"),
        directory=d,
        memory_high=high,
        high_events=at_high.get("high"),
        max_events=at_limit.get("max"),
        oom_events=at_limit.get("oom"),
        swap=read_int(d / "memory.swap.current"),
    )


def _memory_v1(d: Path, path: str) -> Cgroup | None:
    limit = _limit(read_kv(d / "memory.stat").get("hierarchical_memory_limit"))
    if limit is None:
        limit = _limit(read_int(d / "memory.limit_in_bytes"))
    if path == "/" and limit is None:
        return None  # the true root: the whole machine, not a run's cgroup
    usage = read_int(d / "memory.usage_in_bytes")
    memsw = read_int(d / "memory.memsw.usage_in_bytes")
    return Cgroup(
        path=path,
        version=1,
        current=usage,
        peak=read_int(d / "memory.max_usage_in_bytes"),
        limit=limit,
        oom_kills=read_kv(d / "memory.oom_control").get("oom_kill"),
        directory=d,
        max_events=read_int(d / "memory.failcnt"),
        swap=max(0, memsw - usage) if memsw is not None and usage is not None else None,
    )
