"""``edgescope demo``: the whole product on one machine, with no device and no configuration.

It starts a collector on loopback, runs the demo training job (an MLP with a CPU-heavy phase, a
memory leak and a learning-rate spike: :mod:`edgescope.demo.torch_job` in PyTorch where torch is
installed, else :mod:`edgescope.demo.job` in NumPy; ``--framework`` chooses, and the first line
says which) as a child process that uses the SDK, and opens the TUI on it, found the way a real
device is found. Everything the collector streams is also saved to a trace file, which
``edgescope replay`` shows later.

``--headless`` does the same without the UI and prints the ``inspect`` summary of that file.
Without a terminal (CI, a pipe) the demo runs headless by itself and says so.

The collector, the job and the recorder are real: a collector process (``python -m
edgescope_collector``) with its ingest socket and stream port in a private temporary directory,
the job pointed at it by ``EDGESCOPE_SOCKET``, and the recorder a stream client of the
collector (``edgescope_tracing.protocol.Client``) writing a :class:`TraceWriter`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from edgescope.cli._extras import installed, require
from edgescope.errors import EdgescopeError, file_error

__all__ = ["add_parser"]

HEADLESS_DURATION = 20.0
TUI_DURATION = 60.0
START_TIMEOUT = 20.0
"""How long the collector may take to open its ports (a Raspberry Pi imports slowly)."""
END_TIMEOUT = 10.0
"""How long after the job exits the recorder waits for its run end to come through."""
SAMPLE_INTERVAL = "0.5"
"""The collector's sampling interval in the demo: twice a second, so short runs show a curve."""
JOBS = {"numpy": ("NumPy", "edgescope.demo.job"), "torch": ("PyTorch", "edgescope.demo.torch_job")}
"""The training jobs by ``--framework`` name: what to call it, and its module."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a demo training job under a local collector and watch it in the TUI",
        description=(
            "Start a collector on loopback, run a small training job under it (a CPU-heavy "
            "phase, a memory leak, a learning-rate spike; in PyTorch if it is installed, else in "
            "NumPy), and open the TUI on it. Everything is saved to a trace file that "
            "'edgescope replay' shows later."
        ),
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no UI: record the run and print its summary (the default without a terminal)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds the job trains (default {TUI_DURATION:g} with the TUI, "
        f"{HEADLESS_DURATION:g} headless)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where the trace goes (default edgescope-runs/demo-YYYYmmdd-HHMMSS.est)",
    )
    p.add_argument(
        "--leak-mb",
        type=float,
        default=128.0,
        metavar="MB",
        help="memory the job keeps in its memory-growth phase (default 128)",
    )
    p.add_argument(
        "--framework",
        choices=("auto", *JOBS),
        default="auto",
        help="the training job's framework (default auto: torch if it is installed, else numpy)",
    )
    p.set_defaults(func=_run)


# --- checks before anything starts -----------------------------------------------------------


def _default_output() -> Path:
    return Path("edgescope-runs") / time.strftime("demo-%Y%m%d-%H%M%S.est")


@dataclass(slots=True)
class _Plan:
    headless: bool
    duration: float
    output: Path
    leak_mb: float
    framework: str
    """A key of :data:`JOBS`."""
    why: str
    """Why that one, for the first line."""
    notes: list[str] = field(default_factory=list)


def _plan(args: argparse.Namespace) -> _Plan:
    require("demo", "edgescope demo")
    require("collector", "edgescope demo")
    framework, why = _framework(args.framework)
    notes = []
    headless = bool(args.headless)
    if not headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        headless = True
        notes.append("no terminal for the TUI (stdin or stdout is not a tty): running --headless")
    if not headless:
        require("tui", "edgescope demo (or 'edgescope demo --headless')")
    duration = args.duration
    if duration is None:
        duration = HEADLESS_DURATION if headless else TUI_DURATION
    if not 0 < duration <= 24 * 3600:
        raise EdgescopeError(f"--duration must be between 0 and 86400 seconds, not {duration:g}", 2)
    if args.leak_mb < 0:
        raise EdgescopeError(f"--leak-mb must not be negative, not {args.leak_mb:g}", 2)
    output = Path(args.output) if args.output else _default_output()
    return _Plan(headless, float(duration), output, float(args.leak_mb), framework, why, notes)


def _framework(choice: str) -> tuple[str, str]:
    """The job's framework for ``--framework choice``, and why it is that one."""
    if choice == "numpy":
        return "numpy", "--framework numpy"
    if installed("torch"):
        if choice == "torch":
            return "torch", "--framework torch"
        return "torch", "torch is installed; --framework numpy for the NumPy one"
    if choice == "torch":
        require("torch", "--framework torch")
    return "numpy", "PyTorch is not installed; pip install torch for the PyTorch one"


