"""The SDK's own disk fills mid-run (issue 11.5): warn once, hold, retry, resume, end the run.

A real 1 MiB tmpfs where the tests run as root; elsewhere a subprocess with RLIMIT_FSIZE (the
same write failure, EFBIG instead of ENOSPC).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Event, RunEnd
from edgescope_tui.state import fold_all
from sdkutil import of, read, run_script, sdk_env, trace_files, values, wait_until

import edgescope
from edgescope.cli import main
from edgescope.cli.inspect import _when
from edgescope.sdk import _ship as _sdk_ship


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE test covers the rest)")
    for k, v in sdk_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EDGESCOPE_SOCKET", raising=False)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        edgescope.finish()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of the tmpfs with a filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "No space left on device" in line]


def test_a_full_disk_is_said_once_held_in_memory_and_written_when_space_returns(
    small_disk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = edgescope.init(name="full", dir=small_disk, flush_interval=0.05)
    for i in range(1000):
        edgescope.log({"loss": float(i)}, step=i)
    assert run._sync()
    filler = _fill(small_disk)
    for i in range(1000, 17_000):  # the 16,000 values while the disk is full
        edgescope.log({"loss": float(i)}, step=i)
    edgescope.mark("while full")
    assert run._sync()
    time.sleep(1.2)  # a retry or two
    assert run._sync()
    err = capfd.readouterr().err
    assert len(_warnings(err)) == 1, err
    assert "keeps up to 8 MiB in memory and retries" in err
    filler.unlink()
    for i in range(17_000, 18_000):
        edgescope.log({"loss": float(i)}, step=i)
    edgescope.finish(0)
    assert _warnings(capfd.readouterr().err) == []
    recs = read(run.path)  # type: ignore[arg-type]
    assert values(recs, "loss") == [(i, float(i)) for i in range(18_000)]
    assert [e.message for e in of(recs, Event) if e.kind == "mark"] == ["while full"]
    end = of(recs, RunEnd)[0]
    assert end.exit_code == 0 and end.dropped == 0


def test_past_the_memory_bound_values_are_dropped_counted_and_the_gap_is_in_the_trace(
    small_disk: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sdk_ship, "MAX_HELD_BYTES", 64 * 1024)
    run = edgescope.init(name="gap", dir=small_disk, flush_interval=0.05)
    for i in range(1000):
        edgescope.log({"loss": float(i)}, step=i)
    assert run._sync()
    filler = _fill(small_disk)
    t0 = time.time_ns() // 1000
    n = 100_000  # ~500 KB encoded: far past the 64 KiB held
    for i in range(1000, 1000 + n):
        edgescope.log({"loss": float(i)}, step=i)
    assert run._sync()
    t1 = time.time_ns() // 1000
    assert run.dropped > 0
    filler.unlink()
    sink = run._shipper.sink
    wait_until(lambda: sink.full is None)  # type: ignore[attr-defined]  # the next retry took it
    for i in range(1000 + n, 2000 + n):
        edgescope.log({"loss": float(i)}, step=i)
    edgescope.finish(0)
    err = capfd.readouterr().err
    assert len(_warnings(err)) == 1, err
    assert "takes data again" in err
    recs = read(run.path)  # type: ignore[arg-type]
    assert of(recs, RunEnd), (err, [type(r).__name__ for r in recs])
    end = of(recs, RunEnd)[0]
    kept = values(recs, "loss")
    total = 2000 + n
    assert len(kept) + end.dropped == total and end.dropped == run.dropped > 0
    steps = [s for s, _ in kept]
    assert steps == sorted(steps) and steps[:1000] == list(range(1000))
    assert steps[-1000:] == list(range(1000 + n, 2000 + n)), "recording resumed"
    (gap,) = [e for e in of(recs, Event) if e.kind == "gap"]
    assert gap.detail["dropped"] == end.dropped  # type: ignore[index]
    assert t0 <= gap.detail["from_us"] <= gap.detail["to_us"] <= t1  # type: ignore[index, operator]
    assert "No space left on device" in gap.message
    assert "64 KiB" not in err and "keeps up to 0.0625 MiB in memory" in err
    # inspect says how many and shows the gap from when to when
    from_us, to_us = gap.detail["from_us"], gap.detail["to_us"]  # type: ignore[index]
    assert main(["inspect", str(run.path)]) == 0
    out = capfd.readouterr().out
    assert f"(exit code 0), {end.dropped:,} items dropped" in out
    (line,) = [ln for ln in out.splitlines() if "  gap      error  " in ln]
    assert line.startswith(f"    {_when(from_us)}  gap      error   {end.dropped} items dropped")
    assert line.endswith(f"No space left on device  [until {_when(to_us)[11:]}]")
    # and the TUI's fold of the same trace draws it as a gap over that time range
    (drawn,) = fold_all(recs).stream.gaps.view()
    assert (drawn.t_us, drawn.end_us) == (from_us, to_us) and drawn.reason == gap.message


def test_a_disk_that_stays_full_never_hangs_the_end_of_the_run(
    small_disk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = edgescope.init(name="stays-full", dir=small_disk, flush_interval=0.05)
    edgescope.log({"loss": 1.0}, step=0)
    assert run._sync()
    _fill(small_disk)
    for i in range(1, 5000):
        edgescope.log({"loss": float(i)}, step=i)
    t = time.monotonic()
    edgescope.finish(0)
    assert time.monotonic() - t < 10
    err = capfd.readouterr().err
    assert len(_warnings(err)) == 2, err  # the first failure, and the end that was not written
    assert "its end among them) could not be written" in err
    assert values(read(run.path), "loss")[:1] == [(0, 1.0)]  # type: ignore[arg-type]


def test_a_file_size_limit_is_handled_like_a_full_disk(tmp_path: Path) -> None:
    # Works without root: RLIMIT_FSIZE makes writes past 256 KiB fail with EFBIG.
    r = run_script(
        tmp_path,
        """
        import resource, signal, edgescope
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
        run = edgescope.init(name="fsize", flush_interval=0.05)
        for i in range(200_000):
            edgescope.log({"loss": float(i)}, step=i)
        edgescope.finish(0)
        print(run.dropped, run._shipper.sink.unwritten_items)
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "File too large" in x]
    assert len(lines) == 2, r.stderr  # said once, and the end that could not be written
    (path,) = trace_files(tmp_path)
    kept = values(read(path), "loss")
    assert kept == [(i, float(i)) for i in range(len(kept))] and kept
    # What did not fit is said: ~1 MB of values is held in memory (under the 8 MiB bound, so
    # none is dropped) and at the end the bytes still held are said with the items they hold
    # (counted by chunk: up to one chunk's items may be in the file after all).
    dropped, unwritten = map(int, r.stdout.split())
    assert dropped == 0 and unwritten > 100_000
    assert len(kept) + dropped <= 200_000 <= len(kept) + dropped + unwritten
    assert f"(up to {unwritten} items, its end among them)" in r.stderr
