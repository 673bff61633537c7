"""Loss detectors: a loss that is no longer a number, and a loss that jumps."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from edgescope_tracing.records import Event, Metrics, Record

from .base import anomaly
from .stats import median

__all__ = ["is_loss_key", "NonFiniteLoss", "LossSpike"]


def is_loss_key(key: str) -> bool:
    """``loss``, ``train/loss``, ``val_loss``, ``loss/train``: the metric is a loss."""
    k = key.lower()
    return k == "loss" or k.endswith(("/loss", "_loss", ".loss")) or k.startswith("loss/")


class NonFiniteLoss:
    """A loss metric turned NaN or infinite: one error event, again only after it recovers.

    Reads ``Metrics`` of loss keys (:func:`is_loss_key`); emits ``nonfinite_loss``, severity 2.
    No threshold: any NaN or infinity is an event, once per episode.
    """

    name = "nonfinite_loss"

    def __init__(self) -> None:
        self._bad: set[tuple[int, str]] = set()

    def flush(self) -> list[Event]:
        """Nothing is held back for context."""
        return []

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._bad = {k for k in self._bad if k[0] != run}

    def feed(self, rec: Record) -> list[Event]:
        if not isinstance(rec, Metrics) or not is_loss_key(rec.key):
            return []
        out = []
        key = (rec.run, rec.key)
        for step, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True):
            if math.isfinite(v):
                self._bad.discard(key)
            elif key not in self._bad:
                self._bad.add(key)
                out.append(
                    anomaly(
                        "nonfinite_loss",
                        f"{rec.key} is {v} at step {step}",
                        rec.run,
                        2,
                        t,
                        key=rec.key,
                        step=step,
                        value=str(v),
                    )
                )
        return out


@dataclass
class _SpikeState:
    window: deque[float]
    since_stats: int = 0
    med: float = 0.0
    spread: float = 0.0
    last_event_step: int | None = None


class LossSpike:
    """A loss value ``threshold`` robust deviations above the median of the trailing window.

    The median and MAD are recomputed every ``refresh`` values (and whenever a value looks
    like a spike against the cached ones), which keeps the cost per value small at 1,000
    metrics a second.

    Reads ``Metrics`` of loss keys; emits ``loss_spike``, severity 1. Thresholds (defaults):
    ``threshold`` 8 robust deviations (a loss's ordinary noise stays within 3-4),
    ``window`` 100 trailing values, ``min_points`` 20 before any judgement, at most one event
    per ``cooldown_steps`` 50 steps.
    """

    name = "loss_spike"

    def __init__(
        self,
        window: int = 100,
        threshold: float = 8.0,
        min_points: int = 20,
        cooldown_steps: int = 50,
        refresh: int = 16,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.min_points = min_points
        self.cooldown_steps = cooldown_steps
        self.refresh = refresh
        self._state: dict[tuple[int, str], _SpikeState] = {}

    def flush(self) -> list[Event]:
        """Nothing is held back for context."""
        return []

    def forget(self, run: int) -> None:
        """Drop what is kept about a run that ended."""
        self._state = {k: v for k, v in self._state.items() if k[0] != run}

    def _stats(self, st: _SpikeState) -> None:
        w = list(st.window)
        st.med = median(w)
        mad = median([abs(x - st.med) for x in w]) * 1.4826
        st.spread = max(mad, abs(st.med) * 1e-6, 1e-300)
        st.since_stats = 0

    def feed(self, rec: Record) -> list[Event]:
        if not isinstance(rec, Metrics) or not is_loss_key(rec.key):
            return []
        key = (rec.run, rec.key)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _SpikeState(deque(maxlen=self.window))
        out = []
        for step, t, v in zip(rec.steps, rec.times_us, rec.values, strict=True):
            if not math.isfinite(v):
                continue  # NonFiniteLoss speaks for these
            if len(st.window) >= self.min_points:
                if st.since_stats >= self.refresh:
                    self._stats(st)
                if (v - st.med) / st.spread > self.threshold:
                    self._stats(st)  # confirm against fresh figures
                    z = (v - st.med) / st.spread
                    cooled = (
                        st.last_event_step is None
                        or step - st.last_event_step >= self.cooldown_steps
                    )
                    if z > self.threshold and cooled:
                        st.last_event_step = step
                        out.append(
                            anomaly(
                                "loss_spike",
                                f"{rec.key} spiked to {v:.4g} at step {step}, "
                                f"{v / st.med:.1f}x the median {st.med:.4g} of the last "
                                f"{len(st.window)} values (robust z {z:.0f})"
                                if st.med > 0
                                else f"{rec.key} spiked to {v:.4g} at step {step} "
                                f"(median {st.med:.4g}, robust z {z:.0f})",
                                rec.run,
                                1,
                                t,
                                key=rec.key,
                                step=step,
                                value=v,
                                median=st.med,
                                z=round(z, 1),
                            )
                        )
            st.window.append(v)
            st.since_stats += 1
            if len(st.window) == self.min_points:
                self._stats(st)
        return out
