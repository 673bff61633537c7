"""The power sampler against recorded sysfs trees: RAPL (with a wrap), hwmon, Jetson INA3221.

Each test copies a tree (``board``), samples it, rewrites the counters as the device would
between samples, and checks the records and what :mod:`edgescope_tracing.energy` makes of
them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from edgescope_collector.doctor import diagnose
from edgescope_collector.samplers import ProcessWatch, default_samplers
from edgescope_collector.samplers import power as power_module
from edgescope_collector.samplers.nvml import NvmlSampler, power_reading_from_readings
from edgescope_collector.samplers.power import PowerSampler
from edgescope_tracing.energy import EnergyMeter
from edgescope_tracing.records import GpuSample, PowerReading, PowerSample

if TYPE_CHECKING:
    from conftest import Board

RAPL = "sys/devices/virtual/powercap/intel-rapl"
S = 1_000_000  # one second in µs


def readings(records: list[Any]) -> dict[str, PowerReading]:
    (p,) = records
    assert isinstance(p, PowerSample)
    return {r.name: r for r in p.readings}


def test_rapl_on_an_intel_laptop_with_psys(board: Callable[[str], Board]) -> None:
    b = board("x86-laptop")
    s = PowerSampler(b.roots)
    assert s.sources == ["rapl"]
    assert set(s.skipped) == {"hwmon_power", "ina3221", "pi_pmic"}
    first = readings(s.sample(10 * S))
    assert sorted(first) == ["package-0", "package-0/core", "package-0/uncore", "psys"]
    pkg = first["package-0"]
    assert (pkg.source, pkg.energy_uj, pkg.range_uj) == ("rapl", 72038517393, 262143328850)
    assert pkg.limit_uw == 15_000_000  # constraint_0 (long_term)
    assert pkg.power_uw is None  # a rate needs a previous sample
    # psys covers the whole platform, the package included: it alone counts
    assert {n for n, r in first.items() if r.total} == {"psys"}
    assert first["package-0/core"].limit_uw is None  # a limit of 0 is no limit
    # 2 s later the package used 30 J (15 W) and psys 50 J (25 W)
    b.write(f"{RAPL}/intel-rapl:0/energy_uj", 72038517393 + 30_000_000)
    b.write(f"{RAPL}/intel-rapl:1/energy_uj", 147725441052 + 50_000_000)
    second = readings(s.sample(12 * S))
    assert second["package-0"].power_uw == 15_000_000
    assert second["psys"].power_uw == 25_000_000
    assert second["package-0/core"].power_uw == 0


def test_rapl_counter_wraps_past_its_range(board: Callable[[str], Board]) -> None:
    b = board("x86-server")
    s = PowerSampler(b.roots)
    assert s.sources == ["rapl", "hwmon_power"]
    meter = EnergyMeter()
    rng = 65532610987
    # package-0 is 2 J below its range: it wraps between the samples
    b.write(f"{RAPL}/intel-rapl:0/energy_uj", rng - 2_000_000)
    for rec in s.sample(100 * S):
        meter.add(rec)
    b.write(f"{RAPL}/intel-rapl:0/energy_uj", 118_000_000)  # 2 J to the wrap, 118 J after
    b.write(f"{RAPL}/intel-rapl:1/energy_uj", 38200147331 + 100_000_000)
    got = s.sample(101 * S)
    assert readings(got)["package-0"].power_uw == 120_000_000  # 120 W, not minus 65 kW
    for rec in got:
        meter.add(rec)
    assert meter.wraps == 1 and meter.resets == 0
    latest = meter.latest
    assert latest is not None and latest.joules["rapl"] == pytest.approx(220.0)
    # The ACPI power meter measures the whole server: it is the device's total
    assert latest.joules["board"] == pytest.approx(287.0)
    assert latest.total == pytest.approx(287.0)


def test_hwmon_energy_and_power_inputs(board: Callable[[str], Board]) -> None:
    b = board("x86-server")
    s = PowerSampler(b.roots)
    first = readings(s.sample(1 * S))
    meter = first["power_meter/channel1"]
    assert (meter.source, meter.power_uw, meter.energy_uj) == ("board", 287_000_000, None)
    ina = first["ina228/channel1"]
    assert (ina.source, ina.energy_uj, ina.power_uw) == ("hwmon", 9123456789, 30_150_000)
    # an energy counter read back as lower than before, with no range: it restarted
    m = EnergyMeter()
    m.add(PowerSample(tuple(first.values()), t_us=1 * S))
    b.write("sys/class/hwmon/hwmon1/energy1_input", 4_000_000)
    m.add(s.sample(2 * S)[0])
    assert m.resets == 1
    assert m.latest is not None and m.latest.joules["hwmon"] == pytest.approx(4.0)


def test_jetson_ina3221_rails_through_hwmon(board: Callable[[str], Board]) -> None:
    b = board("jetson-orin")
    s = PowerSampler(b.roots)
    assert s.sources == ["ina3221"] and "rapl" in s.skipped
    first = readings(s.sample(1 * S))
    assert sorted(first) == ["ina3221/VDD_CPU_GPU_CV", "ina3221/VDD_IN", "ina3221/VDD_SOC"]
    vin = first["ina3221/VDD_IN"]
    assert vin.power_uw == 5072 * 1216  # mV x mA = µW: 6.17 W
    assert vin.total and not first["ina3221/VDD_SOC"].total  # the rails inside VDD_IN
    # The board under load for 10 s: 5.07 V x 2.95 A
    b.write("sys/class/hwmon/hwmon1/curr1_input", 2950)
    meter = EnergyMeter()
    meter.add(s.sample(1 * S)[0])
    meter.add(s.sample(11 * S)[0])
    assert meter.latest is not None
    assert meter.latest.total == pytest.approx(5.072 * 2.95 * 10, rel=1e-6)


def test_jetson_nano_ina3221x_rails_through_iio(board: Callable[[str], Board]) -> None:
    b = board("jetson-nano")
    s = PowerSampler(b.roots)
    assert s.sources == ["ina3221"]
    first = readings(s.sample(1 * S))
    vin = first["ina3221x.6-0040/POM_5V_IN"]
    assert vin.power_uw == 4_912_000 and vin.total  # in_power0_input is in mW
    assert not first["ina3221x.6-0040/POM_5V_CPU"].total
    # A rail whose power file is unreadable falls back to volts x amps
    b.remove("sys/devices/7000c400.i2c/i2c-6/6-0040/iio:device0/in_power2_input")
    again = readings(s.sample(2 * S))
    assert again["ina3221x.6-0040/POM_5V_CPU"].power_uw == 4992 * 168


def test_a_board_without_sources_says_why(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    s = PowerSampler(b.roots)
    assert s.sources == [] and s.sample(1) == []
    assert "pmic_read_adc" in s.skipped["pi_pmic"] and "not read" in s.skipped["pi_pmic"]
    samplers, skipped = default_samplers(b.roots, ProcessWatch())
    assert "power" not in {x.name for x in samplers}
    assert {"rapl", "hwmon_power", "ina3221", "pi_pmic"} <= set(skipped)


def test_doctor_names_the_energy_sources(board: Callable[[str], Board]) -> None:
    d = diagnose(board("x86-laptop").roots, backends=False)
    (power,) = (c for c in d.samplers if c.name == "power")
    assert power.ok and power.sources == ("rapl",)
    assert "ina3221" in d.skipped and "pi_pmic" in d.skipped
    (note,) = (n for n in d.notes if n.startswith("energy sources"))
    assert (
        note.startswith("energy sources: rapl;") and "absent: hwmon_power, ina3221, pi_pmic" in note
    )
    d = diagnose(board("rpi4").roots, backends=False)
    (power,) = (c for c in d.samplers if c.name == "power")
    assert not power.ok
    assert any(n.startswith("energy sources: none") for n in d.notes)


def test_nvml_total_energy_becomes_a_power_reading() -> None:
    r = power_reading_from_readings(
        0, {"energy_mj": 48_000_123, "power_mw": 79156, "power_limit_mw": 700000}
    )
    assert r == PowerReading("nvml", "gpu0", 48_000_123_000, 79_156_000, None, 700_000_000)
    assert power_reading_from_readings(1, {"energy_mj": None, "power_mw": None}) is None

    class NVMLError(Exception):
        pass

    energy = iter([1_000_000, 1_600_000])  # mJ: 600 J in between

    def fail(*_: Any) -> Any:
        raise NVMLError("Not Supported")

    nvml = SimpleNamespace(
        NVMLError=NVMLError,
        NVML_CLOCK_SM=0,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetCurrentClocksEventReasons=fail,
        nvmlDeviceGetTotalEnergyConsumption=lambda _h: next(energy),
        nvmlDeviceGetPowerUsage=lambda _h: 600_000,
        nvmlDeviceGetEnforcedPowerLimit=lambda _h: 700_000,
    )
    for name in (
        "nvmlDeviceGetMaxClockInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses",
    ):
        setattr(nvml, name, fail)
    sampler = NvmlSampler(nvml, [(0, "NVIDIA H200", object())])
    meter = EnergyMeter()
    for t in (1 * S, 2 * S):
        power, gpu = sampler.sample(t)
        assert isinstance(gpu, GpuSample) and gpu.power_mw == 600_000
        assert isinstance(power, PowerSample)
        meter.add(power)
        meter.add_gpu(gpu)  # ignored: the counter is there
    assert meter.latest is not None and meter.latest.joules == {"nvml": pytest.approx(600.0)}


def test_rapl_readable_by_root_only_is_said(
    board: Callable[[str], Board], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Since Linux 5.10 ``energy_uj`` is 0400 root (CVE-2020-8694). The tests run as root, who
    reads every file, so the permission check is made to answer as for another user."""
    b = board("x86-laptop")
    real = power_module.os.access
    monkeypatch.setattr(
        power_module.os,
        "access",
        lambda p, m: False if str(p).endswith("energy_uj") else real(p, m),
    )
    s = PowerSampler(b.roots)
    assert "rapl" not in s.sources
    assert "CVE-2020-8694" in s.skipped["rapl"] and "root" in s.skipped["rapl"]
