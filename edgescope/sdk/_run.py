"""The SDK inside a training loop: ``init``, ``log``, ``mark``, ``finish``.

Where a run goes, decided once at ``init``:

- to the collector, when ``EDGESCOPE_SOCKET`` is set or the default ingest socket
  (:func:`edgescope_tracing.paths.ingest_socket`) exists and accepts the connection: the SDK
  sends a trace stream (the bytes of a trace file) in which its run is number 0;
- otherwise to a trace file of its own, ``$EDGESCOPE_DIR/NAME-YYYYmmdd-HHMMSS-ID.est``
  (``EDGESCOPE_DIR`` defaults to ``./edgescope-runs``), whose path ``init`` prints on stderr.

If the collector hangs up, or neither reads nor confirms for ``STALL_TIMEOUT`` seconds (10, or
``EDGESCOPE_STALL_TIMEOUT``) mid-run, what it had not confirmed and the rest of the run go to
such a file (see :mod:`edgescope.sdk._ship`); every 2 s the SDK looks whether the collector is
back, and then the run goes on there (re-attached, same run id). A default socket owned by
another user (not root) is not used: the run goes to a file, and ``init`` says why.

The hot path: ``log()`` checks its arguments (a bad value or name is a ``TypeError`` or
``ValueError`` right there), appends ``(step, time_ns, name, value)`` (one value) or ``(step,
time_ns, {name: value})`` (a copy of the dict) to a bounded deque and returns. It never raises
for transport trouble.

Nothing logged is lost while the sink can take it. Policy: **caller-runs**. When ``log()`` (or
``mark()``) finds the deque full, because the loop logs faster than the shipper thread can
follow under the GIL, the calling thread drains the deque itself: it encodes
the batch and hands it to the sink, then appends its own item and returns (see
:mod:`edgescope.sdk._ship`). At ordinary rates the deque never fills and ``log()`` costs an
append; under overload each ``buffer_size``-th call pays for the batch, and no value is lost.
With a collector that reads slowly that call also waits for the collector to take bytes; a
collector that takes nothing for the stall timeout is given up on (the rest goes to a file), so
no call waits longer than ``STALL_TIMEOUT`` seconds, once per run. Values are dropped (said once
on stderr, counted in ``RunEnd.dropped``, and marked as a ``gap`` event with its time range)
only where the sink cannot take them at all: a full disk past the bytes held in memory
(``MAX_HELD_BYTES``), or no collector and no writable file.

Memory cap: the deque holds at most ``buffer_size`` calls (default 32,768) plus one per thread
logging at the same moment and the stack sampler's windows since the last drain (one a flush
interval; a window never waits: its SIGPROF handler may have interrupted the very thread that
is draining), the shipper's columns at most ``BATCH_VALUES`` values between
flushes plus one buffer, a socket sink at most ``MAX_BACKLOG_ITEMS`` (65,536) items that the
collector has not confirmed before the callers wait, a file sink ``MAX_HELD_BYTES`` (8 MiB)
while its disk is full. Measured with 1,000,000 values logged as fast as they go: the peak RSS
grew by 11 MiB with one-key calls and 33 MiB with ten-key calls (the buffer then holds 32,768
dicts), the same with a collector that never reads (it is given up on after the stall timeout).

Durability: ``finish()`` (also at interpreter exit, on an uncaught exception, and on SIGTERM
when no other handler was installed) drains everything into the trace and writes ``RunEnd``.
A frame reaches the file or the socket at least every ``flush_interval`` seconds (default 0.5,
``EDGESCOPE_FLUSH_INTERVAL``), which is what a SIGKILL can cost.

Exit codes in ``RunEnd``: ``finish(code)`` as given; the context manager 0, 1 on an exception
(recorded as an ``exception`` event with its traceback), 130 on ``KeyboardInterrupt``, the code
of a ``SystemExit``; an uncaught exception 1 (130); SIGTERM 143 (a ``signal`` event first, then
the process dies by SIGTERM as it would have); interpreter exit without any of these ``None``
(Python does not tell an exit handler the exit status).

Fork: a child process does not inherit the run. If it logs, it starts a run of its own (named
after the parent's, tagged ``fork`` and ``parent:RUN_ID``, ``pid`` its own) on its own
connection or in its own file; it is finished at the child's exit, including the exit of a
``multiprocessing`` worker.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from edgescope_tracing import Event, RunStart, StreamEncoder, TraceError
from edgescope_tracing.paths import default_ingest_socket, ingest_socket

from edgescope.sdk._device import device_facts
from edgescope.sdk._profiler import DEFAULT_HZ, Sampler, start_sampler
from edgescope.sdk._ship import FileSink, NullSink, Shipper, Sink, SocketSink, notify
from edgescope.sdk._values import (
    MAX_MARK_LEN,
    check_step,
    check_tags,
    jsonable_config,
    normalize_metrics,
)

__all__ = ["Run", "init", "log", "mark", "finish"]

DEFAULT_FLUSH_INTERVAL = 0.5
DEFAULT_BUFFER_SIZE = 32_768
STALL_TIMEOUT = 10.0
"""Seconds a collector may take nothing while bytes wait before the SDK falls back to a file."""
FINISH_TIMEOUT = 15.0
_time_ns = time.time_ns
_RUN_ID = re.compile(r"[0-9a-f]{8,64}")
"""A run id a caller may give ``init`` (its own are 32 digits)."""
_NO_KEY: Any = object()
"""``Run._k1`` before any one-value call: equal to no key a user's dict can hold."""

