"""The in-process Python stack sampler behind ``edgescope.init(profile=True)``: a CPU profile.

Each sample takes every thread's current frame (``sys._current_frames()``) and reads each
thread's own CPU clock (``pthread_getcpuclockid``). A thread is charged only for the CPU time
its clock advanced, in periods of ``1 / hz`` seconds (the fraction carried over to its next
sample), to the stack it is in now; or, when it is blocked there (its innermost frame calls a
lock's ``acquire``, ``sleep``, ``select``, ``recv``, ... with the GIL released), to the stack
where it was last seen running, since it used that CPU before it blocked. So a thread's counts
add up to the CPU time it used, as ``perf -e cpu-clock`` or ``py-spy`` (without ``--idle``)
would show them, and a thread blocked on a queue, a lock or I/O shows nothing. Every ``window``
seconds the counts become :class:`StackSamples` records (backend ``python``, root frame first,
``period_us`` = 1e6 / hz: a count is that much CPU time) handed to ``push``.

Known limit: CPU a thread uses in a burst shorter than a period next to a block (a
DataLoader's main thread unpickling a batch between waits) goes to the stack it was last seen
running in (10.9-16.7 % for a measured 7.4-9.8 % in tests/profiler, at load 5-9).

Known limit: samples are taken where Python checks for signals (loop ends, function starts,
after calls), so the self time of a function whose own bytecode runs between calls to short
functions goes partly to those functions (a loop calling 20 tiny functions: ~7 % self time
here against py-spy's ~21 %; the functions' shares among themselves agree).

Two drivers, chosen by :func:`start_sampler`:

- :class:`SignalSampler` (the default, when ``init()`` runs in the main thread of a Linux
  process and nobody else handles SIGPROF): a POSIX timer on the monotonic clock raises SIGPROF
  in the main thread at times drawn ahead of the run (about ``1 / hz`` apart, jittered so that
  a periodic training step cannot alias with them), and the handler samples there, holding the
  GIL already. Python code answers a signal within microseconds. A C call that holds the GIL
  (a tensor op in one piece, ``sum`` over a long range, a regex) answers when it returns, its
  caller still on the line that made it: the main thread's CPU from the scheduled time on was
  all in that call, and the CPU before it, since the last sample, is shared half and half with
  where the thread was last seen running (it went into the call at a moment not known). The
  known 50/50 split of Python and a 12 ms C call comes out within 5 points (tests/profiler).
  C calls that release the GIL (BLAS, I/O, sleeps) are seen at once; their CPU time goes to
  the calling line. System calls interrupted by SIGPROF are restarted (SA_RESTART).
- :class:`ThreadSampler` (otherwise): a daemon thread wakes about ``hz`` times a second and
  charges each thread the CPU time its clock advanced since the previous sample. To look, it
  must take the GIL: from a thread running Python that takes the switch interval (5 ms), and a
  C call that holds the GIL makes it wait to the end, so the time before the call may be
  charged to it too; a cruder split than the signal's, said here rather than hidden (the
  12 ms ``sorted()`` of tests/profiler came out 53.7 % against its clock's 43.6 %). The other
  workloads there (busy Python, idle threads, a producer, deep recursion, many short functions)
  it gets within 5 points of their known splits, as the signal does.

Left out: the SDK's own threads (``exclude``) and the sampler itself; a thread that starts and
ends between two samples (its CPU time is not seen). The sampler holds no frame between
samples: each sample's frames are dropped before it returns, so locals die when their function
returns (tested with weak references and the process's peak RSS).
"""

from __future__ import annotations

import ctypes
import dis
import functools
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Protocol, TypeVar

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
JITTER = 0.5
"""Each wait is ``1 / hz`` times a factor drawn uniformly from ``1 ± JITTER``."""

LATE = 0.001
"""Seconds after its scheduled time past which a signal's handler is late: the main thread
was in a C call that held on to the GIL (Python code answers within microseconds)."""
MIN_WAIT = 0.0002
"""Seconds the sampler waits at least between samples, with the GIL released."""

Key = tuple[tuple[int, int], ...]
"""A stack: the id of each frame's code (see :data:`_CODES`) and its line, root first. Ids,
not code objects: hashing a code object hashes its constants, and a script's ``<module>`` (at
the root of every main-thread stack) holds all the script's functions: ~180 µs a hash."""
_CODES: dict[int, CodeType] = {}
"""Every code object a stack or a cache has named, by id: kept alive here, so that an id
names one code as long as it is used."""
T = TypeVar("T")


