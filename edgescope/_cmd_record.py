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
or not (see :mod:`edgescope._autoprofile`); when none recorded stacks, an event says why.

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
from typing import TYPE_CHECKING

from .errors import EdgescopeError, UsageError

if TYPE_CHECKING:
    from edgescope_collector.detectors import Detectors
    from edgescope_collector.ingest import IngestServer
    from edgescope_collector.samplers import ProcessWatch, Sampler
    from edgescope_collector.stacks import StackBackend
    from edgescope_tracing import Record, RunEnd, RunStart, TraceWriter

__all__ = ["add_parser"]

BACKENDS = ("python", "perf", "bpftrace")
WRITER_FLUSH = 0.5
"""Seconds a frame may wait before it is written: what killing ``record`` can lose, plus a poll."""
POLL = 0.25
MAX_SOCKET_PATH = 100
"""Bytes of a Unix socket's path that fit in ``sockaddr_un`` everywhere (108 on Linux)."""
DRAIN_TIMEOUT = 5.0
"""Seconds to wait, after CMD ends, for its SDK connections to deliver their last frames."""


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

    try:
        return TraceWriter(path, flush_interval=WRITER_FLUSH)
    except IsADirectoryError:
        raise EdgescopeError(f"cannot write {path}: it is a directory", 2) from None
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
    """One ``record``: the ingest socket, the samplers, CMD, and the trace they all go to."""

    def __init__(
        self, writer: TraceWriter, cmd: list[str], *, interval: float, profile: str | None
    ) -> None:
        self.writer = writer
        self.cmd = cmd
        self.interval = interval
        self.profile = profile
        self.notes: list[str] = []
        self.records = 0
        self.sdk_runs = 0
        self._write_error: str | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="edgescope-record-"))
        if len(str(self._tmp / "ingest.sock").encode()) > MAX_SOCKET_PATH:
            # A deep $TMPDIR would make the socket's path longer than AF_UNIX allows.
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = Path(tempfile.mkdtemp(prefix="edgescope-record-", dir="/tmp"))
        self._samplers: list[Sampler] = []
        self._backend: StackBackend | None = None
        self._detectors: Detectors | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pending_signals: list[int] = []
        self.started = False
        """Whether CMD was started (if not, the trace file is removed at cleanup)."""

    # --- the trace ----------------------------------------------------------------------

    def write(self, rec: Record) -> None:
        """Append to the trace, and the events the detectors find in it."""
        self._append(rec)
        if self._detectors is None:
            return
        try:
            events = self._detectors.feed(rec)
        except Exception as e:  # a detector's bug must not stop recording: said once, then off
            self._detectors_failed(e)
            return
        for ev in events:
            self._append(ev)

    def _detectors_failed(self, e: Exception) -> None:
        self._detectors = None
        why = f"detectors stopped after an error: {type(e).__name__}: {e}"
        self.notes.append(why)
        self._append(self._event_rec(why, severity=2))

    def _append(self, rec: Record) -> None:
        """Append to the trace; a write error is said once and the command carries on."""
        from dataclasses import replace

        from edgescope_tracing import StackSamples, TraceError

        from ._profiler import chunk_samples

        if self._write_error is not None:
            return
        parts: list[Record] = [rec]
        if isinstance(rec, StackSamples) and len(rec.samples) > 1:
            parts = [replace(rec, samples=p) for p in chunk_samples(list(rec.samples))]
        for part in parts:
            try:
                self.writer.append(part)
            except OSError as e:
                self._write_error = f"writing {self.writer.path} failed: {e.strerror or e}"
                print(f"edgescope: {self._write_error}; CMD keeps running", file=sys.stderr)
                return
            except (TraceError, TypeError, ValueError) as e:
                self.notes.append(f"a {type(part).__name__} record was left out: {e}")
                continue
            self.records += 1

    def _event_rec(
        self, message: str, *, run: int = -1, severity: int = 0, **detail: object
    ) -> Record:
        from edgescope_tracing import Event

        return Event(
            "log",
            message,
            run=run,
            severity=severity,
            detail=dict(detail),
            t_us=time.time_ns() // 1000,
        )

    def _event(self, message: str, *, run: int = -1, severity: int = 0, **detail: object) -> None:
        self.write(self._event_rec(message, run=run, severity=severity, **detail))

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> int:
        from edgescope_collector.detectors import Detectors
        from edgescope_collector.ingest import IngestServer
        from edgescope_collector.samplers import ProcessWatch, Roots, default_samplers

        self._detectors = Detectors()
        loop = asyncio.get_running_loop()
        watch = ProcessWatch()

        def on_start(rs: RunStart) -> None:
            self.sdk_runs += 1
            watch.add(rs.run, rs.pid)

        def on_end(re: RunEnd) -> None:
            watch.remove_run(re.run)

        ingest = IngestServer(
            self._tmp / "ingest.sock", self.write, on_run_start=on_start, on_run_end=on_end
        )
        try:
            await ingest.start()
        except OSError as e:
            raise EdgescopeError(
                f"cannot open the ingest socket {ingest.path}: {(e.strerror or str(e)).lower()}"
            ) from None
        try:
            try:
                self._samplers, skipped = await loop.run_in_executor(
                    None, default_samplers, Roots(), watch
                )
            except (OSError, ImportError) as e:
                self._samplers, skipped = [], {"all samplers": f"they could not start: {e}"}
                self.notes.append(f"no system or process samples: {e}")
            for source, why in sorted(skipped.items()):
                self._event(f"{source} not sampled: {why}", source=source, skipped=why)
            env = dict(os.environ, EDGESCOPE_SOCKET=str(ingest.path))
            if self.profile == "python":
                from ._autoprofile import child_env

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
                    proc = await asyncio.create_subprocess_exec(*self.cmd, env=env)
                except OSError as e:
                    raise EdgescopeError(
                        f"cannot run {self.cmd[0]}: {(e.strerror or str(e)).lower()}", 126
                    ) from None
                self._proc = proc
                self.started = True
                for pending in self._pending_signals:
                    self._forward(pending)
                self._start_run(my_run, proc.pid, started)
                watch.add(my_run, proc.pid)
                if self.profile in ("perf", "bpftrace"):
                    await self._open_backend(my_run, proc.pid)
                returncode = await self._sample_until_exit(proc, watch)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            code = _exit_code(returncode)
            await self._finish(ingest, my_run, code)
            watch.remove_run(my_run)
            return code
        finally:
            await ingest.close()

    def _start_run(self, run: int, pid: int, t_us: int) -> None:
        from edgescope_tracing import RunStart

        from ._sdk_device import device_facts

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

    async def _open_backend(self, run: int, pid: int) -> None:
        from edgescope_collector.stacks import StackBackendError, open_backend

        assert self.profile is not None
        try:
            self._backend = await asyncio.get_running_loop().run_in_executor(
                None, open_backend, self.profile, run, pid
            )
        except StackBackendError as e:
            self._event(f"--profile {self.profile} did not start: {e}", run=run, severity=1)
            self.notes.append(f"--profile {self.profile} did not start: {e}")

    def _sample_all(self, t_us: int) -> list[Record]:
        out: list[Record] = []
        for s in list(self._samplers):
            try:
                out.extend(s.sample(t_us))
            except Exception as e:
                # A failing sampler is dropped and said; CMD and the other samplers go on.
                self._samplers.remove(s)
                why = f"sampler {s.name} failed and was stopped: {type(e).__name__}: {e}"
                self.notes.append(why)
                out.append(self._event_rec(why, severity=1))
        if self._backend is not None:
            out.extend(self._backend.drain())
        return out

    async def _sample_until_exit(
        self, proc: asyncio.subprocess.Process, watch: ProcessWatch
    ) -> int:
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(proc.wait())
        next_sample = loop.time()
        while True:
            if loop.time() >= next_sample:
                recs = await loop.run_in_executor(None, self._sample_all, time.time_ns() // 1000)
                for r in recs:
                    self.write(r)
                next_sample += self.interval
                if next_sample < loop.time():
                    next_sample = loop.time() + self.interval
            if self._write_error is None:
                try:
                    self.writer.poll()
                except OSError as e:
                    self._write_error = f"writing {self.writer.path} failed: {e.strerror or e}"
            timeout = max(0.0, min(POLL, next_sample - loop.time()))
            done, _ = await asyncio.wait({exited}, timeout=timeout)
            if done:
                return exited.result()

    async def _finish(self, ingest: IngestServer, run: int, code: int) -> None:
        from edgescope_tracing import RunEnd

        loop = asyncio.get_running_loop()
        if self._backend is not None:
            backend, self._backend = self._backend, None
            error = backend.error()
            for r in await loop.run_in_executor(None, backend.stop):
                self.write(r)
            if error:
                self._event(f"--profile {self.profile}: {error}", run=run, severity=1)
            if self.profile == "perf":
                from edgescope_collector.stacks import python_names_note

                note = python_names_note(backend.frames())
                if note:
                    self._event(f"--profile perf: {note}", run=run, stacks_note=note)
        if not await ingest.wait_idle(DRAIN_TIMEOUT):
            self.notes.append(
                f"{ingest.connections} process(es) still connected {DRAIN_TIMEOUT:g} s after "
                "CMD ended; their runs were closed"
            )
        if self.profile == "python" and self.sdk_runs == 0:
            from ._autoprofile import no_stacks_reason

            why = no_stacks_reason(self._tmp / "autoprofile")
            self._event(why, run=run, severity=1, no_stacks=why)
            self.notes.append(why)
        self.write(RunEnd(run, code, 0, time.time_ns() // 1000))
        if self._detectors is not None:
            try:
                held = self._detectors.flush()
            except Exception as e:  # as in write(): said, not raised
                self._detectors_failed(e)
            else:
                for ev in held:
                    self._append(ev)

    def cleanup(self) -> None:
        """Close the trace (with its index), the samplers and the temporary socket directory."""
        if self._backend is not None:
            self._backend.stop()
        for s in self._samplers:
            with contextlib.suppress(Exception):  # a sampler's close must not cost the trace
                s.close()
        try:
            self.writer.close()
        except OSError as e:
            self.notes.append(f"closing {self.writer.path} failed: {e.strerror or e}")
        else:
            if not self.started:
                # CMD never ran: the file holds nothing worth keeping.
                with contextlib.suppress(OSError):
                    os.unlink(self.writer.path)
            elif self._write_error is None:
                self.notes.append(f"wrote {self.writer.path} ({self.records} records)")
        shutil.rmtree(self._tmp, ignore_errors=True)