_active: Run | None = None
_forked_from: Run | None = None
_lock = threading.RLock()
_hooks = False
_kill_after: int | None = None
_prev_excepthook = sys.excepthook


class Run:
    """One training run. Returned by :func:`init`; also a context manager.

    ``with edgescope.init(name="mnist") as run:`` finishes the run when the block ends: exit
    code 0, or 1 with the exception recorded as an event (130 for ``KeyboardInterrupt``, the
    code of a ``SystemExit``).
    """

    __slots__ = (
        "_buf",
        "_cap",
        "_dir",
        "_done",
        "_dropped",
        "_finisher",
        "_k1",
        "_keys",
        "_pid",
        "_profiler",
        "_shipper",
        "_stall",
        "_start",
        "_state",
        "_step",
        "_where",
        "collector",
        "name",
        "path",
        "run_id",
    )

    def __init__(
        self,
        start: RunStart,
        sink: Sink,
        *,
        flush_interval: float,
        buffer_size: int,
        profile_hz: float | None,
        run_dir: Path,
    ) -> None:
        self._buf: deque[Any] = deque()
        self._cap = buffer_size
        self._keys: set[str] = set()
        self._k1: str = _NO_KEY
        """The name of the last one-value ``log()`` call (its fast path looks up only this)."""
        self._step = -1
        """The step of the last ``log()`` call."""
        self._dropped = 0
        self._state = "running"
        self._pid = os.getpid()
        self._start = start
        self._dir = run_dir
        self._finisher = 0
        self._done = threading.Event()
        self.name = start.name
        """The run's name."""
        self.run_id = start.run_id
        """The run's unique id (hex)."""
        self.path: Path | None = sink.path if isinstance(sink, FileSink) else None
        """The trace file this process writes, or None while it streams to a collector."""
        self.collector: str | None = sink.where if isinstance(sink, SocketSink) else None
        """The collector's ingest socket the run streams to, or None."""
        self._where = self.collector
        self._stall = sink.stall_timeout if isinstance(sink, SocketSink) else STALL_TIMEOUT
        self._shipper = Shipper(
            start,
            sink,
            self._buf,
            flush_interval=flush_interval,
            fallback=self._fallback_path,
            reconnect=self._reconnect if isinstance(sink, SocketSink) else None,
            attached=self._attached,
        )
        self._shipper.start()
        self._profiler: Sampler | None = None
        if profile_hz is not None:
            self._profiler = start_sampler(
                self._push_stacks,
                hz=profile_hz,
                window=flush_interval,
                exclude=lambda: {t for t in (self._shipper.thread.ident,) if t is not None},
            )

    def __repr__(self) -> str:
        where = self.path or self.collector
        return f"<edgescope.Run {self.name!r} {self.run_id[:12]} {self._state} -> {where}>"

    def _reconnect(self) -> Sink | None:
        """A new connection to the collector this run started with, if it is back."""
        assert isinstance(self._where, str)
        path = Path(self._where)
        if _foreign_owner(path) is not None:
            return None
        sock, _why = _connect(path, timeout=0.2)
        if sock is None:
            return None
        return SocketSink(sock, self._where, self._stall)

    def _attached(self) -> None:
        """The collector confirmed the re-attached run: it, not a file, holds the rest."""
        self.collector = self._where
        self.path = None

    def _fallback_path(self) -> Path:
        path = _new_path(self._dir, self.name, self.run_id)
        self.path = path
        self.collector = None
        return path

    # --- the hot path ---------------------------------------------------------------------

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record metric values at a step; see :func:`edgescope.log`."""
        _log(metrics, step, self)

    def _overflow(self, item: Any) -> None:
        """``log()`` found the deque full, or the run not running (finished, or forked).

        Full: caller-runs, this thread ships the deque, then its item goes in.
        """
        if self._state == "running":
            self._caller_runs()
            self._buf.append(item)
            return
        if self._pid != os.getpid():
            metrics = item[2] if len(item) == 3 else {item[2]: item[3]}
            _log(metrics, item[0], _child_run())
            return
        raise RuntimeError(f"edgescope.log: run {self.name!r} has finished")

    def _caller_runs(self) -> None:
        shipper = self._shipper
        try:
            shipper.caller_runs()
        finally:
            signum, shipper.deferred_signal = shipper.deferred_signal, None
            if signum is not None:
                _on_sigterm(signum, None)  # arrived while this thread held the shipper's lock

    def _push(self, rec: Event, *, force: bool = False) -> None:
        if self._pid != os.getpid():
            _child_run()._push(rec, force=force)
            return
        if self._state != "running":
            raise RuntimeError(f"edgescope: run {self.name!r} has finished")
        if (
            not force
            and len(self._buf) >= self._cap
            and threading.get_ident() not in self._shipper.shipping  # a signal handler's mark()
        ):
            self._caller_runs()
        self._buf.append(rec)

    def _push_stacks(self, rec: Any) -> None:
        # From the sampler: its own thread, or a SIGPROF handler in the main thread, which may
        # have interrupted that thread's own caller-runs (the shipper's lock held, the deque
        # not yet drained), where waiting for the lock would wait for itself forever. So a
        # window never waits: it goes in, over the cap if need be (a window or two per flush
        # interval, which the next drain takes).
        self._buf.append(rec)

    def mark(self, text: str) -> None:
        """Record an annotation event (``kind="mark"``) with this text, now."""
        if not isinstance(text, str):
            raise TypeError(f"edgescope.mark: text must be a string, got {type(text).__name__}")
        if len(text) > MAX_MARK_LEN:
            raise ValueError(
                f"edgescope.mark: text is {len(text)} characters; at most {MAX_MARK_LEN}"
            )
        self._push(Event("mark", str(text), run=0, t_us=_time_ns() // 1000))

    # --- ending ---------------------------------------------------------------------------

    def _sync(self, timeout: float = 10.0) -> bool:
        """Wait until what was logged so far has been shipped (for tests and benchmarks)."""
        return self._state == "running" and self._shipper.sync(timeout)

    @property
    def dropped(self) -> int:
        """Items (metric values, events, stack windows) that could not be recorded so far."""
        return self._dropped + self._shipper.dropped

    @property
    def finished(self) -> bool:
        return self._state == "finished"

    def _record_exception(
        self,
        tp: type[BaseException],
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        text = "".join(traceback.format_exception(tp, exc, tb))
        message = f"{tp.__qualname__}: {exc}" if str(exc) else tp.__qualname__
        if len(message) > 1000:
            message = message[:997] + "..."
        self._push(
            Event(
                "exception",
                message,
                run=0,
                severity=2,
                detail={"type": f"{tp.__module__}.{tp.__qualname__}", "traceback": text[-8000:]},
                t_us=_time_ns() // 1000,
            ),
            force=True,
        )

    def finish(self, exit_code: int | None = None) -> None:
        """End the run: everything logged is written or sent, then ``RunEnd``. Idempotent."""
        global _active, _kill_after
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
        ):
            raise TypeError(
                "edgescope.finish: exit_code must be an int or None, got "
                f"{type(exit_code).__name__}"
            )
        if self._pid != os.getpid() or self._state != "running":
            return
        with _lock:
            if self._state != "running":
                return
            self._state = "finishing"
            self._finisher = threading.get_ident()
            try:
                if _active is self:
                    _active = None
                if self._profiler is not None:
                    self._profiler.stop()
                self._cap = -1
                if not self._shipper.stop(exit_code, lambda: self._dropped, FINISH_TIMEOUT):
                    notify(
                        f"run {self.name!r} could not be finished within {FINISH_TIMEOUT:g} s; "
                        "its end may be missing from the trace"
                    )
            finally:
                self._state = "finished"
                self._done.set()
        if _kill_after is not None and threading.current_thread() is threading.main_thread():
            signum, _kill_after = _kill_after, None
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        tp: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if tp is None:
            self.finish(0)
            return
        if issubclass(tp, SystemExit):
            code = exc.code if isinstance(exc, SystemExit) else None
            self.finish(code if isinstance(code, int) else (0 if code is None else 1))
            return
        if self._state == "running":
            self._record_exception(tp, exc, tb)
        self.finish(130 if issubclass(tp, KeyboardInterrupt) else 1)


# --- the module-level API -------------------------------------------------------------------


def log(metrics: dict[str, Any], step: int | None = None) -> None:
    """Record metric values, e.g. ``edgescope.log({"loss": loss, "lr": lr}, step=i)``.

    Values: Python ints (converted to float exactly, or refused) and floats, bools, numpy
    scalars, 0-d arrays and 0-d tensors (read with ``.item()``). NaN and infinities are kept.
    Names: non-empty strings of at most 200 characters, at most 10,000 per run. ``step``: an
    integer >= 0; without it, the step after the last one (0 first).

    Returns at once: the values go to a bounded buffer that a background thread ships. A bad
    argument raises ``TypeError`` or ``ValueError`` here; transport trouble never raises.
    """
    run = _active
    if run is None:
        return _log(metrics, step, _no_active_run())
    if step is None:
        step = run._step + 1
        if step >> 62:  # after a step of 2**62 - 1
            return _log(metrics, None, run)
    elif type(step) is not int or step >> 62:  # not an int, negative, or 2**62 and above
        return _log(metrics, step, run)
    if type(metrics) is not dict:
        return _log(metrics, step, run)
    if len(metrics) == 1:
        # One float under the name of the last one-value call: reading that value (a float,
        # immutable) captures the call without copying the dict.
        k = run._k1
        v = metrics.get(k)
        if type(v) is not float:
            return _log(metrics, step, run)
        run._step = step
        buf = run._buf
        if len(buf) < run._cap:
            return buf.append((step, _time_ns(), k, v))
        return run._overflow((step, _time_ns(), k, v))
    # Copy first (the caller may reuse its dict), then check the copy: floats under names
    # seen before pass here; anything else goes through the full checks.
    values = metrics.copy()
    keys = run._keys
    for k in values:
        if type(values[k]) is not float or k not in keys:
            return _log(values, step, run)
    run._step = step
    buf = run._buf
    if len(buf) < run._cap:
        return buf.append((step, _time_ns(), values))
    return run._overflow((step, _time_ns(), values))


def _log(metrics: object, step: object, run: Run) -> None:
    """``Run.log()``, and ``log()`` for the calls its fast paths leave: the full checks."""
    if step is None:
        step = run._step + 1
    if type(step) is not int or step >> 62:
        step = check_step(step)
    if type(metrics) is dict:
        if len(metrics) == 1:  # as in log()
            k = run._k1
            v = metrics.get(k)
            if type(v) is float:
                run._step = step
                buf = run._buf
                if len(buf) < run._cap:
                    return buf.append((step, _time_ns(), k, v))
                return run._overflow((step, _time_ns(), k, v))
        values = metrics.copy()
        keys = run._keys
        for k in values:
            if type(values[k]) is not float or k not in keys:
                values = normalize_metrics(values, keys)
                break
    else:
        values = normalize_metrics(metrics, run._keys)
    run._step = step
    if len(values) == 1:
        for k in values:
            run._k1 = k
    buf = run._buf
    if len(buf) < run._cap:
        buf.append((step, _time_ns(), values))
    else:
        run._overflow((step, _time_ns(), values))


def mark(text: str) -> None:
    """Record an annotation on the active run's timeline, e.g. ``mark("lr warm-up done")``."""
    run = _active
    if run is None:
        run = _no_active_run("mark")
    run.mark(text)


