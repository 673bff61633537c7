"""The in-process Python stack sampler behind ``edgescope.init(profile=True)``.

Each sample reads every thread's current frame (``sys._current_frames()``) and counts each
distinct stack; every ``window`` seconds the counts become one or more :class:`StackSamples`
records (backend ``python``, root frame first, ``period_us`` = 1e6 / hz) handed to ``push``.
The SDK's own threads are left out (``exclude``).

Two drivers, chosen by :func:`start_sampler`:

- :class:`SignalSampler` (the default, when ``init()`` runs in the main thread and nobody else
  handles SIGPROF): ``setitimer(ITIMER_PROF)`` raises SIGPROF every 1/hz seconds of the
  process's CPU time (all threads), and the handler samples in the main thread, which already
  holds the GIL: no thread has to wake up and take it. This is CPU sampling, as perf's
  ``cpu-clock``: time the whole process spends blocked is not sampled. A sample that Python
  could only deliver late (the main thread was inside a long C call, e.g. a tensor op) counts
  for the CPU time that passed, so time in C is not undercounted; it lands on the Python frame
  that made the call. System calls interrupted by SIGPROF are restarted (SA_RESTART).
- :class:`ThreadSampler` (otherwise): a daemon thread wakes ``hz`` times a second of wall time
  and samples; waiting threads are seen too. Each sample must take the GIL from a busy main
  thread, which costs more (see ``benchmarks/bench_profiler.py``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Protocol

from edgescope_tracing import StackFrame, StackSamples

__all__ = [
    "DEFAULT_HZ",
    "Sampler",
    "SignalSampler",
    "ThreadSampler",
    "chunk_samples",
    "start_sampler",
]

DEFAULT_HZ = 100.0
MAX_DEPTH = 256
"""Frames kept per stack (the outermost ones are dropped when deeper)."""
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
        for fr in set(stack) - seen:
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


class Sampler(Protocol):
    hz: float
    samples_taken: int

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop sampling and push what the last window holds."""


class _Counts:
    """Stack counts of the current window, turned into records by :meth:`emit`."""

    def __init__(
        self,
        push: Callable[[StackSamples], None],
        run: int,
        hz: float,
        window: float,
        exclude: Callable[[], set[int]],
    ) -> None:
        if not 0 < hz <= 1000:
            raise ValueError(f"profile_hz must be above 0 and at most 1000, got {hz!r}")
        self.hz = hz
        self.window = window
        self.samples_taken = 0
        self._push = push
        self._run = run
        self._exclude = exclude
        self._counts: Counter[Key] = Counter()
        self._window_start = time.time_ns() // 1000
        self._frames: dict[tuple[CodeType, int], StackFrame] = {}

    def take(
        self, excluded: set[int], weight: int = 1, main: tuple[int, FrameType] | None = None
    ) -> None:
        """Count the stack of every thread not in ``excluded`` (``main``: the ident whose
        frame is given, instead of the sampler's own)."""
        counts = self._counts
        for ident, frame in sys._current_frames().items():
            if ident in excluded:
                continue
            f: FrameType | None = frame
            if main is not None and ident == main[0]:
                f = main[1]
            stack: list[tuple[CodeType, int]] = []
            while f is not None:
                stack.append((f.f_code, f.f_lineno))
                f = f.f_back
            if len(stack) > MAX_DEPTH:
                del stack[MAX_DEPTH:]
            stack.reverse()
            counts[tuple(stack)] += weight
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


class ThreadSampler(_Counts):
    """Wall-clock sampling from a daemon thread."""

    def __init__(
        self,
        push: Callable[[StackSamples], None],
        *,
        run: int = 0,
        hz: float = DEFAULT_HZ,
        window: float = 1.0,
        exclude: Callable[[], set[int]] = set,
    ) -> None:
        super().__init__(push, run, hz, window, exclude)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name="edgescope-profiler", daemon=True)

    def start(self) -> None:
        self._window_start = time.time_ns() // 1000
        self.thread.start()

    def stop(self) -> None:
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
            self.take(excluded)
            now = time.monotonic()
            next_t += period
            if next_t < now:  # fell behind (a long GIL hold): skip, never burst
                next_t = now + period
            if now >= next_emit:
                self.emit()
                next_emit = now + self.window
                excluded = self._exclude() | {me}
        self.emit()


class SignalSampler(_Counts):
    """CPU-time sampling in the main thread, driven by SIGPROF."""

    def __init__(
        self,
        push: Callable[[StackSamples], None],
        *,
        run: int = 0,
        hz: float = DEFAULT_HZ,
        window: float = 1.0,
        exclude: Callable[[], set[int]] = set,
    ) -> None:
        super().__init__(push, run, hz, window, exclude)
        self._period = 1.0 / hz
        self._active = False
        self._last_cpu = 0.0
        self._owed = 0.0
        self._next_emit = 0.0
        self._excluded: set[int] = set()
        self._prev: signal._HANDLER = signal.SIG_DFL

    @staticmethod
    def available() -> bool:
        """Whether this thread may install the SIGPROF handler and nobody else has one."""
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            return signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, signal.SIG_IGN, None)
        except (ValueError, AttributeError):
            return False

    def start(self) -> None:
        self._excluded = self._exclude()
        self._window_start = time.time_ns() // 1000
        self._last_cpu = time.process_time()
        self._next_emit = time.monotonic() + self.window
        self._prev = signal.signal(signal.SIGPROF, self._on_signal)
        signal.siginterrupt(signal.SIGPROF, False)  # SA_RESTART: interrupted calls resume
        self._active = True
        signal.setitimer(signal.ITIMER_PROF, self._period, self._period)

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False  # a SIGPROF already pending finds the handler inert
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGPROF, self._prev)
        self.emit()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:
            return
        now = time.process_time()
        # Periods of CPU time since the last sample, the fraction carried over: the counts
        # add up to the CPU time spent, however late each signal was handled.
        self._owed += (now - self._last_cpu) / self._period
        self._last_cpu = now
        weight = int(self._owed)
        if weight > 0:
            self._owed -= weight
            main = (threading.get_ident(), frame) if frame is not None else None
            self.take(self._excluded, weight, main)
        if time.monotonic() >= self._next_emit:
            self._next_emit = time.monotonic() + self.window
            self.emit()
            self._excluded = self._exclude()


def start_sampler(
    push: Callable[[StackSamples], None],
    *,
    run: int = 0,
    hz: float = DEFAULT_HZ,
    window: float = 1.0,
    exclude: Callable[[], set[int]] = set,
) -> Sampler:
    """Start the cheapest sampler this thread can run (see the module's docstring)."""
    sampler: Sampler
    if SignalSampler.available():
        sampler = SignalSampler(push, run=run, hz=hz, window=window, exclude=exclude)
    else:
        sampler = ThreadSampler(push, run=run, hz=hz, window=window, exclude=exclude)
    sampler.start()
    return sampler
