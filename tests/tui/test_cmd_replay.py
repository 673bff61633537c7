"""``edgescope replay`` and ``edgescope tui``: bad input gets one sentence and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgescope_tracing import RunStart, TraceWriter

from edgescope.cli import build_parser, main


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    p = tmp_path / "run.trace"
    with TraceWriter(p, fsync="never") as w:
        w.append(RunStart(0, "ab", "r", "h", 1, t_us=1))
    return p


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.trace", "missing.trace: no such file"),
        (lambda d: d, "is a directory, not an edgescope trace"),
        (
            lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hi\n"))[0],
            "is not an edgescope trace",
        ),
        (
            lambda d: (d / "empty", (d / "empty").write_bytes(b""))[0],
            "is empty, not an edgescope trace",
        ),
    ],
    ids=["missing", "directory", "text", "empty"],
)
def test_bad_files_get_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    for command in ("replay", "tui"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_file_among_good_ones_is_named(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(trace), str(tmp_path / "nope.trace")]) == 2
    assert "nope.trace: no such file" in capsys.readouterr().err


def test_parser_takes_several_files_and_options(trace: Path) -> None:
    args = build_parser().parse_args(["replay", str(trace), str(trace), "--compare", "--follow"])
    assert args.files == [str(trace), str(trace)] and args.compare and args.follow
    assert build_parser().parse_args(["tui"]).files == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay"])


def test_without_the_tui_extra_it_says_how_to_install_it(trace: Path) -> None:
    code = (
        "import sys; sys.modules['edgescope_tui'] = None; sys.modules['edgescope_tui.app'] = None;"
        "from edgescope.cli import main; sys.exit(main(['replay', sys.argv[1]]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(trace)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 3
    assert r.stderr == (
        "edgescope: edgescope replay needs the terminal UI (edgescope-tui), which is not "
        "installed here: pip install ./tracing ./tui '.[tui]' (from a clone of edgescope)\n"
    )


def test_without_a_terminal_it_says_so_and_exits_2(trace: Path, tmp_path: Path) -> None:
    """``replay FILE </dev/null`` (cron, a pipe) must not start the UI (issue #11.13)."""
    for command in ("replay", "tui"):
        r = subprocess.run(
            [sys.executable, "-m", "edgescope", command, str(trace)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr == (
            f"edgescope: {command} needs a terminal, and its input is not one "
            "(for a summary without one: edgescope inspect FILE)\n"
        )
        assert r.stdout == ""


def test_a_fifo_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "t.est"
    os.mkfifo(fifo)
    assert main(["replay", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert (
        "is not a regular file (a pipe or a device); save the trace" in err and err.count("\n") == 1
    )


def test_on_a_real_terminal_it_starts_and_quits(trace: Path) -> None:
    """The same command on a pty draws the UI and ends with exit 0 on ``q``."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgescope", "replay", str(trace)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        quit_sent = False
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # the child closed the pty
                    break
            if not quit_sent and b"\x1b[" in seen and len(seen) > 2000:
                os.write(master, b"q")
                quit_sent = True
        assert proc.wait(timeout=30) == 0, seen[-2000:]
        assert quit_sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
