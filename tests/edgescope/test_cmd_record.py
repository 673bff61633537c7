"""``edgescope record``: a real command under a real in-process collector, one trace file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgescope_collector.stacks import backend_problem
from edgescope_tracing import Event, ProcessSample, RunEnd, RunStart, StackSamples, SystemSample
from sdkutil import PYTHON, of, read, script, sdk_env, trace_files, values

from edgescope.cli import main

JOB = """
import os, sys, time, edgescope
mode = sys.argv[1]
with edgescope.init(name="job", flush_interval=0.1):
    for i in range(200):
        edgescope.log({"loss": 1.0 / (i + 1)}, step=i)
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            edgescope.log({"worker": 1.0})
            sys.exit(0)
        os.waitpid(pid, 0)
    if mode == "wait":
        print("ready", flush=True)
        time.sleep(60)
    t = time.monotonic()
    while time.monotonic() - t < 0.4:
        sum(range(10_000))
    if mode == "nan":
        edgescope.log({"loss": float("nan")}, step=200)
    if mode == "exit3":
        sys.exit(3)
"""


def _record(
    tmp: Path, *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "edgescope", "record", *args],
        env=env or sdk_env(tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,  # type: ignore[call-overload]
    )


def _by_name(recs: list[object]) -> dict[str, RunStart]:
    return {r.name: r for r in of(recs, RunStart)}  # type: ignore[arg-type]


def _end(recs: list[object], run: int) -> RunEnd:
    return next(e for e in of(recs, RunEnd) if e.run == run)  # type: ignore[arg-type]


def test_records_the_sdk_runs_the_process_and_the_system_and_exits_with_cmd(
    tmp_path: Path,
) -> None:
    job = script(tmp_path, JOB)
    out = tmp_path / "trace.est"
    r = _record(tmp_path, "-o", str(out), "--interval", "0.1", "--", PYTHON, str(job), "fork")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"edgescope: wrote {re.escape(str(out))} \(\d+ records\)\n", r.stderr)
    recs = read(out)
    runs = _by_name(recs)
    cmd_run = next(s for s in runs.values() if "record" in s.tags)
    assert cmd_run.config["argv"] == [PYTHON, str(job), "fork"]
    job_run = runs["job"]
    assert job_run.pid == cmd_run.pid, "the SDK run is the command's own process"
    child = next(s for n, s in runs.items() if n.startswith("job.fork"))
    assert len({cmd_run.run, job_run.run, child.run}) == 3
    assert values(recs, "loss") == [(i, 1.0 / (i + 1)) for i in range(200)]
    assert values(recs, "worker") == [(0, 1.0)]
    assert _end(recs, cmd_run.run).exit_code == 0 and _end(recs, job_run.run).exit_code == 0
    procs = [p for p in of(recs, ProcessSample) if p.run == cmd_run.run]
    assert procs and {p.pid for p in procs} >= {cmd_run.pid}
    assert all(p.rss and p.rss_peak and p.rss_peak >= p.rss for p in procs if p.pid == cmd_run.pid)
    assert len(of(recs, SystemSample)) >= 3
    assert not trace_files(tmp_path), "the SDK streamed to record: no files of its own"


def test_the_collector_detectors_run_over_the_recording(tmp_path: Path) -> None:
    job = script(tmp_path, JOB)
    out = tmp_path / "nan.est"
    r = _record(tmp_path, "-o", str(out), "--", PYTHON, str(job), "nan")
    assert r.returncode == 0, r.stderr
    recs = read(out)
    job_run = _by_name(recs)["job"]
    anomalies = [e for e in of(recs, Event) if e.kind == "anomaly"]
    assert [(e.run, e.detail["detector"]) for e in anomalies] == [(job_run.run, "nonfinite_loss")]


def test_a_command_without_the_sdk_still_gets_its_process_record_and_exit_code(
    tmp_path: Path,
) -> None:
    out = tmp_path / "plain.est"
    code = "b = bytearray(64 << 20); import time; time.sleep(0.5); raise SystemExit(7)"
    r = _record(tmp_path, "-o", str(out), "--interval", "0.1", "--", PYTHON, "-c", code)
    assert r.returncode == 7, r.stderr
    recs = read(out)
    (start,) = of(recs, RunStart)
    assert _end(recs, start.run).exit_code == 7
    peaks = [p.rss_peak for p in of(recs, ProcessSample) if p.pid == start.pid and p.rss_peak]
    assert peaks and max(peaks) >= 64 << 20
    assert of(recs, SystemSample)
    skipped = [e for e in of(recs, Event) if "not sampled" in e.message]
    assert all(e.detail["skipped"] for e in skipped)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_are_forwarded_and_the_trace_is_closed(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    job = script(tmp_path, JOB)
    out = tmp_path / "sig.est"
    p = subprocess.Popen(
        [PYTHON, "-m", "edgescope", "record", "-o", str(out), "--", PYTHON, str(job), "wait"],
        env=sdk_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        assert p.wait(30) == code
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    recs = read(out)
    runs = _by_name(recs)
    job_run = runs["job"]
    cmd_run = next(s for s in runs.values() if "record" in s.tags)
    assert _end(recs, cmd_run.run).exit_code == code
    assert _end(recs, job_run.run).exit_code == code
    assert len(values(recs, "loss")) == 200
    with open(out, "rb") as f:
        f.seek(-22, os.SEEK_END)
        assert f.read(2) == b"\xe5\x5c", "a cleanly closed trace ends with its index pointer"


def test_sigkill_of_record_mid_run_leaves_a_readable_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = script(
        tmp_path,
        """
        import os, time, edgescope
        open("socket.txt", "w").write(os.environ["EDGESCOPE_SOCKET"])
        edgescope.init(name="long", flush_interval=0.1)
        i = 0
        t = time.monotonic()
        while time.monotonic() - t < 20:
            edgescope.log({"loss": float(i)}, step=i)
            i += 1
            time.sleep(0.002)
        """,
    )
    out = tmp_path / "killed.est"
    p = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "edgescope",
            "record",
            "-o",
            str(out),
            "--interval",
            "0.2",
            "--",
            PYTHON,
            str(job),
        ],
        env=sdk_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size > 4000):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)
        p.kill()  # record only: the job lives on, finds its collector gone, and keeps a file
        p.wait(10)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        # record could not remove its socket's directory: it was killed.
        with contextlib.suppress(OSError):
            shutil.rmtree(Path((tmp_path / "socket.txt").read_text()).parent)
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["damaged_frames"] == 0 and not summary["indexed"]
    names = {r["name"]: r for r in summary["runs"]}
    assert names["long"]["end"] is None, "record died: nobody wrote the run's end"
    assert summary["metrics"]["loss"]["count"] > 50
    assert summary["kinds"]["system"] >= 3 and summary["kinds"]["process"] >= 3


def test_profile_python_turns_on_the_sdk_sampler_in_cmd(tmp_path: Path) -> None:
    job = script(tmp_path, JOB)
    out = tmp_path / "py.est"
    r = _record(tmp_path, "-o", str(out), "--profile", "python", "--", PYTHON, str(job), "cpu")
    assert r.returncode == 0, r.stderr
    stacks = of(read(out), StackSamples)
    assert stacks and {s.backend for s in stacks} == {"python"}
    assert any(f.file == str(job) for s in stacks for st, _ in s.samples for f in st)

    r = _record(tmp_path, "-o", str(out), "--profile", "python", "--", "true")
    assert r.returncode == 0
    assert "no Python stacks were recorded: CMD started no Python that loaded" in r.stderr


@pytest.mark.parametrize("backend", ["perf", "bpftrace"])
def test_profile_perf_and_bpftrace_sample_native_stacks(tmp_path: Path, backend: str) -> None:
    problem = backend_problem(backend)
    if problem is not None:
        pytest.skip(f"{backend} cannot run here: {problem}")
    job = script(
        tmp_path, "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3: pass\n"
    )
    out = tmp_path / "native.est"
    r = _record(tmp_path, "-o", str(out), "--profile", backend, "--", PYTHON, str(job))
    assert r.returncode == 0, r.stderr
    recs = read(out)
    stacks = of(recs, StackSamples)
    assert stacks and {s.backend for s in stacks} == {backend}
    assert sum(n for s in stacks for _, n in s.samples) > 10
    (start,) = of(recs, RunStart)
    assert {s.run for s in stacks} == {start.run}


MARKER = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('ran')"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-o", "{out}"], 2, "record needs a command to run"),
        (["-o", "{out}", "--"], 2, "record needs a command to run"),
        (
            ["-o", "{out}", "--", "no-such-command-xyz"],
            127,
            "no-such-command-xyz: command not found",
        ),
        (["-o", "{out}", "--", "./missing.sh"], 127, "./missing.sh: no such file"),
        (["-o", "{out}", "--", "{tmp}"], 126, "is a directory, not a command"),
        (
            ["-o", "{tmp}/nodir/t.est", "--", "{py}", "-c", MARKER, "{marker}"],
            2,
            "the directory {tmp}/nodir does not exist",
        ),
        (["-o", "{tmp}", "--", "{py}", "-c", MARKER, "{marker}"], 2, "it is a directory"),
        (
            ["-o", "{out}", "--profile", "gdb", "--", "{py}", "-c", MARKER, "{marker}"],
            2,
            "unknown profile backend 'gdb' (known: python, perf, bpftrace)",
        ),
        (
            ["-o", "{out}", "--interval", "0", "--", "{py}", "-c", MARKER, "{marker}"],
            2,
            "--interval must be between 0.05 and 3600 seconds",
        ),
        (
            ["-o", "{out}", "--interval", "soon", "--", "{py}", "-c", MARKER, "{marker}"],
            2,
            "--interval 'soon' is not a number of seconds",
        ),
    ],
)
def test_bad_input_is_one_sentence_before_cmd_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    fill = {
        "out": str(tmp_path / "t.est"),
        "tmp": str(tmp_path),
        "py": PYTHON,
        "marker": str(tmp_path / "ran"),
    }
    monkeypatch.chdir(tmp_path)
    assert main(["record", *(a.format(**fill) for a in args)]) == code
    err = capsys.readouterr().err
    assert err == f"edgescope: {err.removeprefix('edgescope: ').strip()}\n"
    assert message.format(**fill) in err
    assert not (tmp_path / "ran").exists(), "CMD must not start"
    assert not (tmp_path / "t.est").exists(), "FILE must not be created"


def test_an_unavailable_backend_is_refused_before_cmd_starts(tmp_path: Path) -> None:
    env = sdk_env(tmp_path, PATH=str(tmp_path / "empty-bin"))
    for backend in ("perf", "bpftrace"):
        r = _record(
            tmp_path,
            "-o",
            "t.est",
            "--profile",
            backend,
            "--",
            PYTHON,
            "-c",
            MARKER,
            str(tmp_path / "ran"),
            env=env,
        )
        assert r.returncode == 2
        assert r.stderr.startswith(
            f"edgescope: --profile {backend} cannot run on this machine: {backend} is not "
            "installed (apt install "
        )
        assert r.stderr.count("\n") == 1
        assert not (tmp_path / "ran").exists() and not (tmp_path / "t.est").exists()


def test_an_unwritable_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        # root writes anywhere: use a path under a file, which nobody can create
        target = tmp_path / "file"
        target.write_text("")
        out = str(target / "t.est")
        want = "cannot write"
    else:
        d = tmp_path / "ro"
        d.mkdir(mode=0o500)
        out, want = str(d / "t.est"), "permission denied"
    assert main(["record", "-o", out, "--", sys.executable, "-c", "pass"]) == 2
    assert want in capsys.readouterr().err


def test_a_command_that_cannot_be_executed_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x7fELF\x00garbage")
    bad.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert main(["record", "-o", "t.est", "--", str(bad)]) == 126
    assert capsys.readouterr().err == f"edgescope: cannot run {bad}: exec format error\n"
    assert not (tmp_path / "t.est").exists()


def test_ctrl_c_at_the_terminal_reaches_cmd_once(tmp_path: Path) -> None:
    """The terminal sends SIGINT to record and CMD alike (one foreground process group):
    record must not send CMD a second one."""
    import pty
    import select

    job = script(
        tmp_path,
        """
        import signal, sys, time
        got = []
        signal.signal(signal.SIGINT, lambda s, f: got.append(s))
        print("ready", flush=True)
        t = time.monotonic()
        while not got and time.monotonic() - t < 20:
            time.sleep(0.01)
        time.sleep(0.5)  # a forwarded second SIGINT would arrive in here
        sys.exit(10 + len(got))
        """,
    )
    out = tmp_path / "tty.est"
    pid, fd = pty.fork()  # the child leads a new session with the pty as its terminal
    if pid == 0:  # pragma: no cover - the child
        os.chdir(tmp_path)
        os.execve(
            PYTHON,
            [PYTHON, "-m", "edgescope", "record", "-o", str(out), "--", PYTHON, str(job)],
            sdk_env(tmp_path),
        )
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 1024)
        os.write(fd, b"\x03")  # Ctrl-C, as typed
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 11, "CMD saw exactly one SIGINT"
    (start,) = of(read(out), RunStart)
    assert _end(read(out), start.run).exit_code == 11


def test_a_deep_tmpdir_does_not_break_the_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    out = tmp_path / "deep.est"
    r = _record(tmp_path, "-o", str(out), "--", "true", env=sdk_env(tmp_path, TMPDIR=str(deep)))
    assert r.returncode == 0, r.stderr
    assert of(read(out), RunStart)


CRASH = (
    "import sys\n"
    "for i in range(80): print(f'noise {i}', file=sys.stderr)\n"
    "print('epoch 1/3 10%\\repoch 1/3 90%', file=sys.stderr)\n"
    "def train(): raise ValueError('boom at step 7')\n"
    "train()\n"
)


def test_a_crash_without_the_sdk_keeps_its_stderr_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stderr of a failed CMD passes through, and its last lines land in the trace, where
    inspect, export --events and the TUI show them (issue #11, post-mortem)."""
    job = script(tmp_path, CRASH)
    out = tmp_path / "crash.est"
    r = _record(tmp_path, "-o", str(out), "--", PYTHON, str(job))
    assert r.returncode == 1
    assert "noise 0\n" in r.stderr and "ValueError: boom at step 7" in r.stderr  # passed through
    recs = read(out)
    (ev,) = [e for e in of(recs, Event) if e.kind == "stderr"]
    assert ev.severity == 2
    assert ev.message.endswith("failed (exit code 1); its stderr ended: ValueError: boom at step 7")
    tb = ev.detail["traceback"]
    assert tb.splitlines()[-1] == "ValueError: boom at step 7"
    assert "Traceback (most recent call last):" in tb and "noise 0" not in tb
    assert "epoch 1/3 90%" in tb and "10%" not in tb  # a progress bar's last state only
    assert len(tb.splitlines()) == 50 == ev.detail["lines"]

    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "  crash   run " in text and "    | ValueError: boom at step 7" in text
    assert "failed: exit code 1 after" in text
    assert main(["export", str(out), "--format", "jsonl", "--events"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    (row,) = [x for x in rows if x["series"] == "event" and x["key"] == "stderr"]
    assert row["text"].endswith("\nValueError: boom at step 7") and row["value"] == 2
    assert main(["export", str(out), "--format", "csv"]) == 0
    assert "1 of them with a crash's traceback; --events exports them" in capsys.readouterr().err


def test_a_command_killed_by_a_signal_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "killed.est"
    code = "import os, sys; print('about to die', file=sys.stderr); os.kill(os.getpid(), 9)"
    r = _record(tmp_path, "-o", str(out), "--", PYTHON, "-c", code)
    assert r.returncode == 137
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "failed: exit code 137 (killed by SIGKILL) after" in text
    assert "its stderr ended: about to die" in text
    assert main(["inspect", str(out), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["exit"] == "exit code 137 (killed by SIGKILL)" and run["state"] == "failed"


def test_the_output_is_never_a_symlink_fifo_or_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``record -o`` writes a regular file in place, created with O_EXCL (issue #11.3)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "link.est"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.est"
    os.mkfifo(fifo)
    null = tmp_path / "null.est"
    null.symlink_to("/dev/null")
    for path, says in (
        (link, "is a symbolic link"),
        (null, "is a symbolic link"),
        (fifo, "is a FIFO (named pipe); a trace is written to a regular file"),
    ):
        assert main(["record", "-o", str(path), "--", sys.executable, "-c", "pass"]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
    assert victim.read_text() == "precious\n" and link.is_symlink() and null.is_symlink()
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    old = tmp_path / "old.est"
    old.write_text("an old trace")
    r = _record(tmp_path, "-o", str(old), "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert of(read(old), RunEnd)
