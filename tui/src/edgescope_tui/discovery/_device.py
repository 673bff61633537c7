"""A device as the devices list shows it: where it came from, how to reach it, what it's doing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from edgescope_tracing.text import escape

from ._targets import Target

__all__ = ["DEVICE_COLUMNS", "Device", "DeviceState", "Origin", "device_row"]

DeviceState = Literal["found", "checking", "online", "no-collector", "unreachable", "error"]
"""``found``: known, not yet checked; ``no-collector``: reachable, but nothing serves there;
``unreachable``: the host or its SSH server can't be reached or refused us; ``error``: anything
else, e.g. a malformed mDNS advert."""

Origin = Literal["mdns", "ssh", "address", "config", "ssh-config"]


@dataclass(frozen=True, slots=True)
class Device:
    """One row of the devices list. ``error`` is one line, set in states other than online."""

    key: str
    label: str
    origin: Origin
    target: Target | None
    """How to reach the collector; ``None`` where an advert is too broken to connect to."""
    state: DeviceState = "found"
    error: str = ""
    hint: str = ""
    """What the user can do about ``error``: the command that installs or starts the collector."""
    can_start_collector: bool = False
    """The collector is installed on the device but not running; we can start it over SSH."""
    hostname: str = ""
    board: str = ""
    auth_required: bool | None = None
    protocol: int | None = None
    runs: tuple[str, ...] = ()
    """Names of the runs the collector has active."""
    head_seq: int | None = None
    temp_c: float | None = None
    """Hottest thermal zone or GPU."""
    mem_used: int | None = None
    mem_total: int | None = None
    throttled: tuple[str, ...] = field(default_factory=tuple)
    """Throttle signals active now (e.g. ``gpu: hw thermal``, ``pi: under-voltage``); empty when
    none, and empty too before the first thermal sample."""
    duplicate_of: str = ""
    """The device listed before it for the same address (another entry of the devices file, a
    ``--address`` given twice): both are listed and checked, and this one says so."""

    def with_state(self, state: DeviceState, error: str = "", hint: str = "") -> Device:
        return replace(self, state=state, error=error, hint=hint)


DEVICE_COLUMNS = ("device", "via", "state", "runs", "temp", "memory", "throttle")
"""The columns of a devices table, the TUI's and ``edgescope ls``'s."""
_VIA: dict[str, str] = {"address": "tcp"}
"""How an origin is shown where its name is not the word for it."""


def device_row(d: Device) -> tuple[str, ...]:
    """One device as the cells of :data:`DEVICE_COLUMNS`, plain text with every control
    character escaped: ``edgescope ls`` prints them, the devices screen styles them. Memory in
    GiB (binary units everywhere)."""
    online = d.state == "online"
    mem = ""
    if d.mem_total:
        used = f"{d.mem_used / 2**30:.1f}" if d.mem_used is not None else "?"
        mem = f"{used}/{d.mem_total / 2**30:.1f} GiB"
    cells = (
        d.label,
        _VIA.get(d.origin, d.origin),
        d.state,
        str(len(d.runs)) if online else "",
        f"{d.temp_c:.0f}°C" if d.temp_c is not None else "",
        mem,
        ", ".join(d.throttled) if d.throttled else ("ok" if online else ""),
    )
    # A name from an mDNS advert, flags from a collector: anyone's words, escaped here once.
    return tuple(escape(c) for c in cells)