def finish(exit_code: int | None = None) -> None:
    """Finish the active run (no-op without one). Also done for you at exit."""
    run = _active
    if run is not None:
        run.finish(exit_code)


def _no_active_run(what: str = "log") -> Run:
    if _forked_from is not None:
        return _child_run()
    raise RuntimeError(f"edgescope.{what}: no run is active; call edgescope.init() first")


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    """A number of seconds from the environment; a bad one is said on stderr, never raised.

    The setting lives outside the training script, so a typo there must not stop the run:
    ``init`` warns and uses ``default``.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:  # also NaN
        notify(f"{name}={raw!r} is not a number from {lo:g} to {hi:g}; using {default:g}")
        return default
    return value


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "run"


def _new_path(run_dir: Path, name: str, run_id: str, taken: bool = False) -> Path:
    """``NAME-YYYYmmdd-HHMMSS-ID.est``; where that is taken (processes that join one run id in
    the same second), with ``-PID`` after the id."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = run_dir / f"{_safe_name(name)}-{stamp}-{run_id[:8]}.est"
    if taken or os.path.lexists(path):
        path = path.with_name(f"{path.stem}-{os.getpid()}.est")
    return path


def _default_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    return Path(argv0).stem or "python"


def _connect(path: Path, timeout: float = 1.0) -> tuple[socket.socket | None, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (OSError, ValueError) as e:
        sock.close()
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or "timed out"
        return None, reason
    return sock, ""


def _foreign_owner(path: Path) -> int | None:
    """The uid owning the default socket when that is neither us nor root (someone else's
    socket in a shared directory must not receive our run), else None."""
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return None
    return None if uid in (os.geteuid(), 0) else uid


def _profile_setting(profile: bool | None) -> bool:
    if profile is not None:
        if not isinstance(profile, bool):
            raise TypeError(f"edgescope.init: profile must be True or False, got {profile!r}")
        return profile
    return os.environ.get("EDGESCOPE_PROFILE", "").strip().lower() in ("1", "true", "python")


def init(
    name: str | None = None,
    config: Any = None,
    tags: Any = None,
    profile: bool | None = None,
    *,
    profile_hz: float = DEFAULT_HZ,
    flush_interval: float | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
) -> Run:
    """Start a run and make it the active one (finishing any run already active).

    ``name`` defaults to the script's name; ``config`` is a dict (or an argparse.Namespace) of
    hyperparameters; ``tags`` a list of strings; ``profile=True`` samples the Python stacks of
    every thread about ``profile_hz`` times a second and charges each thread the CPU time its
    own clock advanced (a CPU profile: idle threads show nothing; see
    :mod:`edgescope.sdk._profiler`);
    ``EDGESCOPE_PROFILE=python`` turns it on when ``profile`` is not given.
    ``flush_interval`` (seconds, default 0.5 or ``EDGESCOPE_FLUSH_INTERVAL``) bounds what a
    SIGKILL can lose; ``buffer_size`` bounds the calls waiting to be shipped; ``dir`` overrides
    ``EDGESCOPE_DIR`` for the run's own file.
    ``run_id`` (lower-case hex, 8 to 64 digits) joins a run that other processes record too:
    each process that inits with the same id adds to one run (a Flower client whose every
    message runs in a fresh process); readers merge the parts by id. Default: a new id.
    """
    global _active
    if name is None:
        name = _default_name()
    elif not isinstance(name, str):
        raise TypeError(f"edgescope.init: name must be a string, got {type(name).__name__}")
    elif not name.strip():
        raise ValueError("edgescope.init: name is empty")
    cfg = jsonable_config(config)
    tag_list = check_tags(tags)
    prof = _profile_setting(profile)
    if not isinstance(profile_hz, int | float) or not 0 < profile_hz <= 1000:
        raise ValueError(f"edgescope.init: profile_hz must be in (0, 1000], got {profile_hz!r}")
    fi = (
        _env_float("EDGESCOPE_FLUSH_INTERVAL", DEFAULT_FLUSH_INTERVAL, 0.01, 60)
        if flush_interval is None
        else flush_interval
    )
    if not isinstance(fi, int | float) or not 0.01 <= fi <= 60:
        raise ValueError(f"edgescope.init: flush_interval must be 0.01 to 60 seconds, got {fi!r}")
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 16:
        raise ValueError(f"edgescope.init: buffer_size must be an int >= 16, got {buffer_size!r}")
    run_dir = Path(dir if dir is not None else os.environ.get("EDGESCOPE_DIR") or "edgescope-runs")
    if run_id is not None and (not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id)):
        raise ValueError(
            f"edgescope.init: run_id must be 8 to 64 lower-case hex digits, got {run_id!r}"
        )
    with _lock:
        if _active is not None:
            _active.finish()
        run = _open_run(
            name,
            cfg,
            tag_list,
            profile_hz=float(profile_hz) if prof else None,
            flush_interval=float(fi),
            buffer_size=buffer_size,
            run_dir=run_dir.absolute(),
            shown_dir=run_dir,
            run_id=run_id,
        )
        _install_hooks()
        _active = run
    return run