def _per_code(fn: Callable[[CodeType], T]) -> Callable[[CodeType], T]:
    """Cache ``fn``'s answer for each code object, looked up by its id (see :data:`Key`)."""
    cache: dict[int, T] = {}

    @functools.wraps(fn)
    def get(code: CodeType) -> T:
        i = id(code)
        if i in cache:
            return cache[i]
        _CODES.setdefault(i, code)
        got = cache[i] = fn(code)
        return got

    return get


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


def _thread_cpu(ident: int) -> tuple[int, float] | None:
    """The CPU clock of the thread ``ident`` (its id, and its reading in seconds), or None if
    it cannot be read (the thread is ending)."""
    try:
        clock = time.pthread_getcpuclockid(ident)
        return clock, time.clock_gettime(clock)
    except OSError:
        return None


def _stack_key(frame: FrameType) -> Key:
    """The code and line of each frame, root first (at most :data:`MAX_DEPTH`, innermost kept).

    Only code objects and numbers are kept: nothing that holds a frame or its locals.
    """
    stack: list[tuple[int, int]] = []
    codes = _CODES
    f: FrameType | None = frame
    if frame.f_back is not None and frame.f_lasti <= _resume(frame.f_code):
        # Not yet past its first instruction: a signal (or a GIL request) that came in while
        # the caller was setting up the call is answered here, at the callee's start. The time
        # was the caller's, as a sampler from outside (py-spy) sees it.
        f = frame.f_back
    while f is not None and len(stack) < MAX_DEPTH:
        code = f.f_code
        i = id(code)
        if i not in codes:
            codes[i] = code
        stack.append((i, f.f_lineno or 0))
        f = f.f_back
    del f
    stack.reverse()
    return tuple(stack)


BLOCKING = frozenset(
    {
        "acquire",  # locks: Condition/Event/queue waits, Thread.join end here
        "__enter__",  # a lock's, in a with statement (a Python __enter__ would be a frame)
        "sleep",
        "select",
        "poll",
        "recv",
        "recv_into",
        "recvfrom",
        "recvmsg",  # multiprocessing's file descriptors (a DataLoader's shared tensors)
        "accept",
        "connect",
        "read",
        "readinto",
        "readline",
        "sigwait",
        "sigtimedwait",
        "waitpid",
        "wait",
    }
)
"""Callables that block in C with the GIL released: a thread whose innermost frame is calling
one of them is waiting, not running."""


_LOADS = frozenset({"LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_NAME", "LOAD_GLOBAL"})
_ENDS = frozenset(
    {"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP", "JUMP_NO_INTERRUPT"}
    | {"RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE"}
)
"""Instructions after which the next one is reached only by a jump (or an exception)."""


def _effect(opcode: int, arg: int | None, jump: bool) -> int:
    """The change in stack depth of an instruction (taking its jump, or not)."""
    if arg is None:
        return dis.stack_effect(opcode)
    return dis.stack_effect(opcode, arg, jump=jump)


@_per_code
def _callees(code: CodeType) -> dict[int, str]:
    """The name of the callable of each call instruction of ``code``, by offset.

    A name is the last one loaded into the stack slot the call takes its callable from
    (``os.read(fd, n)``: ``read``; ``self._selector.poll(t)``: ``poll``), found by following
    the stack's depth through the bytecode (``dis.stack_effect``, the depths at jump targets
    and exception handlers). Both offsets of a 3.11 call map to it: ``PRECALL``, where a frame
    stays while a specialized call to a builtin runs (the adaptive interpreter does it there
    and skips the ``CALL``), and ``CALL``.
    """
    out: dict[int, str] = {}
    names: list[str] = []
    """The name each stack slot's value was loaded under ("" for none), bottom first."""
    depth_at: dict[int, int] = {}
    for entry in getattr(dis.Bytecode(code), "exception_entries", ()):
        depth_at.setdefault(entry.target, entry.depth + 1 + int(entry.lasti))
    reached = True
    precall = ""
    for ins in dis.get_instructions(code):
        op, arg = ins.opname, ins.arg
        if ins.offset in depth_at or not reached:
            depth = depth_at.get(ins.offset, 0)
            names = (names + [""] * depth)[:depth]
        if op == "CALL" and precall:
            out[ins.offset] = precall  # 3.11: PRECALL took the arguments off already
        elif op in ("PRECALL", "CALL"):
            argc = arg or 0
            callee = names[-(argc + 1)] if len(names) > argc else ""
            if not callee and len(names) > argc + 1:
                callee = names[-(argc + 2)]  # 3.13 puts the NULL after the callable
            out[ins.offset] = callee
        elif op == "BEFORE_WITH":
            out[ins.offset] = "__enter__"  # called from here, by the instruction itself
        precall = out[ins.offset] if op == "PRECALL" else ""
        effect = _effect(ins.opcode, arg, False)
        jumps = ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs
        if jumps and isinstance(ins.argval, int) and op != "SEND":
            taken = len(names) + _effect(ins.opcode, arg, True)
            depth_at.setdefault(ins.argval, max(0, taken))
        name = str(ins.argval)
        if op in ("LOAD_ATTR", "LOAD_METHOD") and names:
            # the object's slot becomes its attribute (and, for a method, self or NULL too)
            names[-1:] = [name] * (1 + effect)
        elif op in _LOADS:
            names += [name] * effect
        else:
            if effect < 0:
                del names[len(names) + effect :]
            elif op == "PUSH_NULL" or effect > 0:
                names += [""] * effect
            if op in ("CALL", "CALL_FUNCTION_EX") and names:
                names[-1] = ""  # a call's result was loaded under no name
        reached = op not in _ENDS
    return out


