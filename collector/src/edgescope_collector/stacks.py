"""Stack sampling of a run's process from outside it: the ``perf`` and ``bpftrace`` backends.

Besides the SDK's in-process Python sampler (``python``, always there), the collector can
sample native stacks of a run's process with:

- ``perf``: ``perf record -e cpu-clock -F HZ -g -p PID -o -`` piped into ``perf script``, whose
  text is parsed as it streams. ``cpu-clock`` is a software event, so it works in VMs and on
  boards without a PMU driver. Threads of the process are sampled, and children it forks
  after the start (perf's counters are inherited). Python functions appear in its stacks only
  from Python 3.12 on, started with ``PYTHONPERFSUPPORT=1`` (:data:`PERF_PYTHON_ENV`), and
  such a process is sampled with ``--call-graph dwarf`` instead of ``-g``
  (:func:`python_perf_support`: the interpreter has no frame pointers, as pyenv's 3.12 here);
  before, a Python process shows the interpreter's own C functions, and
  :func:`python_names_note` says which of the two a run got.
- ``bpftrace``: a ``profile:hz:HZ`` probe filtered on the pid that counts ``ustack`` in a map,
  printed and cleared every second as JSON; it ends when the process exits. Needs root (or
  CAP_BPF and CAP_PERFMON); it does not need BTF. Only the process's own threads are sampled.

Both produce the same :class:`~edgescope_tracing.records.StackSamples` records: each distinct
stack (root first) with how often it was seen since the previous :meth:`StackBackend.drain`.
Frames are interned: equal frames are one object. A frame is the symbol (offsets stripped, so
samples in one function fold together) and the binary it lives in; ``[unknown]`` where the
unwinder found no symbol.

:func:`backend_problem` says, in one sentence, why a backend cannot run on this machine (None
if it can); it runs the tool once to be sure, so callers ask once at start-up.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from edgescope_tracing.records import StackFrame, StackSamples

from .errors import StackBackendError

__all__ = [
    "BACKENDS",
    "PERF_PYTHON_ENV",
    "StackBackend",
    "StackBackendError",
    "backend_problem",
    "open_backend",
    "parse_perf_script",
    "parse_bpftrace_stack",
    "python_names_note",
]

BACKENDS = ("python", "perf", "bpftrace")

Stack = tuple[StackFrame, ...]

_PERF_FRAME = re.compile(r"^\s*([0-9a-fA-F]+)\s+(.*?)\s+\((.*)\)\s*$")
_OFFSET = re.compile(r"\+(0x[0-9a-fA-F]+|\d+)$")
_CAP_PERFMON = 38
_CAP_BPF = 39


PERF_PYTHON_ENV = {"PYTHONPERFSUPPORT": "1"}
"""For the environment of a process perf will sample: Python 3.12 and later then put each Python
function into perf's stacks (as ``py::function:file``, through ``/tmp/perf-PID.map``); earlier
Pythons ignore it."""
_PYTHON_DSO = re.compile(r"python(\d+)\.(\d+)")
_PERF_NAMES_SINCE = (3, 12)


def python_names_note(frames: Iterable[StackFrame]) -> str | None:
    """One sentence on whether perf's stacks of a Python process name its Python functions,
    from the frames it took; None when none of them is in a Python interpreter."""
    version: tuple[int, int] | None = None
    named = False
    for f in frames:
        named = named or f.function.startswith("py::")
        m = _PYTHON_DSO.search(Path(f.file).name)
        if m:
            version = max(version or (0, 0), (int(m.group(1)), int(m.group(2))))
    if version is None:
        return None
    shown = f"{version[0]}.{version[1]}"
    if named:
        return f"perf stacks name Python functions (py::...): CMD's Python is {shown}"
    if version < _PERF_NAMES_SINCE:
        return (
            f"perf stacks show the interpreter's C functions, not Python's: CMD's Python is "
            f"{shown}, and perf can name Python functions only from Python 3.12 on "
            "(with PYTHONPERFSUPPORT=1, which record sets); use --profile python for them"
        )
    return (
        f"perf stacks show no Python function names although CMD's Python is {shown}: it "
        "was not started with PYTHONPERFSUPPORT=1 (or -X perf), or perf could not read "
        "/tmp/perf-PID.map"
    )


def python_perf_support(pid: int) -> bool:
    """Whether ``pid`` is a Python 3.12 or later started with its perf support on
    (``PYTHONPERFSUPPORT=1`` in its environment, or ``-X perf``): it then writes each Python
    function it runs into ``/tmp/perf-PID.map``, and perf finds those frames only by unwinding
    with DWARF (``--call-graph dwarf``): a frame-pointer walk (``-g``) ends inside an
    interpreter built without frame pointers, as most are (pyenv's, Debian's before 3.12)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False
    m = _PYTHON_DSO.search(Path(exe).name)
    if m is None:
        try:
            with open(f"/proc/{pid}/maps") as f:
                m = _PYTHON_DSO.search(" ".join(ln for ln in f if "libpython" in ln))
        except OSError:
            return False
    if m is None or (int(m.group(1)), int(m.group(2))) < _PERF_NAMES_SINCE:
        return False
    on = b"PYTHONPERFSUPPORT=1" in environ or b"-Xperf" in argv
    return on or any(a == b"-X" and b == b"perf" for a, b in itertools.pairwise(argv))


