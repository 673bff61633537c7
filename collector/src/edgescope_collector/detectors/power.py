"""Power limits that hold the clocks down: a board's RAPL limit, a GPU's power cap."""

from __future__ import annotations

from dataclasses import dataclass

from edgescope_tracing.causes import power_cap_text
from edgescope_tracing.energy import GPU_POWER_CAP_MASK, board_power_cap, gpu_power_capped
from edgescope_tracing.records import Event, GpuSample, PowerSample, Record, ThermalSample
from edgescope_tracing.signals import clock_event_reason_names

from .base import anomaly, duration

__all__ = ["PowerCap"]


@dataclass
class _Episode:
    capped: int = 0
    """Consecutive samples capped (while not raised) or not capped (while raised)."""
    since: int | None = None
    raised: bool = False


class PowerCap:
    """The power limit holds the clocks down, for ``min_samples`` samples in a row.

    - A board: a RAPL reading at 95 % of its limit or more (``constraint_0``, the long-term
      limit) while a CPU runs below 85 % of its maximum frequency or its ``scaling_max`` is
      lowered (:func:`edgescope_tracing.energy.board_power_cap`), read at a power record and
      the thermal record of the same instant.
    - A GPU: NVML's clock-event reasons say ``sw_power_cap`` or ``hw_power_brake_slowdown``
      and not idle.

    One warning when an episode starts (device-wide: ``run`` -1) and one info event when it has
    been over for ``min_samples`` samples. Defaults: 3 samples (3 s at the collector's 1 Hz): a
    limit touched for a moment is the governor at work, not a cap.
    """

    name = "power_cap"

    def __init__(self, min_samples: int = 3) -> None:
        self.min_samples = min_samples
        self._episodes: dict[str, _Episode] = {}
        self._power: PowerSample | None = None
        self._thermal: ThermalSample | None = None

    def forget(self, run: int) -> None:
        """Nothing is kept per run: power limits are the device's."""

    def flush(self) -> list[Event]:
        return []

    def feed(self, rec: Record) -> list[Event]:
        if isinstance(rec, GpuSample):
            return self._gpu(rec)
        if isinstance(rec, PowerSample) and any(r.source == "rapl" for r in rec.readings):
            self._power = rec
        elif isinstance(rec, ThermalSample):
            self._thermal = rec
        else:
            return []
        p, th = self._power, self._thermal
        if p is None or th is None or p.t_us != th.t_us:
            return []  # the other sample of this instant is still to come
        cap = board_power_cap(p, th)
        text = f"power limit holds the CPU clocks down: {power_cap_text(cap)}" if cap else ""
        detail: dict[str, object] = {}
        if cap is not None:
            detail = {
                "reading": cap.reading,
                "power_uw": cap.power_uw,
                "limit_uw": cap.limit_uw,
                "cpu": cap.cpu,
                "khz": cap.khz,
                "max_khz": cap.max_khz,
            }
        return self._step("board", cap is not None, rec.t_us, text, detail)

    def _gpu(self, g: GpuSample) -> list[Event]:
        capped = gpu_power_capped(g)
        text = ""
        detail: dict[str, object] = {"gpu": g.index}
        if capped:
            reasons = [
                n
                for n in clock_event_reason_names((g.clock_event_reasons or 0) & GPU_POWER_CAP_MASK)
            ]
            power = f"{g.power_mw / 1000:.0f} W" if g.power_mw is not None else "its power"
            limit = f" of its {g.power_limit_mw / 1000:.0f} W limit" if g.power_limit_mw else ""
            clock = (
                f", SM clock {g.sm_clock_mhz} of {g.max_sm_clock_mhz} MHz"
                if g.sm_clock_mhz is not None and g.max_sm_clock_mhz
                else ""
            )
            text = (
                f"power limit holds GPU {g.index}'s clocks down: {power}{limit} "
                f"({', '.join(reasons)}){clock}"
            )
            detail.update(
                reasons=reasons,
                power_mw=g.power_mw,
                limit_mw=g.power_limit_mw,
                sm_clock_mhz=g.sm_clock_mhz,
                max_sm_clock_mhz=g.max_sm_clock_mhz,
            )
        return self._step(f"gpu{g.index}", capped, g.t_us, text, detail)

    def _step(
        self, key: str, capped: bool, t: int, text: str, detail: dict[str, object]
    ) -> list[Event]:
        ep = self._episodes.setdefault(key, _Episode())
        if capped != ep.raised:
            ep.capped += 1
            if ep.capped == 1 and capped:
                ep.since = t
        else:
            ep.capped = 0
        if ep.capped < self.min_samples:
            return []
        ep.capped = 0
        if capped:
            ep.raised = True
            return [anomaly(self.name, text, -1, 1, t, source=key, since_us=ep.since, **detail)]
        ep.raised = False
        lasted = (t - (ep.since or t)) / 1e6
        where = "the CPU" if key == "board" else f"GPU {key.removeprefix('gpu')}"
        return [
            anomaly(
                self.name,
                f"power limit no longer holds {where}'s clocks down (after {duration(lasted)})",
                -1,
                0,
                t,
                source=key,
                recovered=True,
            )
        ]