def _open_output(path: Path, default: bool) -> Any:
    """The trace's writer, created new at ``path`` as ``record -o`` creates it: a symbolic link,
    a FIFO or a device there is refused (``O_TRUNC`` would write through a link to its target,
    and opening a FIFO waits for a reader), an old regular file is replaced."""
    from edgescope_tracing import TraceWriter
    from edgescope_tracing.files import OutputError, make_way

    if path.is_dir():
        raise EdgescopeError(f"{path} is a directory; give a file name with -o", 2)
    if default:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        make_way(path)
    except OutputError as e:
        raise EdgescopeError(str(e), 2) from None
    try:
        return TraceWriter(path, flush_interval=0.5, exclusive=True)
    except FileExistsError:  # something was put there since make_way looked
        raise EdgescopeError(f"{path}: something else just created it", 2) from None
    except FileNotFoundError:
        raise EdgescopeError(f"{path}: the directory {path.parent} does not exist", 2) from None
    except OSError as e:
        raise file_error(str(path), e) from None


# --- the processes -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class _Collector:
    """``python -m edgescope_collector`` on 127.0.0.1 with its ingest socket in ``workdir``."""

    def __init__(self, workdir: Path, *, mdns: bool) -> None:
        self.port = _free_port()
        self.ingest = workdir / "ingest.sock"
        self.log = workdir / "collector.log"
        cmd = [
            sys.executable,
            "-m",
            "edgescope_collector",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--ingest",
            str(self.ingest),
            "--data-dir",
            str(workdir / "data"),
            "--interval",
            SAMPLE_INTERVAL,
            "--mdns" if mdns else "--no-mdns",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgescopeError(
                    f"the collector exited at start (code {self.proc.returncode}): "
                    f"{_tail(self.log) or 'no output'}",
                    1,
                )
            if self.ingest.exists():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
                ):
                    return
            time.sleep(0.05)
        raise EdgescopeError(
            f"the collector did not open 127.0.0.1:{self.port} within {START_TIMEOUT:g} s", 1
        )

    def stop(self) -> int:
        return _stop(self.proc)