@_per_code
def _resume(code: CodeType) -> int:
    """The offset of ``code``'s RESUME, where a function checks for signals on entry."""
    return next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), -1)


_BEFORE_WITH = dis.opmap.get("BEFORE_WITH", -1)


@_per_code
def _may_block(code: CodeType) -> bool:
    """Whether ``code`` names one of :data:`BLOCKING` at all (an attribute, a global or a
    local): only then is it worth following its stack (a large function takes milliseconds,
    once; most of torch's name none)."""
    names = {*code.co_names, *code.co_varnames, *code.co_cellvars, *code.co_freevars}
    return not BLOCKING.isdisjoint(names)


def _blocked(code: CodeType, lasti: int) -> bool:
    """Whether a frame at ``lasti`` is inside a call to one of :data:`BLOCKING`."""
    if 0 <= lasti < len(code.co_code) and code.co_code[lasti] == _BEFORE_WITH:
        return True  # a with statement's __enter__
    return _may_block(code) and _callees(code).get(lasti, "") in BLOCKING


class _Counts:
    """Stack counts of the current window, charged by CPU time; made records by :meth:`emit`."""

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
        """Times the threads' stacks were looked at."""
        self.cpu_charged = 0.0
        """Seconds of CPU time turned into counts so far."""
        self._period = 1.0 / hz
        self._push = push
        self._run = run
        self._exclude = exclude
        self._counts: Counter[Key] = Counter()
        self._window_start = time.time_ns() // 1000
        self._frames: dict[tuple[int, int], StackFrame] = {}
        self._cpu: dict[int, float] = {}
        """Each thread's CPU clock (by clock id, which names the kernel thread) at the last
        sample; a thread first seen since then started after it, at 0."""
        self._owed: dict[int, float] = {}
        """Each thread's periods of CPU time not yet counted (below one)."""
        self._owed_back: dict[int, float] = {}
        """Like ``_owed``, for CPU charged back to where a thread was last seen running."""
        self._running_at: dict[int, Key] = {}
        """Each thread's stack when it was last seen running (not blocked)."""

    def _prime(self, excluded: set[int]) -> None:
        """Read the clocks of the threads there are now: only CPU used from now on counts."""
        self._window_start = time.time_ns() // 1000
        for ident in sys._current_frames():
            if ident not in excluded:
                got = _thread_cpu(ident)
                if got is not None:
                    self._cpu[got[0]] = got[1]

    def _charge(
        self,
        excluded: set[int],
        main: tuple[int, FrameType] | None = None,
        split: float = 0.0,
    ) -> None:
        """Charge each thread not in ``excluded`` the CPU time its clock advanced since the
        last sample, in periods with the fraction carried, to the stack it is in now; or, if it
        is blocked there (calling one of :data:`BLOCKING`), to the stack where it was last seen
        running, since it used that CPU before it blocked.

        ``main``: a thread and its frame, to use instead of the one it is in. ``split``: the
        share of the time since the last sample in which that thread went from the stack it
        was last seen running in to the one it is in now, at an unknown moment: half of its CPU
        in that share goes to each (see :meth:`SignalSampler._handle`).
        """
        counts = self._counts
        period = self._period
        cpu_before, cpu_now = self._cpu, {}
        owed = self._owed
        running = self._running_at
        frames = sys._current_frames()
        try:
            if main is not None:
                frames[main[0]] = main[1]
            for ident, frame in frames.items():
                if ident in excluded:
                    continue
                got = _thread_cpu(ident)
                if got is None:
                    continue
                clock, cpu = got
                cpu_now[clock] = cpu
                used = max(0.0, cpu - cpu_before.get(clock, 0.0))
                if not used:
                    continue
                blocked = _blocked(frame.f_code, frame.f_lasti)
                if split and main is not None and ident == main[0] and not blocked:
                    back = running.get(clock)
                    if back is not None:
                        due = self._owed_back.get(clock, 0.0) + used * split / 2 / period
                        k = int(due)
                        self._owed_back[clock] = due - k
                        if k:
                            counts[back] += k
                            self.cpu_charged += k * period
                        used -= used * split / 2
                due = owed.get(clock, 0.0) + used / period
                n = int(due)
                owed[clock] = due - n
                if n:
                    key = _stack_key(frame)
                    if blocked:
                        key = running.get(clock, key)
                    else:
                        running[clock] = key
                    counts[key] += n
                    self.cpu_charged += n * period
        finally:
            del frames  # and with it every thread's frame: nothing outlives the sample
            main = None
        for clock in owed.keys() - cpu_now.keys():
            del owed[clock]  # the thread ended
            running.pop(clock, None)
            self._owed_back.pop(clock, None)
        self._cpu = cpu_now
        self.samples_taken += 1

    def _frame(self, key: tuple[int, int]) -> StackFrame:
        fr = self._frames.get(key)
        if fr is None:
            code, line = _CODES[key[0]], key[1]
            fr = self._frames[key] = StackFrame(code.co_qualname, code.co_filename, line)
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


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Sigevent(ctypes.Structure):
    _fields_ = [
        ("sigev_value", ctypes.c_void_p),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("tid", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),  # Linux's struct sigevent is 64 bytes
    ]


