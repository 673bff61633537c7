"""Power limits holding the clocks down, from the real samplers over a recorded laptop tree:
the RAPL package at its 15 W limit while the CPUs fall to 1.2 GHz of 4.7 GHz; and a GPU whose
NVML reasons say ``sw_power_cap``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgescope_collector.detectors import Detectors, PowerCap, StepTimeRegression
from edgescope_collector.samplers.power import PowerSampler
from edgescope_collector.samplers.thermal import ThermalSampler
from edgescope_tracing.records import Event, GpuSample, Metrics, Record

if TYPE_CHECKING:
    from conftest import Board

S = 1_000_000
T0 = 1_795_800_000 * S
PKG = "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
PSYS = "sys/devices/virtual/powercap/intel-rapl/intel-rapl:1/energy_uj"


def play(b: Board, watts: list[float], mhz: list[int]) -> list[Record]:
    """One sample a second of both samplers while the package draws ``watts[i]`` and the
    CPUs run at ``mhz[i]``."""
    power, thermal = PowerSampler(b.roots), ThermalSampler(b.roots)
    energy = int(b.read(PKG))
    out: list[Record] = []
    for i, (w, f) in enumerate(zip(watts, mhz, strict=True)):
        energy += int(w * 1e6)
        b.write(PKG, energy)
        b.write(PSYS, energy + 5_000_000 * i)
        for cpu in range(4):
            b.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f * 1000)
        t = T0 + i * S
        out.extend(power.sample(t))
        out.extend(thermal.sample(t))
    return out


def events(records: list[Record]) -> list[Event]:
    d = PowerCap()
    return [e for r in records for e in d.feed(r)]


def test_a_board_held_at_its_power_limit(board: Callable[[str], Board]) -> None:
    b = board("x86-laptop")
    # 4 s idle-ish, 6 s at the 15 W limit with the clocks down, 4 s back to normal
    watts = [6.0] * 4 + [14.9] * 6 + [8.0] * 4
    mhz = [2800] * 4 + [1200] * 6 + [4500] * 4
    got = events(play(b, watts, mhz))
    assert [(e.severity, e.run) for e in got] == [(1, -1), (0, -1)]
    start, end = got
    assert start.message == (
        "power limit holds the CPU clocks down: package-0 at 14.9 W of its 15 W limit (RAPL), "
        "cpu0 at 1200 MHz of 4700 MHz"
    )
    assert start.t_us == T0 + 6 * S  # the third capped second
    assert start.detail["limit_uw"] == 15_000_000 and start.detail["since_us"] == T0 + 4 * S
    assert end.detail["recovered"] is True and "no longer" in end.message


def test_clocks_down_without_the_power_limit_is_not_a_power_cap(
    board: Callable[[str], Board],
) -> None:
    b = board("x86-laptop")
    assert events(play(b, [6.0] * 8, [1200] * 8)) == []  # slow clocks at 6 W: not the limit
    assert events(play(b, [15.0] * 8, [4600] * 8)) == []  # at the limit, full speed: no cap


def test_a_slow_step_names_the_power_cap(board: Callable[[str], Board]) -> None:
    """The step-time detector names "power-capped" when the slowdown coincides with it."""
    b = board("x86-laptop")
    samples = play(b, [6.0] * 20 + [15.0] * 10, [4500] * 20 + [1200] * 10)
    d = StepTimeRegression()
    out: list[Event] = []
    steps = [(k, T0 + k * 50_000, 0.05 if k < 400 else 0.15) for k in range(600)]
    stream: list[Record] = [*samples]
    stream += [Metrics(0, "step_time", (k,), (t,), (v,)) for k, t, v in steps]
    for r in sorted(stream, key=lambda r: r.t_us):
        out.extend(d.feed(r))
    out.extend(d.flush())
    (slow,) = [e for e in out if e.severity == 1]
    assert "power-capped: package-0 at 15.0 W of its 15 W limit (RAPL)" in slow.message
    assert slow.detail["signals"][0]["kind"] == "power_cap"  # type: ignore[index]


def test_a_gpu_at_its_power_cap() -> None:
    def gpu(i: int, reasons: int, power: int) -> GpuSample:
        return GpuSample(
            0,
            "NVIDIA H200",
            power_mw=power,
            power_limit_mw=700_000,
            sm_clock_mhz=1410,
            max_sm_clock_mhz=1980,
            clock_event_reasons=reasons,
            t_us=T0 + i * S,
        )

    recs: list[Record] = [gpu(i, 0x0, 600_000) for i in range(3)]
    recs += [gpu(3 + i, 0x4, 699_000) for i in range(4)]
    recs += [gpu(7 + i, 0x1, 80_000) for i in range(3)]  # idle: not capped
    d = Detectors()
    got = [e for r in recs for e in d.feed(r) if e.detail.get("detector") == "power_cap"]
    assert [e.message for e in got] == [
        "power limit holds GPU 0's clocks down: 699 W of its 700 W limit (sw_power_cap), "
        "SM clock 1410 of 1980 MHz",
        "power limit no longer holds GPU 0's clocks down (after 6 s)",
    ]