class _Interner:
    def __init__(self) -> None:
        self._frames: dict[tuple[str, str], StackFrame] = {}

    def frames(self) -> list[StackFrame]:
        return list(self._frames.values())

    def frame(self, symbol: str, dso: str) -> StackFrame:
        symbol = _OFFSET.sub("", symbol.strip())
        if not symbol or symbol.startswith("0x") or symbol == "[unknown]":
            symbol = "[unknown]"
        dso = dso.strip()
        key = (symbol, dso)
        f = self._frames.get(key)
        if f is None:
            f = self._frames[key] = StackFrame(symbol, dso)
        return f


def parse_perf_script(lines: Iterable[str], interner: _Interner | None = None) -> Counter[Stack]:
    """Stacks (root first) and their counts from ``perf script`` text.

    A sample is a header line (``pid/tid period``, padded with spaces when the pid is short),
    then one indented line per frame, leaf first (``addr symbol (dso)``), then a blank line.
    """
    interner = interner or _Interner()
    out: Counter[Stack] = Counter()
    frames: list[StackFrame] = []
    in_sample = False
    for line in lines:
        if not line.strip():
            if in_sample and frames:
                out[tuple(reversed(frames))] += 1
            frames, in_sample = [], False
            continue
        # A header may be indented too (perf pads short pids): frames are told by their shape.
        m = _PERF_FRAME.match(line)
        if m:
            if in_sample:
                frames.append(interner.frame(m.group(2), m.group(3)))
        else:
            if in_sample and frames:
                out[tuple(reversed(frames))] += 1
            frames, in_sample = [], True
    if in_sample and frames:
        out[tuple(reversed(frames))] += 1
    return out


def parse_bpftrace_stack(text: str, interner: _Interner | None = None) -> Stack:
    """One ``ustack(perf)`` key of bpftrace's map (leaf first) as a stack, root first."""
    interner = interner or _Interner()
    frames = []
    for line in text.splitlines():
        m = _PERF_FRAME.match(line)
        if m:
            frames.append(interner.frame(m.group(2), m.group(3)))
    return tuple(reversed(frames))


