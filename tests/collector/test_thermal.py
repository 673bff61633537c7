"""Thermal and throttle signals on recorded boards, played out by rewriting sysfs files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgescope_collector.samplers import Roots
from edgescope_collector.samplers.jetson import JetsonGpuSampler
from edgescope_collector.samplers.thermal import (
    PI_THROTTLED_BITS,
    ThermalSampler,
    find_pi_throttled,
    parse_vcgencmd_throttled,
    pi_throttled_flags,
)
from edgescope_tracing.records import GpuSample, ThermalSample

S = 1_000_000

if TYPE_CHECKING:
    from conftest import Board


def one(sampler: ThermalSampler, t_us: int) -> ThermalSample:
    (rec,) = sampler.sample(t_us)
    assert isinstance(rec, ThermalSample)
    return rec


def test_pi_throttled_flags_decode_every_bit() -> None:
    assert pi_throttled_flags(0) == []
    assert pi_throttled_flags(0x1) == ["under_voltage"]
    assert pi_throttled_flags(0x50005) == [
        "under_voltage",
        "throttled",
        "under_voltage_occurred",
        "throttled_occurred",
    ]
    assert pi_throttled_flags(0x80008) == ["soft_temp_limit", "soft_temp_limit_occurred"]
    assert pi_throttled_flags(0xF000F) == list(PI_THROTTLED_BITS.values())
    assert pi_throttled_flags(0x20000) == ["arm_freq_capped_occurred"]
    assert pi_throttled_flags(0x100) == []  # bits the firmware doesn't define are not named


def test_parse_throttled_from_vcgencmd_and_sysfs() -> None:
    assert parse_vcgencmd_throttled("throttled=0x50005\n") == 0x50005
    assert parse_vcgencmd_throttled("50005") == 0x50005
    assert parse_vcgencmd_throttled("0") == 0
    assert parse_vcgencmd_throttled('error=1 error_msg="Command not registered"') is None


def test_pi_under_voltage_and_throttling_play_out(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    sampler = ThermalSampler(b.roots)
    assert find_pi_throttled(b.roots.sysfs) is not None
    assert set(sampler.sources) == {"thermal_zones", "cpufreq", "pi_throttled", "hwmon"}
    idle = one(sampler, S)
    assert idle.throttle == {"pi.throttled": 0, "hwmon.rpi_volt.in0_lcrit_alarm": 0}
    assert idle.sensors == {}  # rpi_volt has the alarm only, no in0_input
    (zone,) = idle.zones  # the hwmon cpu_thermal mirror of the zone is not counted twice
    assert zone.name == "cpu-thermal" and zone.temp_c == 52.582
    assert zone.trips == (("critical", 110.0, 0.0),)
    assert [f.cur_khz for f in idle.freqs] == [1800000] * 4

    # A weak power supply: the firmware caps the ARM clock and flags under-voltage.
    b.write("sys/devices/platform/soc/soc:firmware/get_throttled", "50005")
    b.write("sys/class/hwmon/hwmon1/in0_lcrit_alarm", 1)
    b.write("sys/class/thermal/thermal_zone0/temp", 81234)
    for cpu in range(4):
        b.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", 600000)
        b.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_cur_freq", 600000)
    hot = one(sampler, 2 * S)
    assert hot.throttle["pi.throttled"] == 0x50005
    # One key for the firmware's bits: a reader decodes them (pi_throttled_flags).
    assert [k for k in hot.throttle if k.startswith("pi.")] == ["pi.throttled"]
    assert hot.throttle["hwmon.rpi_volt.in0_lcrit_alarm"] == 1
    assert hot.zones[0].temp_c == 81.234
    assert {(f.cur_khz, f.hw_khz, f.max_khz) for f in hot.freqs} == {(600000, 600000, 1800000)}

    # Power recovers: "now" bits clear, "occurred" bits stay until reboot.
    b.write("sys/devices/platform/soc/soc:firmware/get_throttled", "50000")
    after = one(sampler, 3 * S)
    assert pi_throttled_flags(after.throttle["pi.throttled"]) == [
        "under_voltage_occurred",
        "throttled_occurred",
    ]


def test_x86_counters_rise_and_frequency_is_capped(board: Callable[[str], Board]) -> None:
    b = board("x86-laptop")
    sampler = ThermalSampler(b.roots)
    assert "pi_throttled" in sampler.skipped and "jetson" not in " ".join(sampler.sources)
    first = one(sampler, S)
    names = [z.name for z in first.zones]
    # iwlwifi_1 can't be read; acpitz's hwmon mirror is left out; coretemp is its own chip
    assert names == [
        "acpitz",
        "INT3400 Thermal",
        "SEN1",
        "TCPU",
        "x86_pkg_temp",
        "coretemp/Package id 0",
        "coretemp/Core 0",
        "coretemp/Core 1",
    ]
    zones = {z.name: z for z in first.zones}
    assert zones["x86_pkg_temp"].trips == ()  # trips at 0 are disabled
    assert zones["SEN1"].trips == (("critical", 118.0, 0.0),)
    assert zones["TCPU"].trips == (
        ("critical", 110.0, 0.0),
        ("hot", 105.0, 0.0),
        ("passive", 100.0, 0.0),
    )
    assert zones["coretemp/Package id 0"].trips == (("hot", 100.0, 0.0), ("critical", 100.0, 0.0))
    assert first.throttle["cpu0.core_throttle_count"] == 2
    assert first.throttle["package0.package_throttle_count"] == 2
    assert "package1.package_throttle_count" not in first.throttle  # one package, said once
    # Only counters and 0/1 flags: a fan speed is neither; it is a sensor, as is a voltage.
    assert not any(k.startswith("hwmon.thinkpad.") for k in first.throttle)
    assert first.sensors == {"hwmon.BAT0.in0": 12.74, "hwmon.thinkpad.fan1": 2900.0}
    assert first.throttle["hwmon.coretemp.temp1_crit_alarm"] == 0
    assert "intel_powerclamp.cooling_ms" not in first.throttle  # it has no stats/
    assert [c.name for c in first.cooling][:4] == [f"Processor.{i}" for i in range(4)]
    assert {c.name: c.cur_state for c in first.cooling}["intel_powerclamp"] == -1
    assert all(f.hw_khz is None for f in first.freqs)  # intel_pstate: no cpuinfo_cur_freq

    # A long compile in a hot room: TCPU reaches its passive trip, the package throttles.
    b.write("sys/class/thermal/thermal_zone4/temp", 100000)
    tt = "sys/devices/system/cpu/cpu{}/thermal_throttle/{}"
    for cpu in range(4):
        b.write(tt.format(cpu, "core_throttle_count"), 9)
        b.write(tt.format(cpu, "package_throttle_count"), 5)
        b.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_max_freq", 2000000)
        b.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", 1995000)
    b.write("sys/class/hwmon/hwmon5/fan1_input", 4850)
    b.write("sys/class/thermal/cooling_device0/cur_state", 2)
    b.write("sys/class/thermal/cooling_device0/stats/total_trans", 3)
    b.write(
        "sys/class/thermal/cooling_device0/stats/time_in_state_ms",
        "state0\t900400\nstate1\t300\nstate2\t250\nstate3\t0",
    )
    hot = one(sampler, 2 * S)
    tcpu = {z.name: z for z in hot.zones}["TCPU"]
    assert tcpu.temp_c == 100.0 and ("passive", 100.0, 0.0) in tcpu.trips
    assert hot.throttle["cpu3.core_throttle_count"] == 9
    assert hot.throttle["package0.package_throttle_count"] == 5
    assert {(f.cur_khz, f.scaling_max_khz, f.max_khz) for f in hot.freqs} == {
        (1995000, 2000000, 4700000)
    }
    cd0 = hot.cooling[0]
    assert (cd0.cur_state, cd0.max_state, cd0.transitions) == (2, 3, 3)
    assert hot.throttle["Processor.0.cooling_ms"] == 550
    assert hot.throttle["Processor.1.cooling_ms"] == 0
    assert hot.sensors["hwmon.thinkpad.fan1"] == 4850.0


def test_cpu_going_offline_and_zone_disappearing(board: Callable[[str], Board]) -> None:
    b = board("x86-laptop")
    sampler = ThermalSampler(b.roots)
    one(sampler, S)
    b.remove("sys/devices/system/cpu/cpu3/cpufreq/scaling_cur_freq")
    b.remove("sys/class/thermal/thermal_zone0/temp")
    s = one(sampler, 2 * S)
    assert [f.cpu for f in s.freqs] == [0, 1, 2]
    assert "acpitz" not in [z.name for z in s.zones]


def test_jetson_fan_and_gpu_load(board: Callable[[str], Board]) -> None:
    b = board("jetson-orin")
    thermal = ThermalSampler(b.roots)
    gpu = JetsonGpuSampler.open(b.roots)
    assert isinstance(gpu, JetsonGpuSampler)
    one(thermal, S)
    (idle,) = gpu.sample(S)
    assert isinstance(idle, GpuSample)
    assert idle.name == "NVIDIA Jetson Orin Nano Developer Kit GPU"
    assert (idle.util_gpu, idle.sm_clock_mhz, idle.max_sm_clock_mhz) == (0.0, 306, 625)
    assert idle.temp_c == 47.125

    # Training starts: the GPU is busy, the fan spins up, tj-thermal passes an active trip.
    b.write("sys/devices/platform/gpu.0/load", 875)
    b.write("sys/devices/platform/gpu.0/devfreq/17000000.ga10b/cur_freq", 624750000)
    b.write("sys/class/thermal/thermal_zone1/temp", 71500)
    b.write("sys/class/thermal/thermal_zone3/temp", 64000)
    b.write("sys/class/thermal/cooling_device0/cur_state", 6)
    b.write("sys/class/thermal/cooling_device0/stats/total_trans", 19)
    tis = [81230, 4200, 0, 0, 0, 0, 1500, 0, 0, 0, 0]
    b.write(
        "sys/class/thermal/cooling_device0/stats/time_in_state_ms",
        "".join(f"state{i}\t{v}\n" for i, v in enumerate(tis)),
    )
    b.write("sys/class/hwmon/hwmon1/curr1_input", 2950)
    (busy,) = gpu.sample(2 * S)
    assert isinstance(busy, GpuSample)
    assert (busy.util_gpu, busy.sm_clock_mhz, busy.temp_c) == (87.5, 625, 71.5)
    s = one(thermal, 2 * S)
    fan = s.cooling[0]
    assert (fan.name, fan.cur_state, fan.max_state, fan.transitions) == ("pwm-fan", 6, 10, 5)
    assert "pwm-fan.cooling_ms" not in s.throttle  # a fan cools without slowing anything
    assert "hwmon.ina3221.curr1" not in s.throttle  # a current is not a throttle signal
    assert s.throttle["hwmon.ina3221.curr1_crit_alarm"] == 0
    # the INA3221 rails in volts and amperes; pwmfan's "rpm" is not a standard hwmon file
    assert s.sensors == {
        "hwmon.ina3221.curr1": 2.95,
        "hwmon.ina3221.curr2": 0.2,
        "hwmon.ina3221.curr3": 0.32,
        "hwmon.ina3221.in1": 5.072,
        "hwmon.ina3221.in2": 5.064,
        "hwmon.ina3221.in3": 5.064,
    }
    tj = {z.name: z for z in s.zones}["tj-thermal"]
    assert tj.temp_c == 64.0 and tj.trips[1] == ("active", 63.0, 8.0)


def test_two_chips_of_one_name_and_power(board: Callable[[str], Board]) -> None:
    """A Jetson AGX Orin has two INA3221 monitors; a desktop GPU (amdgpu) gives power in µW."""
    b = board("jetson-orin")
    shutil.copytree(b.path / "sys/class/hwmon/hwmon1", b.path / "sys/class/hwmon/hwmon2")
    b.write("sys/class/hwmon/hwmon2/in1_input", 5088)
    for name, value in [
        ("name", "amdgpu"),
        ("in0_input", 806),  # vddgfx, mV
        ("in0_label", "vddgfx"),
        ("power1_input", 32_000_000),  # µW
        ("fan1_input", 1195),
        ("temp1_input", 45000),
        ("temp1_label", "edge"),
    ]:
        b.write(f"sys/class/hwmon/hwmon3/{name}", value)
    s = one(ThermalSampler(b.roots), S)
    assert s.sensors["hwmon.ina3221.0.in1"] == 5.072
    assert s.sensors["hwmon.ina3221.1.in1"] == 5.088
    assert "hwmon.ina3221.1.curr1_crit_alarm" in s.throttle
    assert {k: v for k, v in s.sensors.items() if k.startswith("hwmon.amdgpu.")} == {
        "hwmon.amdgpu.fan1": 1195.0,
        "hwmon.amdgpu.in0": 0.806,
        "hwmon.amdgpu.power1": 32.0,
    }
    assert "amdgpu/edge" in [z.name for z in s.zones]


def test_jetson_nano_layout(board: Callable[[str], Board]) -> None:
    """L4T 32 (Nano, TX2): the GPU sits under /sys/devices, its devfreq named 57000000.gpu."""
    b = board("jetson-orin")
    (b.path / "sys/devices/platform/gpu.0").rename(b.path / "sys/devices/gpu.0")
    devfreq = b.path / "sys/devices/gpu.0/devfreq"
    (devfreq / "17000000.ga10b").rename(devfreq / "57000000.gpu")
    b.write("sys/devices/gpu.0/load", 512)
    gpu = JetsonGpuSampler.open(b.roots)
    assert isinstance(gpu, JetsonGpuSampler)
    (s,) = gpu.sample(S)
    assert isinstance(s, GpuSample)
    assert (s.util_gpu, s.sm_clock_mhz) == (51.2, 306)


def test_absent_sources_have_reasons(board: Callable[[str], Board]) -> None:
    b = board("rpi4")
    b.remove("sys/class")
    b.remove("sys/devices")
    sampler = ThermalSampler(b.roots)
    assert sampler.sources == []
    assert set(sampler.skipped) == {
        "thermal_zones",
        "cooling_devices",
        "cpufreq",
        "x86_thermal_throttle",
        "pi_throttled",
        "hwmon",
    }
    assert sampler.skipped["thermal_zones"].startswith("no thermal zones under ")
    assert isinstance(JetsonGpuSampler.open(b.roots), str)


def test_live_sysfs_of_this_machine() -> None:
    sampler = ThermalSampler(Roots())
    (s,) = sampler.sample(S)
    assert isinstance(s, ThermalSample)
    if "thermal_zones" in sampler.skipped and "hwmon" in sampler.skipped:
        assert s.zones == ()
    assert set(sampler.sources).isdisjoint(sampler.skipped)
    assert set(sampler.sources) | set(sampler.skipped) == {
        "thermal_zones",
        "cooling_devices",
        "cpufreq",
        "x86_thermal_throttle",
        "pi_throttled",
        "hwmon",
    }
