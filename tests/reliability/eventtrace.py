"""A trace of many events and a child's peak RSS: what ``inspect``'s memory is measured with.

Shared by ``test_cli_hostile.py`` (``inspect`` must not grow with the file, issue #11 item 13)
and ``benchmarks/bench_inspect_memory.py``, which prints the figures the README quotes.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from edgescope_tracing import Event, RunStart, TraceWriter

__all__ = ["peak_rss_mib", "write_events"]


def write_events(path: Path, megabytes: float) -> int:
    """A trace of one run and log events until the file holds ``megabytes``; returns how many."""
    target = int(megabytes * 1e6)
    t0 = time.time_ns() // 1000
    n = 0
    with TraceWriter(path, flush_interval=1e9) as w:
        w.append(RunStart(0, "be" * 16, "bench", "host", 1, t_us=t0))
        while True:
            for _ in range(5000):
                w.append(
                    Event(
                        "log",
                        f"step {n}: data loader waited {n % 97} ms for batch {n * 7 % 1009}",
                        run=0,
                        t_us=t0 + n,
                    )
                )
                n += 1
            w.flush()
            if path.stat().st_size >= target:
                return n


def peak_rss_mib(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command in a fresh process; its peak RSS in MiB (the kernel's ``ru_maxrss`` for
    that child, in KiB on Linux). RuntimeError, with its stderr, if it fails."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode(errors="replace")  # to its end: the child has exited
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return usage.ru_maxrss / 1024