_SIGEV_THREAD_ID = 4
_TIMER_ABSTIME = 1


class _WallTimer:
    """A POSIX timer on ``CLOCK_MONOTONIC`` that raises SIGPROF once at a given time in the
    calling thread (glibc, through ctypes: the kernel's high-resolution timers, not tied to the
    scheduler's tick). To that thread only: Python 3.11 may leave a signal that another thread
    caught unhandled until the main thread's next GIL switch."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._id = ctypes.c_void_p()
        ev = _Sigevent(None, signal.SIGPROF, _SIGEV_THREAD_ID, threading.get_native_id())
        if self._libc.timer_create(time.CLOCK_MONOTONIC, ctypes.byref(ev), ctypes.byref(self._id)):
            raise OSError(ctypes.get_errno(), "timer_create failed")

    def at(self, when: float, then: float) -> None:
        """Fire when ``time.monotonic()`` reaches ``when``, and every ``then`` seconds after
        until set again."""
        sec, every = int(when), int(then)
        spec = _Itimerspec(
            _Timespec(every, int((then - every) * 1e9)), _Timespec(sec, int((when - sec) * 1e9))
        )
        self._libc.timer_settime(self._id, _TIMER_ABSTIME, ctypes.byref(spec), None)

    def delete(self) -> None:
        self._libc.timer_delete(self._id)


class SignalSampler(_Counts):
    """Sampling on a wall-clock schedule, handled in the main thread on SIGPROF (the default)."""

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
        self._active = False
        self._handling = False
        self._timer: _WallTimer | None = None
        self._rng = random.Random()
        self._next = 0.0
        self._last = 0.0
        self._next_emit = 0.0
        self._excluded: set[int] = set()
        self._prev: signal._HANDLER = signal.SIG_DFL

    @staticmethod
    def available() -> bool:
        """Whether this thread may install the SIGPROF handler and nobody else has one."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if not sys.platform.startswith("linux"):
            return False
        try:
            return signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, signal.SIG_IGN, None)
        except (ValueError, AttributeError):
            return False

    def _gap(self) -> float:
        return self._period * self._rng.uniform(1 - JITTER, 1 + JITTER)

    def start(self) -> None:
        """Start; raises OSError when the timer cannot be made (the caller falls back)."""
        self._timer = _WallTimer()
        self._excluded = self._exclude()
        self._prime(self._excluded)
        self._prev = signal.signal(signal.SIGPROF, self._on_signal)
        signal.siginterrupt(signal.SIGPROF, False)  # SA_RESTART: interrupted calls resume
        self._active = True
        self._last = time.monotonic()
        self._next_emit = self._last + self.window
        self._next = self._last + self._gap()
        self._timer.at(self._next, self._period)

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False  # a SIGPROF already pending finds the handler inert
        if self._timer is not None:
            self._timer.delete()
            self._timer = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGPROF, self._prev)
        self.emit()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._active or self._handling:
            return  # a signal inside the handler: its wake-up is counted by the next one
        self._handling = True
        try:
            self._handle(frame)
        finally:
            self._handling = False
        del frame

    def _handle(self, frame: FrameType | None) -> None:
        now = time.monotonic()
        # The scheduled times this sample stands for: each one saw the stack this one sees.
        # Python code answers a signal at once; a C call that holds the GIL answers when it
        # returns, still on its line, so the times that passed meanwhile were all in it.
        first, n = self._next, 0
        while self._next <= now:
            n += 1
            self._next += self._gap()
        if n:
            wall, self._last = now - self._last, now
            while frame is not None and frame.f_code.co_filename == __file__:
                frame = frame.f_back  # a signal taken as a handler ended: not our frames
            main = (threading.get_ident(), frame) if frame is not None else None
            del frame
            late = now - first
            if late > LATE and wall > 0:
                # Late: the main thread held the GIL in a C call from the first scheduled time
                # on, so its CPU since then was all in the call; before it, since the last
                # sample, it went from where it was then into the call at a moment not known.
                self._charge(self._excluded, main, max(0.0, wall - late) / wall)
            else:
                self._charge(self._excluded, main)
            del main
        if now >= self._next_emit:
            self._next_emit = now + self.window
            self.emit()
            self._excluded = self._exclude()
        # Armed again only now, so that no signal comes inside the handler; times that passed
        # while it ran were spent here, in the sampler, and are not charged to anyone.
        end = time.monotonic()
        while self._next <= end:
            self._next += self._gap()
        assert self._timer is not None
        self._timer.at(self._next, self._period)


