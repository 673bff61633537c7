"""Thermal and throttling signals from sysfs: one :class:`ThermalSample` per call.

Sources, all under ``roots.sysfs`` (each named in ``ThermalSampler.skipped`` with the reason
when absent):

- ``thermal_zones``: ``class/thermal/thermal_zone*``: ``type``, ``temp`` (millidegrees C) and
  the trip points ``trip_point_N_{type,temp,hyst}`` as ``(type, temp_c, hysteresis_c)``
  (settings, so read every 30 samples, not every one). A
  zone that cannot be read right now (disabled zones answer ``EINVAL``) is left out, and so
  is a trip point at 0 or below (disabled, as on ``x86_pkg_temp``).
- ``cooling_devices``: ``class/thermal/cooling_device*``: ``cur_state``/``max_state`` and the
  ``stats/total_trans`` delta as ``transitions``. Devices that cool by slowing the CPU or GPU
  (:data:`PASSIVE_COOLING`: ``Processor``, ``cpufreq-cpuN``, ``intel_powerclamp``, ...) are
  throttling when above state 0: their milliseconds spent there (``stats/time_in_state_ms``,
  a counter since boot) go into ``throttle`` as ``"<device>.cooling_ms"``. Fans are not.
- ``cpufreq``: ``devices/system/cpu/cpu*/cpufreq``: ``scaling_cur_freq`` (what the governor
  requested), ``cpuinfo_cur_freq`` (what the hardware runs; root-only on many kernels),
  ``cpuinfo_max_freq`` and ``scaling_max_freq`` (lowered by thermal or power capping), in kHz.
- ``x86_thermal_throttle``: ``devices/system/cpu/cpu*/thermal_throttle/*``: per CPU
  ``cpuN.core_throttle_count`` (and ``_total_time_ms``, ``_max_time_ms``), per package
  ``packageP.package_throttle_count`` and friends, counters that only rise.
- ``pi_throttled``: the Raspberry Pi firmware's ``get_throttled`` (sysfs ``soc:firmware``, or
  ``vcgencmd get_throttled`` on a live root): ``"pi.throttled"`` holds the raw bits, decoded
  by :func:`pi_throttled_flags` (from :mod:`edgescope_tracing.signals`, re-exported here with
  :data:`PI_THROTTLED_BITS`).
- ``hwmon``: ``class/hwmon/hwmon*``: temperatures (``temp*_input``, with ``_crit`` and ``_max``
  as trip points) become zones named ``"<chip>/<label>"`` unless the chip is a thermal zone's
  own mirror; alarms (``*_alarm``, 0 or 1, such as the Pi's ``rpi_volt`` ``in0_lcrit_alarm``:
  under-voltage now) go into ``throttle`` as ``"hwmon.<chip>.<file>"``; voltages, currents,
  power and fan speeds go into ``sensors`` as ``"hwmon.<chip>.<stem>"`` in base units
  (:data:`HWMON_SENSORS`): ``inN_input`` mV as volts, ``currN_input`` mA as amperes,
  ``powerN_input`` µW as watts, ``fanN_input`` as RPM. ``<chip>`` is the chip's ``name``, with
  ``.0``, ``.1``, ... appended where chips share a name (a Jetson AGX Orin has two ``ina3221``).
  Labels (``in1_label``: ``VDD_IN``) are not recorded: the stem names a sensor stably.

``throttle`` holds only counters that rise while throttling and 0/1 flags, so a reader can
call any rise a throttling signal; readings that go up and down are ``sensors``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path

from edgescope_tracing.records import CoolingDevice, CpuFreq, Record, ThermalSample, ThermalZone
from edgescope_tracing.signals import PASSIVE_COOLING, PI_THROTTLED_BITS, pi_throttled_flags

from . import Roots
from ._files import numbered, read_int, read_text

__all__ = [
    "ThermalSampler",
    "HWMON_SENSORS",
    "PASSIVE_COOLING",
    "PI_THROTTLED_BITS",
    "pi_throttled_flags",
    "parse_vcgencmd_throttled",
    "find_pi_throttled",
]

_HWMON_TEMP = re.compile(r"^temp(\d+)_input$")
_HWMON_ALARM = re.compile(r"^\w+_alarm$")
_HWMON_SENSOR = re.compile(r"^(in|curr|power|fan)(\d+)_input$")

HWMON_SENSORS = {"in": 1000, "curr": 1000, "power": 1_000_000, "fan": 1}
"""hwmon input types recorded in ``sensors``, each with what its raw reading is divided by to
give base units: millivolts to volts, milliamperes to amperes, microwatts to watts, RPM."""


def parse_vcgencmd_throttled(text: str) -> int | None:
    """``throttled=0x50005`` (vcgencmd's answer) or ``50005`` (sysfs) as an int, else None."""
    text = text.strip()
    _, _, value = text.rpartition("=")
    try:
        return int(value, 16)
    except ValueError:
        return None


def find_pi_throttled(sysfs: Path) -> Path | None:
    """The firmware's sysfs ``get_throttled`` file (Pi 4: ``platform/soc/soc:firmware``)."""
    platform = sysfs / "devices" / "platform"
    for pattern in ("*/*:firmware/get_throttled", "*:firmware/get_throttled"):
        for p in sorted(platform.glob(pattern)):
            return p
    return None


def _unique(names: list[str]) -> list[str]:
    """Names made unique by suffixing ``.N`` where a name repeats (laptops: many Processor)."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] == 1:
            out.append(n)
        else:
            out.append(f"{n}.{seen.get(n, 0)}")
            seen[n] = seen.get(n, 0) + 1
    return out


@dataclass(frozen=True, slots=True)
class _Zone:
    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class _Cooling:
    name: str
    path: Path
    passive: bool


@dataclass(frozen=True, slots=True)
class _Hwmon:
    chip: str
    path: Path
    temps: tuple[tuple[str, str], ...]
    """(file stem e.g. "temp1", zone name) of temperatures to read as zones."""
    values: tuple[str, ...]
    """Alarm file names."""
    sensors: tuple[tuple[str, str, int], ...] = ()
    """(input file name, ``sensors`` key, divisor to base units)."""


def _norm(name: str) -> str:
    return name.replace("-", "_").lower()


class ThermalSampler:
    """Thermal zones, cooling devices, cpufreq, throttle counters and flags, hwmon."""

    name = "thermal"

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        sysfs = roots.sysfs
        self.skipped: dict[str, str] = {}
        self.sources: list[str] = []

        thermal = sysfs / "class" / "thermal"
        zone_dirs = numbered(thermal, "thermal_zone")
        types = [read_text(p / "type") or f"thermal_zone{n}" for n, p in zone_dirs]
        self._zones = [_Zone(n, p) for n, (_, p) in zip(_unique(types), zone_dirs, strict=True)]
        self._found("thermal_zones", self._zones, f"no thermal zones under {thermal}")

        cool_dirs = numbered(thermal, "cooling_device")
        ctypes = [read_text(p / "type") or f"cooling_device{n}" for n, p in cool_dirs]
        self._cooling = [
            _Cooling(n, p, t.startswith(PASSIVE_COOLING))
            for n, t, (_, p) in zip(_unique(ctypes), ctypes, cool_dirs, strict=True)
        ]
        self._found("cooling_devices", self._cooling, f"no cooling devices under {thermal}")

        cpu_root = sysfs / "devices" / "system" / "cpu"
        cpus = numbered(cpu_root, "cpu")
        self._cpufreq = [(n, p / "cpufreq") for n, p in cpus if (p / "cpufreq").is_dir()]
        self._found("cpufreq", self._cpufreq, f"no cpufreq directories under {cpu_root}")

        self._x86: list[tuple[str, Path]] = []
        packages: set[int] = set()
        for n, p in cpus:
            tt = p / "thermal_throttle"
            if not tt.is_dir():
                continue
            package = read_int(p / "topology" / "physical_package_id") or 0
            for counter in sorted(tt.iterdir()):
                if counter.name.startswith("core_"):
                    self._x86.append((f"cpu{n}.{counter.name}", counter))
                elif counter.name.startswith("package_") and package not in packages:
                    self._x86.append((f"package{package}.{counter.name}", counter))
            packages.add(package)
        self._found(
            "x86_thermal_throttle",
            self._x86,
            f"no thermal_throttle counters under {cpu_root}/cpu*/ (not an x86 CPU with them)",
        )

        self._pi_file = find_pi_throttled(sysfs)
        self._vcgencmd = None
        if self._pi_file is None and roots.is_live:
            self._vcgencmd = shutil.which("vcgencmd")
        if self._pi_file is not None or self._vcgencmd is not None:
            self.sources.append("pi_throttled")
        else:
            self.skipped["pi_throttled"] = (
                f"no Raspberry Pi firmware get_throttled under {sysfs / 'devices/platform'}"
                + (" and no vcgencmd" if roots.is_live else "")
            )

        zone_types = {_norm(z.name.split(".")[0]) for z in self._zones}
        self._hwmon: list[_Hwmon] = []
        hwmon_root = sysfs / "class" / "hwmon"
        hwmon_dirs = [p for _, p in numbered(hwmon_root, "hwmon")]
        chips = [read_text(p / "name") or p.name for p in hwmon_dirs]
        for p, raw_chip, chip in zip(hwmon_dirs, chips, _unique(chips), strict=True):
            temps: list[tuple[str, str]] = []
            values: list[str] = []
            sensors: list[tuple[str, str, int]] = []
            try:
                files = sorted(f.name for f in p.iterdir())
            except OSError:
                continue
            mirror = _norm(raw_chip) in zone_types
            for f in files:
                m = _HWMON_TEMP.match(f)
                s = _HWMON_SENSOR.match(f)
                if m and not mirror:
                    stem = f"temp{m.group(1)}"
                    label = read_text(p / f"{stem}_label") or stem
                    temps.append((stem, f"{chip}/{label}"))
                elif _HWMON_ALARM.match(f):
                    values.append(f)
                elif s:
                    kind = s.group(1)
                    sensors.append((f, f"hwmon.{chip}.{kind}{s.group(2)}", HWMON_SENSORS[kind]))
            if temps or values or sensors:
                self._hwmon.append(_Hwmon(chip, p, tuple(temps), tuple(values), tuple(sensors)))
        self._found("hwmon", self._hwmon, f"no hwmon sensors under {hwmon_root}")

        self.trips_every = 30
        """Trip points are settings, not readings: read again every this many samples."""
        self._ticks = 0
        self._trips: dict[str, tuple[tuple[str, float, float], ...]] = {}
        self._prev_trans: dict[str, int] = {}

    def _found(self, source: str, items: Sized, why: str) -> None:
        if items:
            self.sources.append(source)
        else:
            self.skipped[source] = why

    def close(self) -> None:
        pass

    def sample(self, t_us: int) -> list[Record]:
        zones = [z for z in (self._read_zone(z) for z in self._zones) if z is not None]
        self._ticks += 1
        throttle: dict[str, int] = {}
        sensors: dict[str, float] = {}
        cooling = []
        for c in self._cooling:
            cur = read_int(c.path / "cur_state")
            mx = read_int(c.path / "max_state")
            if cur is None or mx is None:
                continue
            trans = read_int(c.path / "stats" / "total_trans")
            delta = 0
            if trans is not None:
                prev = self._prev_trans.get(c.name)
                delta = max(0, trans - prev) if prev is not None else 0
                self._prev_trans[c.name] = trans
            cooling.append(CoolingDevice(c.name, cur, mx, delta))
            if c.passive:
                busy = _busy_ms(read_text(c.path / "stats" / "time_in_state_ms"))
                if busy is not None:
                    throttle[f"{c.name}.cooling_ms"] = busy

        freqs = []
        for cpu, d in self._cpufreq:
            cur = read_int(d / "scaling_cur_freq")
            hw = read_int(d / "cpuinfo_cur_freq")
            if cur is None and hw is None:
                continue  # offline CPU
            freqs.append(
                CpuFreq(
                    cpu=cpu,
                    cur_khz=cur,
                    hw_khz=hw,
                    max_khz=read_int(d / "cpuinfo_max_freq"),
                    scaling_max_khz=read_int(d / "scaling_max_freq"),
                )
            )

        for key, path in self._x86:
            v = read_int(path)
            if v is not None:
                throttle[key] = v

        pi = self._read_pi()
        if pi is not None:
            throttle["pi.throttled"] = pi

        for h in self._hwmon:
            for stem, zone_name in h.temps:
                milli = read_int(h.path / f"{stem}_input")
                if milli is None:
                    continue
                trips = []
                for suffix, kind in (("max", "hot"), ("crit", "critical")):
                    limit = read_int(h.path / f"{stem}_{suffix}")
                    if limit is not None:
                        hyst = read_int(h.path / f"{stem}_{suffix}_hyst")
                        trips.append((kind, limit / 1000, (limit - hyst) / 1000 if hyst else 0.0))
                zones.append(ThermalZone(zone_name, milli / 1000, tuple(trips)))
            for f in h.values:
                v = read_int(h.path / f)
                if v is not None:
                    throttle[f"hwmon.{h.chip}.{f}"] = v
            for f, key, divisor in h.sensors:
                v = read_int(h.path / f)
                if v is not None:
                    sensors[key] = v / divisor

        return [
            ThermalSample(
                zones=tuple(zones),
                freqs=tuple(freqs),
                cooling=tuple(cooling),
                throttle=throttle,
                sensors=sensors,
                t_us=t_us,
            )
        ]

    def _read_zone(self, z: _Zone) -> ThermalZone | None:
        milli = read_int(z.path / "temp")
        if milli is None:
            return None
        trips = self._trips.get(z.name)
        if trips is None or self._ticks % self.trips_every == 0:
            trips = self._trips[z.name] = self._read_trips(z)
        return ThermalZone(z.name, milli / 1000, trips)

    @staticmethod
    def _read_trips(z: _Zone) -> tuple[tuple[str, float, float], ...]:
        trips = []
        n = 0
        while True:
            kind = read_text(z.path / f"trip_point_{n}_type")
            if kind is None:
                break
            temp = read_int(z.path / f"trip_point_{n}_temp")
            hyst = read_int(z.path / f"trip_point_{n}_hyst") or 0
            if temp is not None and temp > 0:  # 0 or below: a disabled trip (x86_pkg_temp)
                trips.append((kind, temp / 1000, hyst / 1000))
            n += 1
        return tuple(trips)

    def _read_pi(self) -> int | None:
        if self._pi_file is not None:
            text = read_text(self._pi_file)
            return parse_vcgencmd_throttled(text) if text else None
        if self._vcgencmd is not None:
            try:
                out = subprocess.run(
                    [self._vcgencmd, "get_throttled"],
                    capture_output=True,
                    text=True,
                    timeout=2,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                return None
            return parse_vcgencmd_throttled(out.stdout) if out.returncode == 0 else None
        return None


def _busy_ms(text: str | None) -> int | None:
    """Milliseconds spent in cooling states above 0, from ``time_in_state_ms``."""
    if not text:
        return None
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("state") and parts[0][5:] != "0":
            try:
                total += int(parts[1])
            except ValueError:
                continue
    return total
