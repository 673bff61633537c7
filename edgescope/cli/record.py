"""``edgescope record -o FILE [--profile python|perf|bpftrace] [--interval S] -- CMD [ARGS...]``

Runs CMD with an in-process collector and writes one trace file: CMD's own run (its process
tree sampled every interval: CPU, RSS and peak RSS, threads, cgroup memory), the device's
system, thermal and GPU samples (the collector's samplers, those this machine has; each absent
source is named in an event with the reason), every run CMD records with the SDK, which
finds the collector through ``EDGESCOPE_SOCKET``, and the events the collector's detectors find
in all of it (non-finite loss, loss spikes, step-time regressions and their cause, memory
growth towards the limit, OOM kills). A CMD that never imports edgescope still
gets its process and system record.

``--profile perf|bpftrace`` samples CMD's native stacks from outside; ``--profile python`` runs
the SDK's in-process sampler in every Python CMD starts, whether it calls ``edgescope.init()``
or not (see :mod:`edgescope.sdk._autoprofile`); when none recorded stacks, an event says why.

CMD's stderr passes through to ``record``'s as it comes, and its last lines are kept: when CMD
fails (a non-zero exit, a signal), the trace gets a ``stderr`` event whose message is the last
line and whose ``detail["traceback"]`` holds the last :data:`STDERR_TAIL_LINES` lines (at most
:data:`STDERR_TAIL_CHARS` characters), so a crash without the SDK still shows its traceback in
``inspect``, ``export --events`` and the TUI. CMD's stderr is therefore a pipe, not the
terminal (a program that colours only a terminal will not colour); if ``record`` itself is
killed, CMD's next write to stderr fails (EPIPE).

FILE is written in place, so that a kill of ``record`` leaves what was flushed: a new file, or
an old regular file replaced; a symbolic link, a FIFO or a device is refused
(:func:`edgescope_tracing.files.make_way`), and the file is created with ``O_EXCL``.

Exit code: CMD's (128+N when a signal N ended it). SIGTERM is forwarded to CMD; so is SIGINT,
except when it came from the terminal, which delivered it to CMD already (they share the
foreground process group). The trace is closed cleanly when CMD ends; if ``record`` itself is
killed, the file holds everything up to the last flush (at most about a second before).

Errors that stop ``record`` before CMD starts, each in one sentence: no CMD, a CMD that cannot
be found or run, a FILE that cannot be written, an unknown ``--profile`` backend or one this
machine cannot run, a bad ``--interval``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgescope.errors import EdgescopeError, UsageError

if TYPE_CHECKING:
    from edgescope_collector.pipeline import Pipeline
    from edgescope_tracing import Record, RunStart, TraceWriter

__all__ = ["add_parser"]

BACKENDS = ("python", "perf", "bpftrace")
WRITER_FLUSH = 0.5
"""Seconds a frame may wait before it is written: what killing ``record`` can lose, plus a poll."""
MAX_SOCKET_PATH = 100
"""Bytes of a Unix socket's path that fit in ``sockaddr_un`` everywhere (108 on Linux)."""
DRAIN_TIMEOUT = 5.0
"""Seconds to wait, after CMD ends, for its SDK connections to deliver their last frames."""
STDERR_TAIL_LINES = 50
"""Lines of CMD's stderr kept for the trace when CMD fails."""
STDERR_TAIL_CHARS = 8000
"""At most this many characters of them (the SDK keeps as much of a traceback)."""
STDERR_KEEP = 64 << 10
"""Bytes of CMD's stderr held while it runs, to cut the tail from."""
STDERR_DRAIN = 1.0
"""Seconds to wait, after CMD ends, for the rest of its stderr (a child may hold it open)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="run a command and record it (metrics, system, process, stacks) into one trace",
        description="Run CMD with an in-process collector and write everything into FILE.",
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the trace to write")
    p.add_argument(
        "--profile",
        metavar="BACKEND",
        help="also sample stacks: python (the SDK's sampler in CMD), perf or bpftrace",
    )
    p.add_argument(
        "--interval",
        metavar="SECONDS",
        default="1",
        help="seconds between system and process samples (default 1)",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    p.set_defaults(func=run)


def _resolve(cmd0: str) -> str:
    """CMD's executable, or a one-sentence error (exit 127 not found, 126 cannot run)."""
    if "/" in cmd0:
        path = Path(cmd0)
        if not path.exists():
            raise EdgescopeError(f"{cmd0}: no such file", 127)
        if path.is_dir():
            raise EdgescopeError(f"{cmd0} is a directory, not a command", 126)
        if not os.access(path, os.X_OK):
            raise EdgescopeError(f"{cmd0}: permission denied (it is not executable)", 126)
        return cmd0
    found = shutil.which(cmd0)
    if found is None:
        raise EdgescopeError(f"{cmd0}: command not found", 127)
    return found


