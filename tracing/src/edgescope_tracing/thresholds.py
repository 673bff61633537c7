"""The thresholds at which the detectors name a resource as the trouble, in one place.

The collector's detectors and :mod:`edgescope_tracing.causes` decide with them; the TUI colours
the same values against them, so a figure drawn red is one a detector would name. Levels: 0
fine, 1 warning, 2 at the limit (the event severities).
"""

from __future__ import annotations

from .records import CpuFreq

__all__ = [
    "TRIP_KINDS",
    "CGROUP_NEAR_LIMIT",
    "OOM_LIKELY_SHARE",
    "CLOCK_LOW_SHARE",
    "SCALING_CAP_SHARE",
    "scaling_capped",
    "trip_reached",
    "temperature_level",
    "memory_level",
]

TRIP_KINDS = ("passive", "hot", "critical")
"""Thermal trip point types at which the kernel slows or stops the device (``active`` only
starts a fan)."""

CGROUP_NEAR_LIMIT = 0.95
"""A run's cgroup memory at this share of its limit coincides with a slow step: the
``cgroup_limit`` cause."""

OOM_LIKELY_SHARE = 0.9
"""A run killed by SIGKILL with its cgroup at this share of its limit or more was most likely
killed by the OOM killer."""


CLOCK_LOW_SHARE = 0.85
"""A CPU runs well below its maximum frequency under this share of it: the ``frequency`` cause,
and a clock a power limit holds down."""

SCALING_CAP_SHARE = 0.9
"""A cpufreq ``scaling_max`` under this share of the maximum frequency is a cap (a governor, a
thermal or power daemon), not the hardware's top."""


def scaling_capped(f: CpuFreq) -> bool:
    """Whether the CPU's ``scaling_max`` is set below :data:`SCALING_CAP_SHARE` of its maximum."""
    return (
        f.scaling_max_khz is not None
        and f.max_khz is not None
        and f.scaling_max_khz < SCALING_CAP_SHARE * f.max_khz
    )


def trip_reached(temp_c: float, trip_c: float, hysteresis_c: float = 0.0) -> bool:
    """Whether a zone is at its trip point: within the trip's hysteresis below it, or above."""
    return temp_c >= trip_c - hysteresis_c


def temperature_level(temp_c: float, trip_c: float, hysteresis_c: float = 0.0) -> int:
    """2 at or over the trip, 1 within its hysteresis of it (where the ``trip_point`` cause is
    named), else 0."""
    if temp_c >= trip_c:
        return 2
    return 1 if trip_reached(temp_c, trip_c, hysteresis_c) else 0


def memory_level(used: float, limit: float) -> int:
    """2 at :data:`CGROUP_NEAR_LIMIT` of the limit or more, 1 from :data:`OOM_LIKELY_SHARE`,
    else 0."""
    if limit <= 0:
        return 0
    share = used / limit
    if share >= CGROUP_NEAR_LIMIT:
        return 2
    return 1 if share >= OOM_LIKELY_SHARE else 0