def _open_run(
    name: str,
    config: dict[str, Any],
    tags: tuple[str, ...],
    *,
    profile_hz: float | None,
    flush_interval: float,
    buffer_size: int,
    run_dir: Path,
    shown_dir: Path,
    run_id: str | None = None,
) -> Run:
    run_id = run_id or uuid.uuid4().hex
    start = RunStart(
        0,
        run_id,
        name,
        socket.gethostname(),
        os.getpid(),
        config,
        tags,
        device_facts(),
        _time_ns() // 1000,
    )
    try:
        StreamEncoder().add(start)
    except TraceError as e:
        raise ValueError(f"edgescope.init: the config is too large to record: {e}") from None
    except TypeError as e:
        raise TypeError(f"edgescope.init: the config cannot be recorded: {e}") from None

    sink: Sink | None = None
    env_socket = os.environ.get("EDGESCOPE_SOCKET")
    sock_path = ingest_socket()
    foreign = None if env_socket else _foreign_owner(sock_path)
    if foreign is not None:
        notify(f"{sock_path} belongs to uid {foreign}, not to us: not streaming to it")
    elif env_socket or sock_path.exists():
        sock, why = _connect(sock_path)
        if sock is not None:
            stall = _env_float("EDGESCOPE_STALL_TIMEOUT", STALL_TIMEOUT, 0.1, 3600)
            sink = SocketSink(sock, str(sock_path), stall)
        elif env_socket or sock_path != default_ingest_socket():
            notify(f"no collector at {sock_path} ({why}); writing the run to a file instead")
    if sink is None:
        try:
            path = _new_path(run_dir, name, run_id)
            try:
                sink = FileSink(path, flush_interval, name)
            except FileExistsError:  # another process of the run took it just now
                path = _new_path(run_dir, name, run_id, taken=True)
                sink = FileSink(path, flush_interval, name)
        except OSError as e:
            where = str(e.filename or run_dir)
            sink = NullSink(where, str(e.strerror or e))
            print(
                f"edgescope: cannot write run {name!r} to {where} ({e.strerror or e}); "
                "this run is not recorded",
                file=sys.stderr,
            )
        else:
            shown = shown_dir / path.name
            print(f"edgescope: recording run {name!r} to {shown}", file=sys.stderr)
    return Run(
        start,
        sink,
        flush_interval=flush_interval,
        buffer_size=buffer_size,
        profile_hz=profile_hz,
        run_dir=run_dir,
    )


