"""Stack backends for real: perf and bpftrace against a CPU-busy child process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_collector.stacks import (
    StackBackend,
    StackBackendError,
    backend_problem,
    open_backend,
    parse_bpftrace_stack,
    parse_perf_script,
    python_names_note,
)
from edgescope_tracing.records import StackFrame, StackSamples

BUSY = (
    "import sys, time\n"
    "def spin(until):\n"
    "    x = 0\n"
    "    while time.time() < until:\n"
    "        x += sum(range(500))\n"
    "print('go', flush=True)\n"
    "spin(time.time() + float(sys.argv[1]))\n"
)


def busy_child(seconds: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
    return proc


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    proc = busy_child(30)
    yield proc
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def require(name: str) -> None:
    problem = backend_problem(name)
    if problem is not None:
        pytest.skip(problem)


def collect(backend: StackBackend, want: int, within: float) -> list[StackSamples]:
    got: list[StackSamples] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(0.25)
        got += backend.drain()
        if sum(n for r in got for _, n in r.samples) >= want:
            break
    return got


def check_samples(records: list[StackSamples], backend: str, run: int) -> None:
    assert records, f"{backend} delivered no samples of a CPU-busy process"
    for r in records:
        assert (r.run, r.backend, r.period_us) == (run, backend, 10101)
        assert r.t_us > 0
        counts = [n for _, n in r.samples]
        assert counts == sorted(counts, reverse=True) and min(counts) >= 1
    stacks = [stack for r in records for stack, _ in r.samples]
    assert all(stack for stack in stacks)
    # The busy loop runs in the interpreter: its binary or libpython shows in the stacks.
    assert any("python" in f.file for stack in stacks for f in stack)
    # Frames are interned: equal frames are one object.
    frames = [f for stack in stacks for f in stack]
    by_key = {(f.function, f.file): f for f in frames}
    assert all(by_key[(f.function, f.file)] is f for f in frames)


@pytest.mark.parametrize("name", ["perf", "bpftrace"])
def test_backend_samples_a_busy_process(name: str, busy: subprocess.Popen[bytes]) -> None:
    require(name)
    backend = open_backend(name, run=4, pid=busy.pid, hz=99)
    try:
        records = collect(backend, want=40, within=8.0)
        assert backend.running
    finally:
        tail = backend.stop()
    check_samples(records + tail, name, 4)
    assert not backend.running and backend.error() is None
    assert backend.stop() == []  # twice is harmless
    total = sum(n for r in records for _, n in r.samples)
    assert total >= 40


@pytest.mark.parametrize("name,seconds", [("perf", 0.8), ("bpftrace", 3.0)])
def test_backend_ends_by_itself_when_the_process_exits(name: str, seconds: float) -> None:
    require(name)
    proc = busy_child(seconds)
    backend = open_backend(name, run=1, pid=proc.pid)
    try:
        proc.wait(10)
        deadline = time.monotonic() + 10
        while backend.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not backend.running
        assert backend.error() is None  # the process ended: not an error
    finally:
        records = backend.drain() + backend.stop()
        assert proc.stdout is not None
        proc.stdout.close()
    check_samples(records, name, 1)


def test_a_process_gone_before_perf_attaches_is_said() -> None:
    require("perf")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        backend = open_backend("perf", run=1, pid=zombie.pid)  # its /proc entry is still there
        deadline = time.monotonic() + 10
        while backend.running and time.monotonic() < deadline:
            time.sleep(0.05)
        why = backend.error()
        assert why is not None and why.startswith("perf exited with status ")
        assert "No such process" in why and "\n" not in why
        assert backend.stop() == []
        assert backend.error() == why  # kept after stop
    finally:
        zombie.wait()


def test_bad_requests_are_one_sentence_errors() -> None:
    with pytest.raises(StackBackendError, match="inside the SDK"):
        open_backend("python", run=1, pid=1)
    with pytest.raises(StackBackendError, match="not an external stack backend"):
        open_backend("dtrace", run=1, pid=1)
    with pytest.raises(StackBackendError, match="out of range"):
        open_backend("perf", run=1, pid=1, hz=0)
    with pytest.raises(StackBackendError, match="no process 4194999"):
        open_backend("perf", run=1, pid=4194999)
    assert backend_problem("python") is None
    assert "unknown stack backend" in (backend_problem("dtrace") or "")


def test_parse_perf_script_folds_offsets_and_orders_root_first() -> None:
    text = [
        "16187/16187   10101010 ",
        "\t          1af857 _PyObject_Malloc (/usr/lib/libpython3.11.so.1.0)",
        "\t    7fb594dba940 [unknown] ([unknown])",
        "",
        "16187/16187   10101010 ",
        "\t          1af860 _PyObject_Malloc+0x9 (/usr/lib/libpython3.11.so.1.0)",
        "\t    7fb594dba940 [unknown] ([unknown])",
        "",
        "  4032/4032    10101010 ",  # a short pid is padded: still a header, not a frame
        "\t          101948 main (/usr/bin/python3.11)",
    ]
    counts = parse_perf_script(text)
    assert len(counts) == 2
    (top, n), (other, m) = counts.most_common()
    assert n == 2 and m == 1
    assert [f.function for f in top] == ["[unknown]", "_PyObject_Malloc"]
    assert top[1].file == "/usr/lib/libpython3.11.so.1.0"
    assert [f.function for f in other] == ["main"]


def test_parse_bpftrace_stack() -> None:
    key = (
        "\n\t7fb5ebefdc54 _PyEval_EvalFrameDefault+12516 (/usr/lib/libpython3.11.so.1.0)"
        "\n\t7fb5ebc12940 0x7fb5ebc12940 ([unknown])\n"
    )
    stack = parse_bpftrace_stack(key)
    assert [f.function for f in stack] == ["[unknown]", "_PyEval_EvalFrameDefault"]
    assert parse_bpftrace_stack("") == ()


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no perf, no bpftrace
    check = backend_problem.__wrapped__  # type: ignore[attr-defined]  # past the cache
    assert check("perf").startswith("perf is not installed (")
    assert check("bpftrace") == "bpftrace is not installed (apt install bpftrace)"
    assert check("python") is None


def test_not_root_is_said_for_bpftrace() -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or shutil.which("bpftrace") is None:
        pytest.skip("needs root, setpriv and bpftrace to try bpftrace as another user")
    probe = (
        "from edgescope_collector.stacks import backend_problem\n"
        "print(backend_problem('bpftrace'))\n"
    )
    out = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        pytest.skip(f"this checkout can't be run as nobody: {out.stderr.strip()[-200:]}")
    assert out.stdout.strip() == (
        "bpftrace needs root (or CAP_BPF and CAP_PERFMON); this is uid 65534"
    )


def test_perf_says_whether_its_stacks_name_python_functions() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
    old = [StackFrame("_PyEval_EvalFrameDefault", lib), StackFrame("main", "/usr/bin/python3.11")]
    note = python_names_note(old)
    assert note is not None and "CMD's Python is 3.11" in note
    assert "only from Python 3.12 on" in note and "\n" not in note
    new = [StackFrame("_PyEval_EvalFrameDefault", "/usr/lib/libpython3.12.so.1.0")]
    assert "was not started with PYTHONPERFSUPPORT=1" in (python_names_note(new) or "")
    named = [*new, StackFrame("py::train_step:/job/train.py", "/tmp/perf-77.map")]
    assert python_names_note(named) == (
        "perf stacks name Python functions (py::...): CMD's Python is 3.12"
    )
    assert python_names_note([StackFrame("main", "/usr/bin/true")]) is None


def test_perf_stacks_of_this_python_say_what_they_hold(busy: subprocess.Popen[bytes]) -> None:
    require("perf")
    backend = open_backend("perf", run=1, pid=busy.pid, hz=99)
    try:
        collect(backend, want=20, within=8.0)
    finally:
        backend.stop()
    note = python_names_note(backend.frames())
    shown = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert note is not None and f"CMD's Python is {shown}" in note
    if sys.version_info < (3, 12):
        assert "perf can name Python functions only from Python 3.12 on" in note
