"""Detectors: from the stream of records to the events that say what went wrong.

Each detector is a small fold with one protocol (:class:`Detector`, in ``base``): ``feed(record)
-> list[Event]``, ``flush()`` at the end of a stream, ``forget(run)`` when a run ended;
deterministic, no I/O, no clock (times come from the records). One module per family, each
with its thresholds documented on its class: ``loss`` (:class:`NonFiniteLoss`,
:class:`LossSpike`), ``step_time`` (:class:`StepTimeRegression`, with the cause search in
``causes``), ``memory`` (:class:`MemoryGrowth`, :class:`MemoryHigh`, :class:`OomKill`);
``stats`` holds the statistics, ``ratelimit`` the :class:`RateLimit`, ``runner``
:class:`Detectors` and :func:`detect`. :class:`Detectors` runs all of them over one stream and
:func:`detect` runs a fresh set over a sequence of records, a pure function of it. The
statistics they stand on (:func:`median`, :func:`robust_z`, :func:`linear_fit`) and the
search for a coinciding cause (:func:`coinciding_signals`) are pure functions, public and
tested on their own.

Every event has ``kind="anomaly"``, a message a person can act on, a severity (0 info,
1 warning, 2 error) and ``detail`` with ``detector`` naming which one spoke and the figures
it saw (JSON-safe: non-finite numbers are written as strings). :class:`Detectors` passes every
event through a :class:`RateLimit` (5 a minute per detector and run): what it holds back is
counted and said in the next event, or in a summary event at the run's end.

- :class:`NonFiniteLoss`: a loss metric became NaN or infinite (once until it is finite again).
- :class:`LossSpike`: a loss value far above its recent values by a robust z-score (median and
  MAD over a trailing window), at most one event per cooldown of steps.
- :class:`StepTimeRegression`: the median of the last few step times is ``factor`` times the
  median before them, at least 1 ms, for at least 1 s (a sustained slowdown, not one slow step
  or a burst of a tiny model's microsecond steps); the event names what
  coincides: a throttle counter or flag, a CPU frequency drop, a temperature at a trip point,
  GPU clock-event throttling, memory pressure, swap, CPU contention, and first the run's own
  cgroup: throttled by its CPU quota, or over its ``memory.high``. Step time is a logged
  ``step_time``-style metric, or else the time between steps of the run's first metric.
- :class:`MemoryGrowth`: the run's memory (cgroup, else the RSS of its processes) grows so
  that, at the fitted rate, it reaches the cgroup limit (else exhausts available memory)
  within a horizon.
- :class:`PowerCap`: a power limit holds the clocks down: a board's RAPL reading at its limit
  while a CPU runs well below its maximum frequency, or a GPU's NVML ``sw_power_cap`` /
  ``hw_power_brake_slowdown`` reasons, for 3 samples in a row (device-wide events).
- :class:`MemoryHigh`: the run's cgroup went over its ``memory.high`` (the ``high`` counter of
  ``memory.events`` rose): the kernel throttles it into reclaim; once per episode.
- :class:`OomKill`: the OOM killer killed a process in the run's cgroup (``oom_kill`` rose),
  or the run ended by SIGKILL with its memory at the limit; it also gives the run's
  ``RunEnd.cause`` (:meth:`Detectors.end_cause`).
"""

from edgescope_tracing.causes import Signal, coinciding_signals

from .base import Detector
from .loss import LossSpike, NonFiniteLoss, is_loss_key
from .memory import MemoryGrowth, MemoryHigh, OomKill
from .power import PowerCap
from .ratelimit import RateLimit
from .runner import Detectors, detect
from .stats import linear_fit, median, robust_z
from .step_time import STEP_TIME_KEYS, StepTimeRegression, step_time_unit

__all__ = [
    "Detector",
    "Detectors",
    "RateLimit",
    "detect",
    "NonFiniteLoss",
    "LossSpike",
    "StepTimeRegression",
    "MemoryGrowth",
    "MemoryHigh",
    "OomKill",
    "PowerCap",
    "Signal",
    "coinciding_signals",
    "median",
    "robust_z",
    "linear_fit",
    "is_loss_key",
    "step_time_unit",
    "STEP_TIME_KEYS",
]
