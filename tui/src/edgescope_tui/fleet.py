"""The fleet as a broker tells it: devices with presence and summary (no Textual, no MQTT).

Fed with retained ``birth``, ``death`` and ``summary`` messages (:mod:`.sources.mqtt` brings
them); what the fleet screen and ``edgescope ls --mqtt`` show. A device is online while its
birth has no death of the same session (:func:`edgescope_tracing.fleet.is_online`); a message
that is not what it claims is counted in ``malformed`` and changes nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from edgescope_tracing.fleet import (
    Birth,
    Death,
    FleetPayloadError,
    decode_birth,
    decode_death,
    decode_summary,
    is_online,
    parse_topic,
)
from edgescope_tracing.text import escape

__all__ = ["FLEET_COLUMNS", "SORT_KEYS", "FleetDevice", "FleetModel", "fleet_row"]


@dataclass
class FleetDevice:
    name: str
    birth: Birth | None = None
    death: Death | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def online(self) -> bool:
        return is_online(self.birth, self.death)

    def age(self, now_us: int) -> float | None:
        """Seconds since the newest summary was made (its staleness), None without one."""
        t = self.summary.get("t_us")
        return None if t is None else max(0.0, (now_us - int(t)) / 1e6)


FLEET_COLUMNS = (
    "device",
    "state",
    "run",
    "step",
    "loss",
    "step time",
    "hottest",
    "throttle",
    "memory peak",
    "age",
    "last warning",
)

SORT_KEYS = ("device", "state", "run", "step", "loss", "step time", "hottest", "memory peak", "age")


def _num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, fmt)


def _bytes(n: Any) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "-"


def fleet_row(d: FleetDevice, now_us: int) -> list[str]:
    """The device's cells under :data:`FLEET_COLUMNS`, escaped for a terminal."""
    s = d.summary
    peak = _bytes(s.get("mem_peak"))
    if s.get("mem_limit") is not None:
        peak += f" / {_bytes(s.get('mem_limit'))}"
    age = d.age(now_us)
    st = s.get("step_time_s")
    cells = [
        d.name,
        "online" if d.online else "offline",
        str(s.get("run") or "-"),
        _num(s.get("step"), "d"),
        _num(s.get("loss"), ".4g"),
        "-" if st is None else f"{st * 1000:.1f} ms",
        "-" if s.get("hottest_c") is None else f"{s['hottest_c']:.0f} °C",
        "yes" if s.get("throttled") else "no",
        peak,
        "-" if age is None else f"{age:.1f} s",
        str(s.get("warning") or ""),
    ]
    return [escape(c) for c in cells]


class FleetModel:
    """Devices by name, updated message by message."""

    def __init__(self) -> None:
        self.devices: dict[str, FleetDevice] = {}
        self.malformed = 0
        self.last_error: str | None = None
        self.updates = 0

    def update(self, topic: str, payload: bytes) -> str | None:
        """Apply one message; the device it changed, or None (never raises for a payload)."""
        where = parse_topic(topic)
        if where is None:
            return None
        name, leaf = where
        if leaf not in ("birth", "death", "summary"):
            return None
        if not payload:  # a retained message cleared
            if leaf == "birth":
                self.devices.pop(name, None)  # the device is gone from the fleet
            elif name in self.devices:
                d = self.devices[name]
                if leaf == "death":
                    d.death = None
                else:
                    d.summary = {}
            return name
        try:
            if leaf == "birth":
                birth = decode_birth(payload)
                self._check(name, birth.device)
                self.device(name).birth = birth
            elif leaf == "death":
                death = decode_death(payload)
                self._check(name, death.device)
                self.device(name).death = death
            else:
                summary = decode_summary(payload)
                self._check(name, str(summary["device"]))
                self.device(name).summary = summary
        except FleetPayloadError as e:
            self.malformed += 1
            self.last_error = f"{name}/{leaf}: {e}"
            return None
        self.updates += 1
        return name

    @staticmethod
    def _check(topic_device: str, said: str) -> None:
        if said != topic_device:
            raise FleetPayloadError(f"names device {said!r} on {topic_device!r}'s topic")

    def device(self, name: str) -> FleetDevice:
        d = self.devices.get(name)
        if d is None:
            d = self.devices[name] = FleetDevice(name)
        return d

    def rows(
        self, *, sort: str = "device", reverse: bool = False, filter: str = ""
    ) -> list[FleetDevice]:
        """Devices matching ``filter`` (a substring of any cell, case-insensitive), sorted by
        a :data:`SORT_KEYS` column; devices without the figure sort last."""
        now = time.time_ns() // 1000
        want = filter.strip().lower()
        out = [
            d
            for d in self.devices.values()
            if not want or any(want in c.lower() for c in fleet_row(d, now))
        ]

        def key(d: FleetDevice) -> tuple[int, Any]:
            s = d.summary
            v: Any = {
                "device": d.name,
                "state": 0 if d.online else 1,
                "run": s.get("run"),
                "step": s.get("step"),
                "loss": s.get("loss"),
                "step time": s.get("step_time_s"),
                "hottest": s.get("hottest_c"),
                "memory peak": s.get("mem_peak"),
                "age": d.age(now),
            }.get(sort, d.name)
            if isinstance(v, float) and math.isnan(v):
                v = None
            return (1, 0) if v is None else (0, v)

        present = sorted((d for d in out if key(d)[0] == 0), key=key, reverse=reverse)
        absent = sorted((d for d in out if key(d)[0] == 1), key=lambda d: d.name)
        return present + absent

    def newest_age(self) -> float | None:
        """The staleness of the fleet view: age of the newest summary shown, in seconds."""
        now = time.time_ns() // 1000
        ages = [a for d in self.devices.values() if (a := d.age(now)) is not None]
        return min(ages) if ages else None


def device_json(d: FleetDevice, now_us: int) -> dict[str, Any]:
    """One device for ``ls --mqtt --json``: presence, session, facts and summary."""
    s = {k: v for k, v in d.summary.items() if k not in ("device", "bd_seq")}
    return {
        "device": d.name,
        "online": d.online,
        "bd_seq": d.birth.bd_seq if d.birth else None,
        "facts": d.birth.facts if d.birth else {},
        "summary": s,
        "age_s": d.age(now_us),
    }
