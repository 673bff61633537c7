"""Energy counters and power readings from sysfs: one :class:`PowerSample` per call.

Sources, all under ``roots.sysfs`` (each named in ``PowerSampler.skipped`` with the reason when
absent); the reading's ``source`` and ``name`` in the record are given in brackets:

- ``rapl``: powercap zones ``class/powercap/intel-rapl:*`` (AMD's RAPL shows up the same way):
  ``energy_uj`` (a counter that wraps past ``max_energy_range_uj``), the zone's ``name``, and
  the long-term limit ``constraint_0_power_limit_uw`` where it is above 0. Subzones
  (``intel-rapl:0:0``, named ``core``, ``uncore``, ``dram``) are named under their package
  (``package-0/core``). ``core`` and ``uncore`` are inside their package and do not count
  toward the source's total; ``dram`` is not inside it and does. Where a ``psys`` zone (the
  whole platform, package included) exists, it alone counts. Since Linux 5.10 ``energy_uj`` is
  readable by root only (CVE-2020-8694): the source is then named as absent, with that reason.
  Power is the counter's rate since the previous sample (wrap-around handled).
- ``hwmon_power`` (source ``hwmon``): ``class/hwmon/hwmon*`` inputs ``energyN_input`` (µJ, a
  counter) and ``powerN_input`` (µW; ``powerN_average`` where there is no input), named
  ``<chip>/<label or stem>``. A chip with both for one channel gives one reading. An ACPI
  ``power_meter`` measures the whole machine: its readings go to the ``board`` source, which
  :mod:`edgescope_tracing.energy` takes as the device's total in place of the sum.
  INA3221 chips are the next source, not this one.
- ``ina3221``: the Jetson INA3221 rail monitors. JetPack 5 and later: hwmon chips named
  ``ina3221`` with ``inN_label`` (the rail), ``inN_input`` (mV) and ``currN_input`` (mA),
  power = V x I. Older JetPack: the iio device of the ``ina3221x`` driver
  (``bus/i2c/drivers/ina3221x/*/iio:device*``) with ``rail_name_N``, ``in_powerN_input`` (mW),
  ``in_currentN_input``, ``in_voltageN_input``. Rails are named ``<chip>/<rail>``; where a
  board input rail exists (``VDD_IN``, ``POM_5V_IN``), it counts alone, the rails inside it do
  not; otherwise every rail counts.
- ``pi_pmic``: the Raspberry Pi 5's PMIC (``vcgencmd pmic_read_adc``) is not read: always
  named as absent, with that reason.

NVML's GPU energy (``nvmlDeviceGetTotalEnergyConsumption``) is read by the NVML sampler, which
holds the GPU handles (:mod:`.nvml`), as source ``nvml``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgescope_tracing.energy import counter_delta
from edgescope_tracing.records import PowerReading, PowerSample, Record

from . import Roots
from ._files import numbered, read_int, read_text

__all__ = ["PowerSampler", "BOARD_INPUT_RAILS", "RAPL_PARTS"]

RAPL_PARTS = frozenset({"core", "uncore"})
"""RAPL subzones measured inside their package (``dram`` is not: it counts)."""
BOARD_INPUT_RAILS = frozenset({"VDD_IN", "POM_5V_IN"})
"""Jetson INA3221 rails that measure the whole module's input (Orin and Xavier; Nano, TX2)."""

_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_HWMON_ENERGY = re.compile(r"^(energy|power)(\d+)_(input|average)$")
_INA_IN = re.compile(r"^in(\d+)_label$")
_IIO_RAIL = re.compile(r"^rail_name_(\d+)$")


@dataclass(frozen=True, slots=True)
class _Counter:
    """A reading from files: a counter (µJ) and/or a power file (µW), scaled."""

    source: str
    name: str
    energy: Path | None = None
    power: Path | None = None
    power_scale: int = 1
    """What the power file's number is multiplied by to give µW (mW files: 1000)."""
    volts: Path | None = None
    amps: Path | None = None
    """Power as volts (mV) x current (mA) where there is no power file: µW = mV x mA."""
    range_uj: int | None = None
    limit_uw: int | None = None
    total: bool = True


