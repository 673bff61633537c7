"""The in-process Python stack sampler behind ``edgescope.init(profile=True)``.

A daemon thread wakes ``hz`` times a second, reads every thread's current frame with
``sys._current_frames()`` (wall-clock sampling: waiting threads are seen too, as py-spy's
``--idle`` does), and counts each distinct stack. Every ``window`` seconds the counts become one
or more :class:`StackSamples` records (backend ``python``), root frame first, handed to
``push``. The sampler leaves out its own thread and the threads named in ``exclude``.

Cost: one sample walks each thread's frames while holding the GIL (tens of microseconds for a
typical training process); ``benchmarks/bench_profiler.py`` measures the slowdown of a
CPU-bound loop.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import CodeType, FrameType

from edgescope_tracing import StackFrame, StackSamples

__all__ = ["DEFAULT_HZ", "StackSampler", "chunk_samples"]

DEFAULT_HZ = 100.0
MAX_DEPTH = 256
"""Frames kept per stack (the innermost ones when deeper)."""
CHUNK_BYTES = 40_000
"""Estimated encoded size at which a window's samples are split into another record."""

Key = tuple[tuple[CodeType, int], ...]
Samples = tuple[tuple[tuple[StackFrame, ...], int], ...]


def chunk_samples(samples: list[tuple[tuple[StackFrame, ...], int]]) -> list[Samples]:
    """Split samples so that no record can outgrow a frame, even with every frame new."""
    out: list[Samples] = []
    cur: list[tuple[tuple[StackFrame, ...], int]] = []
    size = 0
    seen: set[StackFrame] = set()
    for stack, count in samples:
        cost = 16 + 3 * len(stack)
        for fr in stack:
            if fr not in seen:
                cost += 16 + len(fr.function.encode()) + len(fr.file.encode())
        if cur and size + cost > CHUNK_BYTES:
            out.append(tuple(cur))
            cur, size, seen = [], 0, set()
            cost = (
                16
                + 3 * len(stack)
                + sum(16 + len(f.function.encode()) + len(f.file.encode()) for f in set(stack))
            )
        cur.append((stack, count))
        seen.update(stack)
        size += cost
    if cur:
        out.append(tuple(cur))
    return out


class StackSampler:
    """Samples the Python stacks of this process's threads into ``StackSamples`` records."""

    def __init__(
        self,
        push: Callable[[StackSamples], None],
        *,
        run: int = 0,
        hz: float = DEFAULT_HZ,
        window: float = 1.0,
        exclude: Callable[[], set[int]] = set,
    ) -> None:
        if not 0 < hz <= 1000:
            raise ValueError(f"profile_hz must be above 0 and at most 1000, got {hz!r}")
        self.hz = hz
        self.window = window
        self._push = push
        self._run = run
        self._exclude = exclude
        self._stop = threading.Event()
        self._counts: Counter[Key] = Counter()
        self._window_start = 0
        self._frames: dict[tuple[CodeType, int], StackFrame] = {}
        self.samples_taken = 0
        self.thread = threading.Thread(target=self._main, name="edgescope-profiler", daemon=True)

    def start(self) -> None:
        self._window_start = time.time_ns() // 1000
        self.thread.start()

    def stop(self) -> None:
        """Stop sampling and push what the last window holds."""
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5.0)

    def _main(self) -> None:
        period = 1.0 / self.hz
        me = threading.get_ident()
        next_t = time.monotonic() + period
        next_emit = time.monotonic() + self.window
        excluded = self._exclude() | {me}
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self.sample(excluded)
            now = time.monotonic()
            next_t += period
            if next_t < now:  # fell behind (a long GIL hold): skip, never burst
                next_t = now + period
            if now >= next_emit:
                self.emit()
                next_emit = now + self.window
                excluded = self._exclude() | {me}
        self.emit()

    def sample(self, excluded: set[int]) -> None:
        """Take one sample of every thread not in ``excluded``."""
        counts = self._counts
        for ident, frame in sys._current_frames().items():
            if ident in excluded:
                continue
            stack: list[tuple[CodeType, int]] = []
            f: FrameType | None = frame
            while f is not None:
                stack.append((f.f_code, f.f_lineno))
                f = f.f_back
            if len(stack) > MAX_DEPTH:
                del stack[MAX_DEPTH:]
            stack.reverse()
            counts[tuple(stack)] += 1
        self.samples_taken += 1

    def _frame(self, key: tuple[CodeType, int]) -> StackFrame:
        fr = self._frames.get(key)
        if fr is None:
            code, line = key
            fr = self._frames[key] = StackFrame(code.co_qualname, code.co_filename, line or 0)
        return fr

    def emit(self) -> None:
        """Push the current window's counts (if any) and start a new window."""
        counts, self._counts = self._counts, Counter()
        start, self._window_start = self._window_start, time.time_ns() // 1000
        if not counts:
            return
        samples = [(tuple(self._frame(k) for k in key), n) for key, n in counts.most_common()]
        period_us = round(1e6 / self.hz)
        for part in chunk_samples(samples):
            self._push(StackSamples(self._run, "python", period_us, part, start))