class ThreadSampler(_Counts):
    """CPU-time sampling from a daemon thread: where SIGPROF cannot be used (``init()`` outside
    the main thread, or another SIGPROF handler installed)."""

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
        self._running = threading.Lock()
        """Held while sampling runs; released by :meth:`stop`, which wakes the thread."""
        self._running.acquire()
        self.thread = threading.Thread(target=self._main, name="edgescope-profiler", daemon=True)

    def start(self) -> None:
        self._prime(self._exclude())
        self.thread.start()

    def stop(self) -> None:
        if self._running.locked():
            self._running.release()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5.0)

    def _main(self) -> None:
        period = self._period
        rng = random.Random()
        me = threading.get_ident()
        excluded = self._exclude() | {me}
        next_wake = time.monotonic() + period * rng.uniform(1 - JITTER, 1 + JITTER)
        next_emit = time.monotonic() + self.window
        # Never a wait of 0, which would not hand the GIL over.
        while not self._running.acquire(timeout=max(MIN_WAIT, next_wake - time.monotonic())):
            self._charge(excluded)
            now = time.monotonic()
            next_wake += period * rng.uniform(1 - JITTER, 1 + JITTER)
            if next_wake < now:  # fell behind (a long GIL hold): skip, never burst
                next_wake = now + period * rng.uniform(1 - JITTER, 1 + JITTER)
            if now >= next_emit:
                self.emit()
                next_emit = now + self.window
                excluded = self._exclude() | {me}
        self._running.release()
        self.emit()


def start_sampler(
    push: Callable[[StackSamples], None],
    *,
    run: int = 0,
    hz: float = DEFAULT_HZ,
    window: float = 1.0,
    exclude: Callable[[], set[int]] = set,
) -> Sampler:
    """Start the sampler this thread can run (see the module's docstring)."""
    if SignalSampler.available():
        sig = SignalSampler(push, run=run, hz=hz, window=window, exclude=exclude)
        try:
            sig.start()
        except OSError:
            sig.stop()  # no POSIX timer here: the thread samples instead
        else:
            return sig
    thread = ThreadSampler(push, run=run, hz=hz, window=window, exclude=exclude)
    thread.start()
    return thread
