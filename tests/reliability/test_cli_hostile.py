"""The commands against hostile input: output paths that are not plain files, FIFOs as input,
names and messages that carry terminal control sequences, numbers out of range, no terminal.

Issue #11 items 3, 11, 12 (the commands' half) and 13. Real files, FIFOs, symbolic links and
subprocesses; a FIFO test that hung would fail by its timeout, never pass.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import Event, Metrics, NotATraceError, RunEnd, RunStart, TraceWriter
from edgescope_tracing.files import OutputError, check_input, make_way, open_output
from edgescope_tracing.text import csv_cell, escape, escape_block, json_safe

T0 = 1_790_000_000_000_000
EVIL = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\rfake\u202egpj.exe\x9b31m"
"""OSC 52 (writes the clipboard), CSI clear screen, CR, right-to-left override, C1 CSI."""
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


def _cli(
    *argv: str, stdin: int | None = subprocess.DEVNULL, timeout: float = 30
) -> tuple[int, str, str]:
    p = subprocess.run(
        [sys.executable, "-m", "edgescope", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
    )
    return p.returncode, p.stdout, p.stderr


def _trace(path: Path, name: str = "toy", key: str = "loss", message: str = "eval") -> Path:
    with TraceWriter(path) as w:
        w.append(RunStart(0, "ab" * 16, name, "pi5", 4242, t_us=T0))
        w.append(Metrics(0, key, (0, 1), (T0, T0 + 10), (2.5, -0.5)))
        w.append(Event("mark", message, run=0, t_us=T0 + 20))
        w.append(RunEnd(0, 0, t_us=T0 + 30))
    return path


def _one_line_error(code: int, out: str, err: str, says: str) -> None:
    assert code == 2, err
    assert says in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert out == ""


# --- item 3: export -o never replaces what is not a plain file -----------------------------


def test_export_writes_through_a_fifo_and_keeps_it_a_fifo(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.est")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        code, _, err = _cli("export", str(trace), "--format", "csv", "-o", str(fifo))
        got, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert code == 0, err
    assert got.splitlines()[0].startswith("series,run,run_id")
    assert len(got.splitlines()) == 3
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo", "t.est"]


def test_export_to_a_fifo_nobody_reads_is_refused_not_waited_for(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.est")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    _one_line_error(
        *_cli("export", str(trace), "--format", "csv", "-o", str(fifo)), "no process is reading"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_writes_through_a_character_device(tmp_path: Path) -> None:
    """``-o /dev/null`` (here a link to it: a character device must stay one)."""
    trace = _trace(tmp_path / "t.est")
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    before = os.stat("/dev/null")
    code, out, err = _cli("export", str(trace), "--format", "jsonl", "-o", str(null))
    assert (code, out) == (0, ""), err
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert null.is_symlink()
    if os.geteuid() == 0:  # a device node of our own, where we may make one
        dev = tmp_path / "mynull"
        os.mknod(dev, 0o666 | stat.S_IFCHR, before.st_rdev)
        code, _, err = _cli("export", str(trace), "--format", "csv", "-o", str(dev))
        assert code == 0, err
        assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_export_refuses_a_symlink_to_a_file_and_leaves_both(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.est")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    _one_line_error(
        *_cli("export", str(trace), "--format", "csv", "-o", str(link)), "is a symbolic link"
    )
    assert link.is_symlink() and victim.read_text() == "precious\n"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere")
    _one_line_error(
        *_cli("export", str(trace), "--format", "csv", "-o", str(dangling)), "is a symbolic link"
    )
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.csv",
        "out.csv",
        "t.est",
        "victim.txt",
    ]


def test_export_replaces_a_regular_file_keeping_its_mode(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.est")
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    out.chmod(0o600)
    code, _, err = _cli("export", str(trace), "--format", "csv", "-o", str(out))
    assert code == 0, err
    assert out.read_text().startswith("series,")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    _one_line_error(
        *_cli("export", str(trace), "--format", "csv", "-o", str(trace)),
        "refusing to write over the input file",
    )


def test_open_output_leaves_the_file_when_writing_fails(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("kept\n")
    with pytest.raises(RuntimeError), open_output(out) as f:
        f.write("half")
        raise RuntimeError("stopped mid-way")
    assert out.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(OutputError, match="is a directory"), open_output(tmp_path):
        pass
    sock_dir = tmp_path
    import socket

    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_dir / "s.sock"))
        with pytest.raises(OutputError, match="is a socket"), open_output(sock_dir / "s.sock"):
            pass
    finally:
        s.close()


def test_make_way_refuses_links_and_non_files_and_removes_an_old_file(tmp_path: Path) -> None:
    old = tmp_path / "old.est"
    old.write_text("x")
    make_way(old)
    assert not old.exists()
    make_way(tmp_path / "new.est")  # nothing there: nothing to do
    link = tmp_path / "link.est"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="symbolic link"):
        make_way(link)
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"):
        make_way(fifo)
    with pytest.raises(OutputError, match="directory"):
        make_way(tmp_path)


# --- item 12: a FIFO as input is refused at once ------------------------------------------


@pytest.mark.parametrize(
    "command", [["inspect"], ["inspect", "--json"], ["export", "--format=csv"]]
)
def test_a_fifo_as_input_is_refused_not_waited_on(tmp_path: Path, command: list[str]) -> None:
    fifo = tmp_path / "t.est"
    os.mkfifo(fifo)
    argv = [command[0], str(fifo), *command[1:]]
    _one_line_error(
        *_cli(*argv, timeout=30), "is not a regular file (a pipe or a device); save the trace"
    )
    with pytest.raises(NotATraceError, match="not a regular file"):
        check_input(fifo)


# --- item 11: no terminal control from a trace reaches the terminal ------------------------


def test_escape_functions() -> None:
    assert escape(EVIL) == ("\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\x0dfake\\u202egpj.exe\\x9b31m")
    assert escape("a\nb\tc") == "a\\x0ab\\x09c"
    assert escape_block("a\nb\tc\x1b") == "a\nb\tc\\x1b"
    assert escape("naïve ünïcode ✓ 学习率") == "naïve ünïcode ✓ 学习率"
    for lead in "=+-@\t\r":
        assert csv_cell(lead + "1+1").startswith("'")
    assert csv_cell("loss") == "loss"
    assert json.loads(json_safe(json.dumps({"k": EVIL}, ensure_ascii=False))) == {"k": EVIL}
    assert not any(c in json_safe(json.dumps(EVIL, ensure_ascii=False)) for c in RAW)


def test_inspect_and_export_print_no_control_characters(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.est", name=EVIL, key='=HYPERLINK("http://x")' + EVIL, message=EVIL)
    for argv in (
        ["inspect", str(trace)],
        ["inspect", str(trace), "--json"],
        ["export", str(trace), "--format", "csv", "--events"],
        ["export", str(trace), "--format", "jsonl", "--events"],
    ):
        code, out, err = _cli(*argv)
        assert code == 0, err
        for c in RAW:
            assert c not in out, (argv, c)
            assert c not in err, (argv, c)
    code, out, _ = _cli("export", str(trace), "--format", "csv", "--events")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["key"].startswith("'=HYPERLINK")
    assert {r["run"] for r in rows} == {escape(EVIL)}
    code, out, _ = _cli("export", str(trace), "--format", "jsonl")
    assert json.loads(out.splitlines()[0])["run"] == EVIL  # JSON keeps every character


# --- a full disk under the output: one sentence, the old file kept, no temporary left -----


def _big_trace(path: Path) -> Path:
    with TraceWriter(path) as w:
        w.append(RunStart(0, "ab" * 16, "toy", "pi5", 4242, t_us=T0))
        for i in range(0, 40_000, 1000):
            steps = tuple(range(i, i + 1000))
            w.append(Metrics(0, "loss", steps, tuple(T0 + s for s in steps), (0.5,) * 1000))
    return path


@contextlib.contextmanager
def _small_disk(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A 64 KiB tmpfs where we are root; else a 64 KiB RLIMIT_FSIZE on the command."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True
        ).returncode
        == 0
    )
    kw: dict[str, Any] = {}
    if not mounted:
        kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    try:
        yield d, kw
    finally:
        if mounted:
            subprocess.run(["umount", str(d)], check=True)


def test_export_onto_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    trace = _big_trace(tmp_path / "big.est")
    with _small_disk(tmp_path) as (d, kw):
        out = d / "out.csv"
        out.write_text("the old export\n")
        for argv in (
            ["export", str(trace), "--format", "csv", "-o", str(out)],
            ["inspect", str(trace)],  # stdout onto the full disk
        ):
            with (d / "stdout").open("w") as stdout:
                p = subprocess.run(
                    [sys.executable, "-m", "edgescope", *argv],
                    stdout=stdout,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=60,
                    **kw,
                )
            if argv[0] == "inspect":
                # the summary is small: it fits; the point is no traceback either way
                assert "Traceback" not in p.stderr
                continue
            assert p.returncode == 2, p.stderr
            assert "writing" in p.stderr and "failed: " in p.stderr, p.stderr
            assert "it was left as it was" in p.stderr
            assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        assert out.read_text() == "the old export\n"
        assert sorted(x.name for x in d.iterdir()) == ["out.csv", "stdout"]
        with (d / "stdout").open("w") as stdout:
            p = subprocess.run(
                [sys.executable, "-m", "edgescope", "export", str(trace), "--format", "jsonl"],
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                **kw,
            )
        assert p.returncode == 1
        assert p.stderr.startswith("edgescope: writing to stdout failed: ")
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


# --- item 13: inspect's memory does not grow with the trace -------------------------------


def test_inspect_memory_does_not_grow_with_the_trace(tmp_path: Path) -> None:
    """Issue #11 measured 257 MiB peak RSS (549 MiB ``--json``) for 20 MB of events: the
    summary held every event. 10x the file must cost well under 1.5x the memory now (the
    interpreter and its imports, some 35 MiB, are most of either); the figures are the
    benchmark's (``benchmarks/bench_inspect_memory.py``), measured the same way."""
    from eventtrace import peak_rss_mib, write_events

    peaks: dict[str, list[float]] = {"text": [], "json": []}
    for mb in (2.0, 20.0):
        path = tmp_path / f"events-{mb:g}MB.est"
        write_events(path, mb)
        base = [sys.executable, "-m", "edgescope", "inspect", str(path)]
        peaks["text"].append(peak_rss_mib(base))
        peaks["json"].append(peak_rss_mib([*base, "--json"]))
        path.unlink()
    for how, (small, large) in peaks.items():
        assert large < 1.5 * small, f"inspect ({how}): {small:.1f} MiB for 2 MB, {large:.1f} for 20"