class PowerSampler:
    """RAPL zones, hwmon energy and power inputs, the Jetson INA3221 rails."""

    name = "power"

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        self.skipped: dict[str, str] = {}
        self.sources: list[str] = []
        self._readings: list[_Counter] = []
        self._rapl(roots.sysfs)
        self._hwmon(roots.sysfs)
        self._ina3221_iio(roots.sysfs)
        if any(r.source == "ina3221" for r in self._readings):
            self.sources.append("ina3221")
        else:
            self.skipped["ina3221"] = (
                f"no INA3221 rail monitor (no hwmon 'ina3221' under {roots.sysfs}/class/hwmon, "
                f"no ina3221x iio device under {roots.sysfs}/bus/i2c/drivers): not a Jetson"
            )
        self.skipped["pi_pmic"] = (
            "the Raspberry Pi 5 PMIC (vcgencmd pmic_read_adc) is not read by this collector"
        )
        self._prev: dict[tuple[str, str], tuple[int, int]] = {}

    def close(self) -> None:
        pass

    # --- discovery ---------------------------------------------------------------------

    def _rapl(self, sysfs: Path) -> None:
        root = sysfs / "class" / "powercap"
        try:
            names = sorted(e.name for e in root.iterdir())
        except OSError:
            names = []
        zones: list[tuple[tuple[int, int], Path, str]] = []
        for n in names:
            m = _ZONE.match(n)
            if m:
                key = (int(m.group(1)), int(m.group(2)) if m.group(2) is not None else -1)
                zones.append((key, root / n, read_text(root / n / "name") or n))
        if not zones:
            self.skipped["rapl"] = f"no RAPL zones (intel-rapl:*) under {root}"
            return
        unreadable = [p for _, p, _ in zones if not os.access(p / "energy_uj", os.R_OK)]
        if len(unreadable) == len(zones):
            self.skipped["rapl"] = (
                f"RAPL zones under {root} but energy_uj is not readable by uid {os.geteuid()} "
                "(root only since Linux 5.10, CVE-2020-8694): run the collector as root, or "
                "grant read access (chmod o+r .../energy_uj)"
            )
            return
        zones.sort()
        packages = {k[0]: name for k, _, name in zones if k[1] == -1}
        psys = any(name == "psys" for k, _, name in zones if k[1] == -1)
        for (pkg, sub), path, zname in zones:
            if sub == -1:
                name, total = zname, (zname == "psys") if psys else True
            else:
                name = f"{packages.get(pkg, f'intel-rapl:{pkg}')}/{zname}"
                total = not psys and zname not in RAPL_PARTS
            limit = read_int(path / "constraint_0_power_limit_uw")
            self._readings.append(
                _Counter(
                    "rapl",
                    name,
                    energy=path / "energy_uj",
                    range_uj=read_int(path / "max_energy_range_uj"),
                    limit_uw=limit if limit else None,
                    total=total,
                )
            )
        self.sources.append("rapl")

    def _hwmon(self, sysfs: Path) -> None:
        root = sysfs / "class" / "hwmon"
        found = False
        dirs = [p for _, p in numbered(root, "hwmon")]
        chips = [read_text(p / "name") or p.name for p in dirs]
        counts: dict[str, int] = {}
        for c in chips:
            counts[c] = counts.get(c, 0) + 1
        seen: dict[str, int] = {}
        for p, raw in zip(dirs, chips, strict=True):
            chip = raw
            if counts[raw] > 1:
                chip = f"{raw}.{seen.get(raw, 0)}"
                seen[raw] = seen.get(raw, 0) + 1
            try:
                files = sorted(f.name for f in p.iterdir())
            except OSError:
                continue
            if raw == "ina3221":
                self._ina3221_hwmon(chip, p, files)
                continue
            source = "board" if raw == "power_meter" else "hwmon"
            channels: dict[int, dict[str, Path]] = {}
            for f in files:
                m = _HWMON_ENERGY.match(f)
                if m:
                    kind, n, how = m.group(1), int(m.group(2)), m.group(3)
                    slot = kind if how == "input" else f"{kind}_avg"
                    channels.setdefault(n, {})[slot] = p / f
            for n, got in sorted(channels.items()):
                power = got.get("power") or got.get("power_avg")
                energy = got.get("energy") or got.get("energy_avg")
                label = (
                    read_text(p / f"power{n}_label") or read_text(p / f"energy{n}_label") or None
                )
                self._readings.append(
                    _Counter(
                        source,
                        f"{chip}/{label or f'channel{n}'}",
                        energy=energy,
                        power=power,
                        limit_uw=read_int(p / f"power{n}_cap") or None,
                    )
                )
                found = True
        if found:
            self.sources.append("hwmon_power")
        else:
            self.skipped["hwmon_power"] = f"no hwmon energy or power inputs under {root}"

    def _ina3221_hwmon(self, chip: str, p: Path, files: list[str]) -> None:
        rails = []
        for f in files:
            m = _INA_IN.match(f)
            if m and f"curr{m.group(1)}_input" in files:
                n = m.group(1)
                rail = read_text(p / f) or f"in{n}"
                rails.append((rail, p / f"in{n}_input", p / f"curr{n}_input"))
        self._add_rails(chip, [(r, None, v, a) for r, v, a in rails])

    def _ina3221_iio(self, sysfs: Path) -> None:
        drivers = sysfs / "bus" / "i2c" / "drivers" / "ina3221x"
        for dev in sorted(drivers.glob("*/iio:device*")):
            try:
                files = sorted(f.name for f in dev.iterdir())
            except OSError:
                continue
            rails: list[tuple[str, Path | None, Path, Path]] = []
            for f in files:
                m = _IIO_RAIL.match(f)
                if m:
                    n = m.group(1)
                    rail = read_text(dev / f) or f"rail{n}"
                    rails.append(
                        (
                            rail,
                            dev / f"in_power{n}_input",
                            dev / f"in_voltage{n}_input",
                            dev / f"in_current{n}_input",
                        )
                    )
            self._add_rails(f"ina3221x.{dev.parent.name}", rails)

    def _add_rails(self, chip: str, rails: list[tuple[str, Path | None, Path, Path]]) -> None:
        board = any(r in BOARD_INPUT_RAILS for r, _, _, _ in rails)
        for rail, power, volts, amps in rails:
            self._readings.append(
                _Counter(
                    "ina3221",
                    f"{chip}/{rail}",
                    power=power,
                    power_scale=1000,
                    volts=volts,
                    amps=amps,
                    total=(rail in BOARD_INPUT_RAILS) if board else True,
                )
            )

    # --- sampling ------------------------------------------------------------------------

    def sample(self, t_us: int) -> list[Record]:
        readings = []
        for c in self._readings:
            energy = read_int(c.energy) if c.energy is not None else None
            power: int | None = None
            if c.power is not None:
                raw = read_int(c.power)
                power = raw * c.power_scale if raw is not None and raw >= 0 else None
            if power is None and c.volts is not None and c.amps is not None:
                mv, ma = read_int(c.volts), read_int(c.amps)
                if mv is not None and ma is not None and mv >= 0 and ma >= 0:
                    power = mv * ma
            if energy is not None and energy < 0:
                energy = None
            if energy is not None and power is None:
                power = self._rate(c, energy, t_us)
            if energy is None and power is None:
                continue
            readings.append(
                PowerReading(c.source, c.name, energy, power, c.range_uj, c.limit_uw, c.total)
            )
        return [PowerSample(tuple(readings), t_us=t_us)] if readings else []

    def _rate(self, c: _Counter, energy: int, t_us: int) -> int | None:
        """The counter's power since the previous sample, in µW (None on the first)."""
        key = (c.source, c.name)
        prev = self._prev.get(key)
        self._prev[key] = (t_us, energy)
        if prev is None or t_us <= prev[0]:
            return None
        delta, _ = counter_delta(prev[1], energy, c.range_uj)
        return delta * 1_000_000 // (t_us - prev[0])
