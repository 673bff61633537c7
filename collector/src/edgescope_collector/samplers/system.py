"""Whole-device figures from procfs: one :class:`SystemSample` per call.

Sources, all under ``roots.procfs``:

- ``stat``: CPU busy % in total and per core, from the deltas of the ``cpu`` lines
  (busy = all jiffies but idle and iowait; guest time is already inside user).
- ``meminfo``: ``MemTotal``, ``MemAvailable`` (used = total - available; kernels before 3.14
  lack ``MemAvailable``, then free + buffers + cached), ``SwapTotal``/``SwapFree``.
- ``loadavg``: the 1, 5 and 15 minute load.
- ``pressure/{cpu,memory,io,irq}`` (PSI, kernel 4.20+ with ``CONFIG_PSI``): the kernel's
  ``avg10``/``avg60``/``avg300`` for ``some`` and ``full``, and ``<res>.<some|full>.now``,
  the share of time stalled (%) since the previous sample from the ``total`` counters.
- ``diskstats``: read and write bytes per second over whole disks (sectors are 512 bytes;
  partitions, loop, ram, zram and device-mapper devices are left out so nothing counts twice).
- ``net/dev``: received and sent bytes per second over all interfaces but loopback (and, where
  ``roots.sysfs/class/net`` tells, other virtual ones such as bridges and veths).

Rates are ``None`` on the first call. A source that is absent is named in ``skipped``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from edgescope_tracing.records import Record, SystemSample

from . import Roots
from ._files import read_text

__all__ = ["SystemSampler", "cpu_busy_percent"]

_PSI_RESOURCES = ("cpu", "memory", "io", "irq")
_NOT_A_DISK = re.compile(
    r"^(loop|ram|zram|dm-|md|sr|fd)\d*|^(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+)\d+$"
    r"|^(nvme\d+n\d+|mmcblk\d+|nbd\d+)p\d+$|^mmcblk\d+(boot|rpmb)"
)


def cpu_busy_percent(prev: tuple[int, int], cur: tuple[int, int]) -> float | None:
    """Busy % between two ``(busy, total)`` jiffy pairs; None if no time passed."""
    d_total = cur[1] - prev[1]
    if d_total <= 0:
        return None
    d_busy = max(0, cur[0] - prev[0])
    return round(min(100.0, 100.0 * d_busy / d_total), 2)


def _parse_stat(text: str) -> tuple[tuple[int, int] | None, dict[int, tuple[int, int]]]:
    total: tuple[int, int] | None = None
    per: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break
        parts = line.split()
        try:
            v = [int(x) for x in parts[1:9]]
        except ValueError:
            continue
        v += [0] * (8 - len(v))
        all_ = sum(v)  # user nice system idle iowait irq softirq steal
        busy = all_ - v[3] - v[4]
        if parts[0] == "cpu":
            total = (busy, all_)
        elif parts[0][3:].isdigit():
            per[int(parts[0][3:])] = (busy, all_)
    return total, per


def _parse_meminfo(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
            out[key] = int(parts[0]) * scale
    return out


def _parse_psi(text: str) -> dict[str, float]:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` lines as ``{"some.avg10": ...}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        for item in parts[1:]:
            k, _, v = item.partition("=")
            try:
                out[f"{parts[0]}.{k}"] = float(v)
            except ValueError:
                continue
    return out


class SystemSampler:
    """CPU, memory, swap, load, PSI, disk and network for the whole device."""

    name = "system"

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        proc = roots.procfs
        self.skipped: dict[str, str] = {}
        self._psi = [
            r for r in _PSI_RESOURCES if _parse_psi(read_text(proc / "pressure" / r) or "")
        ]
        if not self._psi:
            why = (
                "the kernel has no PSI files"
                if not (proc / "pressure").is_dir()
                else "PSI is disabled (boot with psi=1)"
            )
            self.skipped["psi"] = f"{why} under {proc / 'pressure'}"
        if read_text(proc / "diskstats") is None:
            self.skipped["disk"] = f"{proc / 'diskstats'} cannot be read"
        if read_text(proc / "net" / "dev") is None:
            self.skipped["net"] = f"{proc / 'net' / 'dev'} cannot be read"
        self._disks = self._whole_disks(roots.sysfs)
        self._virtual_ifaces = self._virtual_interfaces(roots.sysfs)
        self._prev_t: int | None = None
        self._prev_cpu: tuple[int, int] | None = None
        self._prev_per: dict[int, tuple[int, int]] = {}
        self._prev_psi_total: dict[str, float] = {}
        self._prev_disk: tuple[int, int] | None = None
        self._prev_net: tuple[int, int] | None = None

    @staticmethod
    def _whole_disks(sysfs: Path) -> set[str] | None:
        """Physical whole disks named in ``/sys/block``, or None to fall back on names."""
        block = sysfs / "block"
        try:
            entries = list(block.iterdir())
        except OSError:
            return None
        out = set()
        for e in entries:
            try:
                virtual = "/virtual/" in str(e.resolve())
            except OSError:
                virtual = False
            if not virtual and not _NOT_A_DISK.match(e.name):
                out.add(e.name)
        return out

    @staticmethod
    def _virtual_interfaces(sysfs: Path) -> set[str]:
        net = sysfs / "class" / "net"
        try:
            entries = list(net.iterdir())
        except OSError:
            return set()
        out = set()
        for e in entries:
            try:
                if "/virtual/" in str(e.resolve()):
                    out.add(e.name)
            except OSError:
                continue
        return out

    def close(self) -> None:
        pass

    def sample(self, t_us: int) -> list[Record]:
        proc = self.roots.procfs
        dt_s = (t_us - self._prev_t) / 1e6 if self._prev_t is not None else 0.0
        have_prev = self._prev_t is not None and dt_s > 0

        cpu_percent: float | None = None
        per_cpu: tuple[float, ...] = ()
        stat = read_text(proc / "stat")
        if stat:
            total, per = _parse_stat(stat)
            if total is not None and self._prev_cpu is not None:
                cpu_percent = cpu_busy_percent(self._prev_cpu, total)
            if per and self._prev_per:
                values = [0.0] * (max(per) + 1)
                for cpu, pair in per.items():
                    prev = self._prev_per.get(cpu)
                    pct = cpu_busy_percent(prev, pair) if prev else None
                    values[cpu] = pct if pct is not None else 0.0
                per_cpu = tuple(values)
            self._prev_cpu, self._prev_per = total, per

        mem = _parse_meminfo(read_text(proc / "meminfo") or "")
        mem_total = mem.get("MemTotal")
        mem_available = mem.get("MemAvailable")
        if mem_available is None and mem_total is not None:
            mem_available = sum(mem.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
        mem_used = (
            mem_total - mem_available
            if mem_total is not None and mem_available is not None
            else None
        )
        swap_total = mem.get("SwapTotal")
        swap_used = swap_total - mem.get("SwapFree", 0) if swap_total is not None else None

        load: list[float | None] = [None, None, None]
        loadavg = read_text(proc / "loadavg")
        if loadavg:
            with contextlib.suppress(ValueError):
                values = [float(x) for x in loadavg.split()[:3]]
                if len(values) == 3:
                    load = list(values)

        psi: dict[str, float] = {}
        for res in self._psi:
            figures = _parse_psi(read_text(proc / "pressure" / res) or "")
            for k, v in figures.items():
                if k.endswith(".total"):
                    key = f"{res}.{k[: -len('.total')]}.now"
                    prev_total = self._prev_psi_total.get(key)
                    if have_prev and prev_total is not None:
                        # total is microseconds stalled; as a share of the interval in %
                        psi[key] = round(min(100.0, max(0.0, (v - prev_total) / (dt_s * 1e4))), 2)
                    self._prev_psi_total[key] = v
                else:
                    psi[f"{res}.{k}"] = v

        disk_r = disk_w = net_rx = net_tx = None
        disk = self._disk_bytes(read_text(proc / "diskstats"))
        if disk is not None and self._prev_disk is not None and have_prev:
            disk_r = max(0, disk[0] - self._prev_disk[0]) / dt_s
            disk_w = max(0, disk[1] - self._prev_disk[1]) / dt_s
        self._prev_disk = disk
        net = self._net_bytes(read_text(proc / "net" / "dev"))
        if net is not None and self._prev_net is not None and have_prev:
            net_rx = max(0, net[0] - self._prev_net[0]) / dt_s
            net_tx = max(0, net[1] - self._prev_net[1]) / dt_s
        self._prev_net = net
        self._prev_t = t_us

        return [
            SystemSample(
                cpu_percent=cpu_percent,
                per_cpu_percent=per_cpu,
                mem_used=mem_used,
                mem_total=mem_total,
                mem_available=mem_available,
                swap_used=swap_used,
                swap_total=swap_total,
                load1=load[0],
                load5=load[1],
                load15=load[2],
                psi=psi,
                disk_read_bps=disk_r,
                disk_write_bps=disk_w,
                net_rx_bps=net_rx,
                net_tx_bps=net_tx,
                t_us=t_us,
            )
        ]

    def _disk_bytes(self, text: str | None) -> tuple[int, int] | None:
        if text is None:
            return None
        read = written = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 10:
                continue
            name = parts[2]
            whole = name in self._disks if self._disks is not None else not _NOT_A_DISK.match(name)
            if not whole:
                continue
            try:
                read += int(parts[5]) * 512
                written += int(parts[9]) * 512
            except ValueError:
                continue
        return read, written

    def _net_bytes(self, text: str | None) -> tuple[int, int] | None:
        if text is None:
            return None
        rx = tx = 0
        for line in text.splitlines()[2:]:
            name, _, rest = line.partition(":")
            name = name.strip()
            if name == "lo" or name in self._virtual_ifaces:
                continue
            parts = rest.split()
            if len(parts) >= 9:
                try:
                    rx += int(parts[0])
                    tx += int(parts[8])
                except ValueError:
                    continue
        return rx, tx