def _interval(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--interval {raw!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise UsageError(f"--interval must be between 0.05 and 3600 seconds, got {raw}")
    return value


def _check_profile(name: str | None) -> None:
    if name is None:
        return
    if name not in BACKENDS:
        raise UsageError(f"unknown profile backend {name!r} (known: {', '.join(BACKENDS)})")
    from edgescope_collector.stacks import backend_problem

    problem = backend_problem(name)
    if problem is not None:
        raise EdgescopeError(f"--profile {name} cannot run on this machine: {problem}", 2)


def _open_writer(path: str) -> TraceWriter:
    from edgescope_tracing import TraceWriter
    from edgescope_tracing.files import make_way

    make_way(path)
    try:
        return TraceWriter(path, flush_interval=WRITER_FLUSH, exclusive=True)
    except IsADirectoryError:
        raise EdgescopeError(f"cannot write {path}: it is a directory", 2) from None
    except FileExistsError:  # something was put there since make_way looked
        raise EdgescopeError(f"cannot write {path}: something else just created it", 2) from None
    except FileNotFoundError:
        raise EdgescopeError(
            f"cannot write {path}: the directory {os.path.dirname(path) or '.'} does not exist", 2
        ) from None
    except OSError as e:
        raise EdgescopeError(f"cannot write {path}: {(e.strerror or str(e)).lower()}", 2) from None


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("record needs a command to run: edgescope record -o FILE -- CMD [ARGS...]")
    interval = _interval(args.interval)
    _check_profile(args.profile)
    _resolve(cmd[0])
    writer = _open_writer(args.output)
    session = _Session(writer, cmd, interval=interval, profile=args.profile)
    try:
        code = asyncio.run(session.run())
    finally:
        session.cleanup()
    for line in session.notes:
        print(f"edgescope: {line}", file=sys.stderr)
    return code


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _terminal_sent(signum: int) -> bool:
    """Whether a SIGINT most likely came from our terminal, which sent it to CMD as well."""
    if signum != signal.SIGINT:
        return False
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


class _Session:
    """One ``record``: the collector's pipeline into one trace file, and CMD under it.

    The pipeline (``edgescope_collector.pipeline``) is the daemon's own: ingest of the SDK runs
    CMD makes, the samplers, the stack backends and the detectors. What ``record`` adds is
    CMD's own run, its signals, its stderr tail, and the single-file sink.
    """

    def __init__(
        self, writer: TraceWriter, cmd: list[str], *, interval: float, profile: str | None
    ) -> None:
        from edgescope_collector.pipeline import FileSink

        self.writer = writer
        self.cmd = cmd
        self.interval = interval
        self.profile = profile
        self.notes: list[str] = []
        self.sdk_runs = 0
        self.sink = FileSink(writer, self._write_failed)
        self._tmp = Path(tempfile.mkdtemp(prefix="edgescope-record-"))
        if len(str(self._tmp / "ingest.sock").encode()) > MAX_SOCKET_PATH:
            # A deep $TMPDIR would make the socket's path longer than AF_UNIX allows.
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = Path(tempfile.mkdtemp(prefix="edgescope-record-", dir="/tmp"))
        self.pipeline: Pipeline | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pending_signals: list[int] = []
        self._stderr = bytearray()
        """The last :data:`STDERR_KEEP` bytes of CMD's stderr."""
        self._stderr_pump: asyncio.Task[None] | None = None
        self.started = False
        """Whether CMD was started (if not, the trace file is removed at cleanup)."""

    # --- the trace ----------------------------------------------------------------------

    def _write_failed(self, why: str) -> None:
        print(f"edgescope: {why}; CMD keeps running", file=sys.stderr)

    def write(self, rec: Record) -> None:
        """Into the stream: the trace, and the detectors."""
        assert self.pipeline is not None
        self.pipeline.record(rec)

    def _event(
        self, message: str, *, run: int = -1, severity: int = 0, kind: str = "log", **detail: object
    ) -> None:
        assert self.pipeline is not None
        self.pipeline.event(message, kind=kind, severity=severity, run=run, detail=detail)

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> int:
        from edgescope_collector.errors import CollectorError
        from edgescope_collector.pipeline import Pipeline
        from edgescope_collector.samplers import Roots

        loop = asyncio.get_running_loop()

        def on_start(rs: RunStart) -> None:
            self.sdk_runs += 1

        pipeline = self.pipeline = Pipeline(
            self.sink,
            ingest_path=self._tmp / "ingest.sock",
            roots=Roots(),
            interval=self.interval,
            profile=self.profile or "python",
            stacks_per_run=False,  # the backend follows CMD's pid, from its start
            say=self.notes.append,
            on_run_start=on_start,
        )
        try:
            await pipeline.open()
        except CollectorError as e:
            raise EdgescopeError(str(e)) from None
        assert pipeline.ingest is not None
        ingest = pipeline.ingest
        try:
            for source, why in sorted(pipeline.skipped.items()):
                self._event(f"{source} not sampled: {why}", source=source, skipped=why)
            env = dict(os.environ, EDGESCOPE_SOCKET=str(ingest.path))
            if self.profile == "python":
                from edgescope.sdk._autoprofile import child_env

                child_env(env, self._tmp / "autoprofile")
            elif self.profile == "perf":
                from edgescope_collector.stacks import PERF_PYTHON_ENV

                env.update(PERF_PYTHON_ENV)
            my_run = ingest.allocate_run()
            started = time.time_ns() // 1000
            # Handlers first: a signal that arrives while CMD starts is forwarded once it runs.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._forward, sig)
            try:
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *self.cmd, env=env, stderr=asyncio.subprocess.PIPE
                    )
                except OSError as e:
                    raise EdgescopeError(
                        f"cannot run {self.cmd[0]}: {(e.strerror or str(e)).lower()}", 126
                    ) from None
                self._proc = proc
                self.started = True
                assert proc.stderr is not None
                self._stderr_pump = asyncio.ensure_future(self._pump_stderr(proc.stderr))
                for pending in self._pending_signals:
                    self._forward(pending)
                self._start_run(my_run, proc.pid, started)
                pipeline.watch.add(my_run, proc.pid)
                if self.profile in ("perf", "bpftrace"):
                    await pipeline.attach_stacks(my_run, proc.pid)
                returncode = await self._sample_until_exit(proc, pipeline.start())
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            code = _exit_code(returncode)
            await self._finish(my_run, code)
            pipeline.watch.remove_run(my_run)
            return code
        finally:
            await pipeline.close()

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        """Pass CMD's stderr through as it comes, keeping its last bytes."""
        passing = True
        while chunk := await stream.read(65536):
            self._stderr += chunk
            if len(self._stderr) > STDERR_KEEP:
                del self._stderr[: len(self._stderr) - STDERR_KEEP]
            view = memoryview(chunk)
            while passing and view:
                try:
                    view = view[os.write(2, view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                except OSError:
                    passing = False  # our stderr is gone; the tail is still kept

    def stderr_tail(self) -> str:
        """The last lines of CMD's stderr, as text (carriage-return progress bars collapsed)."""
        text = self._stderr.decode("utf-8", "replace")
        lines = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in text.split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        tail = "\n".join(lines[-STDERR_TAIL_LINES:])
        return tail[-STDERR_TAIL_CHARS:]

    async def _stderr_event(self, run: int, code: int) -> None:
        if self._stderr_pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_pump), STDERR_DRAIN)
        if code == 0:
            return
        tail = self.stderr_tail()
        if not tail.strip():
            return
        from edgescope_tracing.summary import exit_words

        last = tail.splitlines()[-1].strip()
        if len(last) > 300:
            last = last[:297] + "..."
        n = len(tail.splitlines())
        self._event(
            f"{Path(self.cmd[0]).name} failed ({exit_words(code)}); its stderr ended: {last}",
            run=run,
            severity=2,
            kind="stderr",
            traceback=tail,
            lines=n,
        )

    def _start_run(self, run: int, pid: int, t_us: int) -> None:
        from edgescope_tracing import RunStart

        from edgescope.sdk._device import device_facts

        shown = shlex.join([Path(self.cmd[0]).name, *self.cmd[1:]])
        self.write(
            RunStart(
                run,
                uuid.uuid4().hex,
                shown if len(shown) <= 80 else shown[:77] + "...",
                socket.gethostname(),
                pid,
                {
                    "argv": self.cmd,
                    "cwd": os.getcwd(),
                    "interval": self.interval,
                    "profile": self.profile,
                },
                ("record",),
                device_facts(),
                t_us,
            )
        )

    def _forward(self, signum: int) -> None:
        proc = self._proc
        if proc is None:
            self._pending_signals.append(signum)
        elif proc.returncode is None and not _terminal_sent(signum):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    async def _sample_until_exit(
        self, proc: asyncio.subprocess.Process, loops: list[asyncio.Task[None]]
    ) -> int:
        """Wait for CMD while the pipeline's loops sample; a loop that fails is said, and CMD
        goes on."""
        exited = asyncio.ensure_future(proc.wait())
        watching: set[asyncio.Future[Any]] = {exited, *loops}
        while True:
            done, _ = await asyncio.wait(watching, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return exited.result()
            for t in done:
                watching.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    self.notes.append(f"sampling stopped after an error: {t.exception()}")

    async def _finish(self, run: int, code: int) -> None:
        from edgescope_tracing import RunEnd

        pipeline = self.pipeline
        assert pipeline is not None and pipeline.ingest is not None
        backend = await pipeline.detach_stacks(run)
        if backend is not None and self.profile == "perf":
            from edgescope_collector.stacks import python_names_note

            note = python_names_note(backend.frames())
            if note:
                self._event(f"--profile perf: {note}", run=run, stacks_note=note)
        ingest = pipeline.ingest
        if not await ingest.wait_idle(DRAIN_TIMEOUT):
            self.notes.append(
                f"{ingest.connections} process(es) still connected {DRAIN_TIMEOUT:g} s after "
                "CMD ended; their runs were closed"
            )
        await self._stderr_event(run, code)
        if self.profile == "python" and self.sdk_runs == 0:
            from edgescope.sdk._autoprofile import no_stacks_reason

            why = no_stacks_reason(self._tmp / "autoprofile")
            self._event(why, run=run, severity=1, no_stacks=why)
            self.notes.append(why)
        self.write(RunEnd(run, code, 0, time.time_ns() // 1000))

    def cleanup(self) -> None:
        """Close the trace (with its index), the samplers and the temporary socket directory."""
        if self.pipeline is not None:
            self.pipeline.close_samplers()
        try:
            self.writer.close()
        except OSError as e:
            self.notes.append(f"closing {self.writer.path} failed: {e.strerror or e}")
        else:
            if not self.started:
                # CMD never ran: the file holds nothing worth keeping.
                with contextlib.suppress(OSError):
                    os.unlink(self.writer.path)
            elif self.sink.error is None:
                self.notes.append(f"wrote {self.writer.path} ({self.sink.records} records)")
        shutil.rmtree(self._tmp, ignore_errors=True)