class _Job:
    """The demo training job (``framework``, a key of :data:`JOBS`), sending to ``ingest``."""

    def __init__(
        self,
        workdir: Path,
        ingest: Path,
        duration: float,
        leak_mb: float,
        framework: str = "numpy",
    ) -> None:
        self.log = workdir / "job.log"
        env = dict(os.environ)
        env["EDGESCOPE_SOCKET"] = str(ingest)
        env["EDGESCOPE_DIR"] = str(workdir / "sdk-fallback")
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            # one core, as the job's phases describe; a small device has few to spare
            env.setdefault(var, "1")
        cmd = [
            sys.executable,
            "-m",
            JOBS[framework][1],
            "--duration",
            repr(duration),
            "--leak-mb",
            repr(leak_mb),
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        return _stop(self.proc)


class _Recorder(threading.Thread):
    """Streams everything from the collector into the trace file until the stream ends.

    ``run_ended`` is set when the run of process ``pid`` has ended (or the stream did); the
    stream ends when the collector shuts down, or when :meth:`stop` cuts it.
    """

    def __init__(self, port: int, writer: Any, pid: int) -> None:
        super().__init__(name="edgescope-demo-recorder", daemon=True)
        from edgescope_tracing.protocol import Client

        self.client = Client.connect("127.0.0.1", port, since=0, idle_timeout=None)
        self.writer = writer
        self.pid = pid
        self.records = 0
        self.gaps = 0
        self.run_ended = threading.Event()
        self.error: str | None = None
        self._stopping = False

    def run(self) -> None:
        from edgescope_tracing import Keyframe, RunEnd, RunStart, TraceError
        from edgescope_tracing.protocol import Gap

        runs: set[int] = set()
        try:
            for item in self.client:
                if isinstance(item, Gap):
                    self.gaps += 1
                    continue
                if isinstance(item, Keyframe):
                    continue  # the writer makes its own keyframes; the runs are restated there
                self.writer.append(item)
                self.records += 1
                if isinstance(item, RunStart) and item.pid == self.pid:
                    runs.add(item.run)
                elif isinstance(item, RunEnd) and item.run in runs:
                    self.run_ended.set()
        except (TraceError, OSError) as e:
            if not self._stopping:
                self.error = str(e)
        finally:
            self.run_ended.set()  # nothing more will come: nobody should wait for it

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.client.sock.shutdown(socket.SHUT_RDWR)
        self.join(10.0)
        self.client.close()


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Clean-up that a second Ctrl-C or SIGTERM must not cut short (children left running)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped and the trace is closed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- the command -------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    writer = _open_output(plan.output, default=args.output is None)
    print(
        f"edgescope demo: the training job is a {JOBS[plan.framework][0]} MLP ({plan.why})",
        file=sys.stderr,
    )
    for note in plan.notes:
        print(f"edgescope demo: {note}", file=sys.stderr)
    progress = _Progress()
    try:
        with (
            _sigterm_as_exit(),
            tempfile.TemporaryDirectory(prefix="edgescope-demo-") as tmp,
        ):
            code = _demo(plan, Path(tmp), writer, progress)
    except KeyboardInterrupt:
        code = 130
        print("edgescope demo: interrupted; the job and the collector are stopped", file=sys.stderr)
    except BaseException:
        writer.close()
        if progress.records == 0:
            plan.output.unlink(missing_ok=True)  # nothing was recorded: leave no empty trace
        raise
    writer.close()
    if plan.headless:
        from edgescope.cli.inspect import inspect_file, print_human

        print_human(str(plan.output), inspect_file(str(plan.output)), sys.stdout)
    print(f"\nreplay it: edgescope replay {plan.output}", file=sys.stderr)
    return code


@dataclass(slots=True)
class _Progress:
    """How far the demo got, for the clean-up of a failed start."""

    records: int = 0


def _demo(plan: _Plan, workdir: Path, writer: Any, progress: _Progress) -> int:
    from edgescope_tracing import TraceError

    collector = _Collector(workdir, mdns=not plan.headless)
    job: _Job | None = None
    recorder: _Recorder | None = None
    try:
        collector.wait_ready()
        job = _Job(workdir, collector.ingest, plan.duration, plan.leak_mb, plan.framework)
        try:
            recorder = _Recorder(collector.port, writer, job.pid)
        except TraceError as e:
            raise EdgescopeError(f"cannot read the demo collector's stream: {e}", 1) from None
        recorder.start()
        if plan.headless:
            print(
                f"edgescope demo: collector on 127.0.0.1:{collector.port}, training for "
                f"{plan.duration:g} s (job pid {job.pid}), recording to {plan.output}",
                file=sys.stderr,
            )
            job_code: int | None = job.proc.wait()
        else:
            job_code = _tui(plan, collector, job)
        recorder.run_ended.wait(END_TIMEOUT)
        if recorder.error:
            print(f"edgescope demo: the recording stopped early: {recorder.error}", file=sys.stderr)
        if recorder.gaps:
            print(
                f"edgescope demo: the recording misses {recorder.gaps} span(s) of the stream "
                "that the collector no longer held",
                file=sys.stderr,
            )
        if plan.headless and job_code == 0:
            print(f"edgescope {_tail(job.log, 1)}", file=sys.stderr)
        if job_code not in (0, None):
            print(
                f"edgescope demo: the training job failed (exit code {job_code}): {_tail(job.log)}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        with _shielded():
            if job is not None:
                job.stop()
            # the collector first: on SIGTERM it records its stop and ends the stream cleanly,
            # which ends the recorder by itself; stop() only cuts a recorder that is still waiting
            collector.stop()
            if recorder is not None:
                recorder.join(END_TIMEOUT)
                recorder.stop()
                progress.records = recorder.records


MDNS_TIMEOUT = 5.0
"""How long the demo browses mDNS for its collector before it connects to it by address."""


def _discover(port: int, timeout: float = MDNS_TIMEOUT) -> tuple[Any, str]:
    """The demo collector as discovery finds it: over mDNS on loopback, else by address.

    Returns the target to connect to and one line for the screen that says which it was.
    """
    import asyncio

    from edgescope_tui.discovery import MdnsBrowser, TcpTarget

    async def browse() -> Any:
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_change(key: str, device: Any) -> None:
            target = getattr(device, "target", None)
            if isinstance(target, TcpTarget) and target.port == port and not found.done():
                found.set_result(target)

        async with MdnsBrowser(on_change, interfaces=["127.0.0.1"]):
            return await asyncio.wait_for(found, timeout)

    try:
        target = asyncio.run(browse())
    except TimeoutError:
        reason = f"no mDNS answer within {timeout:g} s"
    except OSError as e:
        reason = f"mDNS is not available here ({(e.strerror or str(e)).lower()})"
    else:
        return target, f"found {target.label} over mDNS at {target.host}:{target.port}"
    manual = TcpTarget("127.0.0.1", port, name="demo collector")
    return manual, f"{reason}: connected to 127.0.0.1:{port} by address instead"


def _demo_app(target: Any, note: str, job_pid: int, framework: str = "numpy") -> Any:
    """The TUI on the demo's collector, with the discovery note on screen."""
    import edgescope_tui.app
    from edgescope_tui.app import EdgescopeApp
    from edgescope_tui.sources.live import live_source

    class DemoApp(EdgescopeApp):
        # Textual resolves CSS_PATH beside the subclass's module: point it at the TUI's own
        CSS_PATH = str(Path(edgescope_tui.app.__file__).with_name("edgescope.tcss"))

        def on_mount(self) -> None:
            # Textual calls EdgescopeApp.on_mount too (handlers run along the MRO)
            self.sub_title = f"demo: {JOBS[framework][0]} training job pid {job_pid}; {note}"
            self.notify(note, title="edgescope demo", timeout=20)

    # since=0: the collector is fresh, and the demo shows the run from its first step
    return DemoApp([live_source(target, since=0)])


def _tui(plan: _Plan, collector: _Collector, job: _Job) -> int | None:
    target, note = _discover(collector.port)
    _demo_app(target, note, job.pid, plan.framework).run()
    return job.proc.poll()