# ------------------------------------------------------------------------------- problems


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _first_error(text: str) -> str:
    """The line of a tool's stderr that says what went wrong (with the next one when it only
    announces it, as perf's ``Error:`` does)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "RLIMIT_MEMLOCK" not in ln and not ln.startswith("[ perf")]
    errors = [i for i, ln in enumerate(lines) if "error" in ln.lower()]
    if not lines:
        return "it exited with an error and said nothing"
    i = errors[0] if errors else 0
    chosen = lines[i]
    if chosen.endswith(":") and i + 1 < len(lines):
        chosen = f"{chosen} {lines[i + 1]}"
    return chosen.removeprefix("ERROR: ").removeprefix("Error: ").rstrip(".")


def _trial(argv: list[str], timeout: float) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"a trial run of {argv[0]} did not finish within {timeout:.0f} s"
    except OSError as e:
        return f"{argv[0]} could not be run: {e.strerror}"
    return None if p.returncode == 0 else _first_error(p.stderr + p.stdout)


@functools.cache
def backend_problem(name: str) -> str | None:
    """None if the stack backend ``name`` can run here, else one sentence saying why not.

    ``python`` (the SDK's in-process sampler) always can. For ``perf`` and ``bpftrace`` the
    tool is looked up, permissions are checked, and the tool is run once for real (a fraction
    of a second for perf, about a second for bpftrace); the answer is cached.
    """
    if name == "python":
        return None
    if name == "perf":
        perf = shutil.which("perf")
        if perf is None:
            return "perf is not installed (apt install linux-perf, or linux-tools-$(uname -r))"
        paranoid = _read_int("/proc/sys/kernel/perf_event_paranoid")
        privileged = os.geteuid() == 0 or _has_cap(_CAP_PERFMON)
        if not privileged and paranoid is not None and paranoid > 2:
            return (
                f"perf_event_paranoid is {paranoid} and the collector is not root: "
                "run it as root or set kernel.perf_event_paranoid=2"
            )
        with tempfile.TemporaryDirectory(prefix="edgescope-perf-") as d:
            out = str(Path(d) / "trial.data")
            why = _trial([perf, "record", "-q", "-e", "cpu-clock", "-g", "-o", out, "true"], 30)
        return None if why is None else f"perf cannot sample here: {why}"
    if name == "bpftrace":
        bpftrace = shutil.which("bpftrace")
        if bpftrace is None:
            return "bpftrace is not installed (apt install bpftrace)"
        if os.geteuid() != 0 and not (_has_cap(_CAP_BPF) and _has_cap(_CAP_PERFMON)):
            return f"bpftrace needs root (or CAP_BPF and CAP_PERFMON); this is uid {os.geteuid()}"
        why = _trial([bpftrace, "-e", "profile:hz:99 { exit(); }"], 60)
        if why is None:
            return None
        if not Path("/sys/kernel/btf/vmlinux").exists():
            why += " (and the kernel has no BTF at /sys/kernel/btf/vmlinux)"
        return f"bpftrace cannot attach a profile probe here: {why}"
    return f"unknown stack backend {name!r} (known: {', '.join(BACKENDS)})"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------- backends


class StackBackend:
    """A running external sampler of one process. Use :func:`open_backend` to make one."""

    name = ""

    def __init__(self, run: int, pid: int, hz: int, argv: list[str]) -> None:
        self.run = run
        self.pid = pid
        self.hz = hz
        self.period_us = max(1, round(1_000_000 / hz))
        self._lock = threading.Lock()
        self._counts: Counter[Stack] = Counter()
        self._interner = _Interner()
        self._errs: list[IO[bytes]] = []
        """Each process's stderr, kept for error(); closed by stop()."""
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopped = False
        self._error: str | None = None
        self._start(argv)
        self._thread = threading.Thread(
            target=self._read, name=f"edgescope-{self.name}-{pid}", daemon=True
        )
        self._thread.start()

    def _start(self, argv: list[str]) -> None:
        raise NotImplementedError

    def _err(self) -> IO[bytes]:
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._errs.append(f)
        return f

    def _read(self) -> None:
        raise NotImplementedError

    @property
    def _out(self) -> IO[bytes]:
        out = self._procs[-1].stdout
        assert out is not None
        return out

    def _add(self, counts: Counter[Stack]) -> None:
        with self._lock:
            self._counts.update(counts)

    def _take(self) -> list[StackSamples]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return []
        samples = tuple(sorted(counts.items(), key=lambda kv: -kv[1]))
        return [
            StackSamples(
                run=self.run,
                backend=self.name,
                period_us=self.period_us,
                samples=samples,
                t_us=time.time_ns() // 1000,
            )
        ]

    @property
    def running(self) -> bool:
        """True while the sampler runs (it ends by itself when the process exits)."""
        return self._thread.is_alive()

    def error(self) -> str | None:
        """Why the sampler ended by itself, if with an error (one sentence), else None:
        the process was gone before the tool attached, permission was refused, ..."""
        return self._error if self._stopped else self._failure()

    def _failure(self) -> str | None:
        for p, err in zip(self._procs, self._errs, strict=True):
            code = p.poll()
            if code is not None and code != 0:
                err.seek(0)
                text = err.read().decode(errors="replace")
                return f"{self.name} exited with status {code}: {_first_error(text)}"
        return None

    def frames(self) -> list[StackFrame]:
        """Every distinct frame seen so far."""
        return self._interner.frames()

    def drain(self) -> list[StackSamples]:
        """Stacks seen since the last drain, as at most one record (none if nothing came)."""
        return self._take()

    def stop(self, timeout: float = 10.0) -> list[StackSamples]:
        """Stop sampling; returns what was seen since the last drain. Safe to call twice."""
        if not self._stopped:
            first = self._procs[0]
            if first.poll() is None:
                first.send_signal(signal.SIGINT)  # both tools flush what they hold on SIGINT
            else:
                self._error = self._failure()  # it ended by itself: keep why
            self._stopped = True
            deadline = time.monotonic() + timeout
            for p in self._procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self._thread.join(max(0.1, deadline - time.monotonic()))
            for p in self._procs:
                if p.stdout is not None:
                    p.stdout.close()
            for f in self._errs:
                f.close()
        return self._take()

    def __enter__(self) -> StackBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PerfBackend(StackBackend):
    """``perf record -e cpu-clock -g`` piped into ``perf script``."""

    name = "perf"

    def _start(self, argv: list[str]) -> None:
        perf = argv[0]
        # --no-buffering: perf record wakes per sample and writes to the pipe at once;
        # otherwise samples wait in a half-MiB ring and perf script sees them a minute late,
        # or only at the end.
        # Not -q: it would silence the one line that says why perf record failed.
        record_argv = [perf, "record", "--no-buffering", "-e", "cpu-clock", "-F", str(self.hz)]
        if python_perf_support(self.pid):
            record_argv += ["--call-graph", "dwarf"]
        else:
            record_argv += ["-g"]
        record_argv += ["-p", str(self.pid), "-o", "-"]
        record = subprocess.Popen(
            record_argv,
            stdout=subprocess.PIPE,
            stderr=self._err(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the collector's terminal is for it to handle
        )
        self._procs.append(record)
        script_argv = [perf, "script", "-i", "-", "-F", "pid,tid,period,ip,sym,dso"]
        stdbuf = shutil.which("stdbuf")
        if stdbuf:
            script_argv = [stdbuf, "-oL", *script_argv]  # line by line, not 4 KiB at a time
        script = subprocess.Popen(
            script_argv,
            stdin=record.stdout,
            stdout=subprocess.PIPE,
            stderr=self._err(),
            start_new_session=True,
        )
        assert record.stdout is not None
        record.stdout.close()
        record.stdout = None
        self._procs.append(script)

    def _read(self) -> None:
        block: list[str] = []
        for raw in self._out:
            line = raw.decode(errors="replace").rstrip("\n")
            block.append(line)
            if not line.strip():
                self._add(parse_perf_script(block, self._interner))
                block = []
        if block:
            self._add(parse_perf_script(block, self._interner))


class BpftraceBackend(StackBackend):
    """A ``profile:hz`` probe counting user stacks of one pid, printed every second."""

    name = "bpftrace"

    def _start(self, argv: list[str]) -> None:
        program = (
            f"profile:hz:{self.hz} /pid == {self.pid}/ {{ @s[ustack(perf)] = count(); }}\n"
            "interval:ms:1000 { print(@s); clear(@s); }\n"
        )
        p = subprocess.Popen(
            # -p: bpftrace ends when the process does, as perf does (no tracefs needed).
            [argv[0], "-p", str(self.pid), "-B", "line", "-f", "json", "-e", program],
            stdout=subprocess.PIPE,
            stderr=self._err(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(p)

    def _read(self) -> None:
        for raw in self._out:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(msg, dict) or msg.get("type") != "map":
                continue
            counts: Counter[Stack] = Counter()
            for stacks in (msg.get("data") or {}).values():
                if not isinstance(stacks, dict):
                    continue
                for key, n in stacks.items():
                    stack = parse_bpftrace_stack(key, self._interner)
                    if stack and isinstance(n, int):
                        counts[stack] += n
            self._add(counts)


def open_backend(name: str, run: int, pid: int, hz: int = 99) -> StackBackend:
    """Start sampling ``pid`` (of ``run``) with ``perf`` or ``bpftrace`` at ``hz`` per second.

    Raises :class:`StackBackendError` with one sentence when the backend cannot run here or
    the process does not exist. The ``python`` backend lives in the SDK, not here.
    """
    if name not in ("perf", "bpftrace"):
        raise StackBackendError(
            f"{name!r} is not an external stack backend (use perf or bpftrace)"
            if name != "python"
            else "the python stack sampler runs inside the SDK, not in the collector"
        )
    if not 1 <= hz <= 10_000:
        raise StackBackendError(f"sampling rate {hz} Hz is out of range (1 to 10000)")
    if not Path(f"/proc/{pid}").is_dir():
        raise StackBackendError(f"there is no process {pid} to sample")
    problem = backend_problem(name)
    if problem is not None:
        raise StackBackendError(problem)
    tool = shutil.which(name)
    assert tool is not None  # backend_problem found it
    cls = PerfBackend if name == "perf" else BpftraceBackend
    return cls(run, pid, hz, [tool])