def _child_run() -> Run:
    """The run of a forked child that logs: opened on its first call."""
    global _active
    with _lock:
        if _active is not None:
            return _active
        parent = _forked_from
        if parent is None:
            raise RuntimeError("edgescope: no run is active; call edgescope.init() first")
        pid = os.getpid()
        run = _open_run(
            f"{parent.name}.fork{pid}",
            parent._start.config,
            (*parent._start.tags, "fork", f"parent:{parent.run_id}"),
            profile_hz=None,
            flush_interval=parent._shipper.flush_interval,
            buffer_size=parent._cap if parent._cap > 0 else DEFAULT_BUFFER_SIZE,
            run_dir=parent._dir,
            shown_dir=parent._dir,
        )
        _active = run
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # multiprocessing workers leave through os._exit(), which skips atexit; its own
            # exit function runs these finalizers first.
            mp_util.Finalize(None, _finish_at_exit, exitpriority=-100)
        return run


# --- process hooks: exit, uncaught exception, SIGTERM, fork ----------------------------------


def _finish_at_exit() -> None:
    run = _active
    if run is not None:
        run.finish()


def _excepthook(tp: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    run = _active
    if run is not None and run._state == "running" and not issubclass(tp, SystemExit):
        try:
            run._record_exception(tp, exc, tb)
        finally:
            run.finish(130 if issubclass(tp, KeyboardInterrupt) else 1)
    _prev_excepthook(tp, exc, tb)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _kill_after
    run = _active
    if run is None and _forked_from is not None and _forked_from._state == "finishing":
        run = _forked_from
    if (
        run is not None
        and run._state == "running"
        and run._pid == os.getpid()
        and threading.get_ident() in run._shipper.shipping
    ):
        # This thread was interrupted while it shipped the buffer (caller-runs), maybe holding
        # the shipper's lock: finishing now would wait for itself. It finishes when it is done.
        run._shipper.deferred_signal = signum
        return
    if run is not None and run._state == "finishing":
        if run._finisher == threading.get_ident():
            # finish() was interrupted in this (the main) thread: it re-raises when done.
            _kill_after = signum
            return
        run._done.wait(FINISH_TIMEOUT)
    elif run is not None and run._pid == os.getpid() and run._state == "running":
        try:
            run._push(
                Event(
                    "signal",
                    f"received {signal.Signals(signum).name}",
                    run=0,
                    severity=1,
                    t_us=_time_ns() // 1000,
                ),
                force=True,
            )
        finally:
            run.finish(128 + signum)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    global _active, _forked_from, _lock, _kill_after
    _lock = threading.RLock()
    _kill_after = None
    run = _active
    if run is None:
        return
    # The parent's thread, buffer and connection stay the parent's: none is used here. Our
    # copy of the connection's descriptor is closed, so that the collector sees the parent's
    # end of stream when the parent closes it, not when the last child exits.
    run._buf = deque()
    run._cap = -1
    run._state = "inherited"
    sink = run._shipper.sink
    if isinstance(sink, SocketSink):
        with contextlib.suppress(OSError):
            os.close(sink.sock.detach())
    _forked_from = run
    _active = None


def _install_hooks() -> None:
    global _hooks, _prev_excepthook
    if _hooks:
        return
    _hooks = True
    atexit.register(_finish_at_exit)
    _prev_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    os.register_at_fork(after_in_child=_after_fork_in_child)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
