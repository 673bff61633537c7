"""A real OOM kill in a real memory-limited cgroup, under ``edgescope record`` (issue #14).

The command joins a child cgroup with a 96 MiB limit and allocates until the kernel's OOM
killer ends it. The trace's run end says so, in words and with the limit, and ``inspect``
shows it: not just "exit 137". Skipped with the reason where this machine cannot make such a
cgroup (not root, no memory controller to put a child under).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import Event, ProcessSample, RunEnd
from sdkutil import PYTHON, read, sdk_env

from edgescope.cli import main

LIMIT = 96 << 20
ALLOC = """
import time
keep = []
while True:
    keep.append(bytearray(2 << 20))  # 2 MiB, touched: resident at once
    time.sleep(0.02)
"""


@pytest.fixture
def memory_cgroup() -> Iterator[tuple[Path, int]]:
    """A child cgroup of this process's own memory cgroup with a 96 MiB limit and no swap:
    ``(directory, version)``."""
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    own = Path("/proc/self/cgroup").read_text().splitlines()
    base = Path("/sys/fs/cgroup")
    parent = None
    version = 0
    for line in own:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            parent, version = base / "memory" / path.lstrip("/"), 1
    if parent is None:
        v2 = next((line.split(":", 2)[2] for line in own if line.startswith("0::")), None)
        d = base / (v2 or "/").lstrip("/")
        if v2 is not None and "memory" in (d / "cgroup.subtree_control").read_text().split():
            parent, version = d, 2
    if parent is None or not parent.is_dir():
        pytest.skip("no memory controller to make a child cgroup under (v1 memory or v2 +memory)")
    d = parent / f"edgescope-oom-{os.getpid()}"
    try:
        d.mkdir()
        if version == 1:
            (d / "memory.limit_in_bytes").write_text(str(LIMIT))
            with contextlib.suppress(OSError):  # swap accounting may be off: then no swap use
                (d / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
        else:
            (d / "memory.max").write_text(str(LIMIT))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
    except OSError as e:
        with contextlib.suppress(OSError):
            d.rmdir()
        pytest.skip(f"cannot make a memory-limited cgroup under {parent}: {e.strerror}")
    try:
        yield d, version
    finally:
        for _ in range(100):
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def test_an_oom_killed_command_ends_with_the_kernel_oom_killer_as_its_cause(
    memory_cgroup: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, version = memory_cgroup
    out = tmp_path / "oom.est"
    cmd = ["sh", "-c", f'echo $$ > {d}/cgroup.procs && exec {PYTHON} -c "$0"', ALLOC]
    r = subprocess.run(
        [PYTHON, "-m", "edgescope", "record", "-o", str(out), "--interval", "0.1", "--", *cmd],
        env=sdk_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 137, r.stderr  # SIGKILL, as the shell says it
    records = read(out)
    (end,) = [x for x in records if isinstance(x, RunEnd)]
    file = "memory.limit_in_bytes" if version == 1 else "memory.max"
    assert end.cause == f"killed by the kernel OOM killer: cgroup {file} 96 MiB reached"
    kills = [x for x in records if isinstance(x, Event) and x.detail.get("detector") == "oom_kill"]
    assert kills and kills[0].severity == 2
    cg = [x.cgroup for x in records if isinstance(x, ProcessSample) and x.cgroup]
    assert cg and cg[-1].endswith(f"/{d.name}")  # the child cgroup it joined
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        f"failed: killed by the kernel OOM killer: cgroup {file} 96 MiB reached "
        "(exit code 137 (killed by SIGKILL))"
    ) in text
    assert main(["inspect", str(out), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["state"] == "failed" and run["cause"] == end.cause
    assert run["memory"]["oom_kills"] == 1
    (tmp_path / "inspect.txt").write_text(text)
