"""``edgescope export``: Parquet beside CSV, on the replay benchmark's trace.

    .venv/bin/python benchmarks/bench_export.py                  # the 64 MB replay trace
    .venv/bin/python benchmarks/bench_export.py --size-mb 1024   # the 1 GB one (minutes a value)

The trace is :func:`bench_replay.ensure_trace`'s (generated once under
``$TMPDIR/edgescope-bench/`` and reused): hours of a training run as the SDK and collector
write it, four metrics of 175 steps a second, GPU, process and system samples every 100 ms.
Each pyperf value is one whole export, in process, through ``edgescope.cli.main`` (reading the
trace, making the rows, writing the output), of the same rows in both formats:

- **metrics**: ``--format csv -o t.csv`` beside ``--format parquet -o t.parquet``;
- **everything**: ``--format csv --system --events -o t.csv`` beside ``--format parquet -o DIR``
  (its three tables hold the same rows).

Printed: CPU seconds per export (pyperf's value: the process's CPU time, which a shared
machine's load moves far less than wall time), trace MB and rows per CPU second, one export's
wall time and the output's size, with CSV (the anchor) and Parquet side by side, and the command
that reruns it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyperf
from bench_replay import ensure_trace  # beside this file: how the replay trace is made

COMMAND = ".venv/bin/python benchmarks/bench_export.py"
CASES = {
    "metrics": {
        "csv": ["--format", "csv", "-o", "{out}/t.csv"],
        "parquet": ["--format", "parquet", "-o", "{out}/t.parquet"],
    },
    "everything": {
        "csv": ["--format", "csv", "--system", "--events", "-o", "{out}/t.csv"],
        "parquet": ["--format", "parquet", "-o", "{out}/tables"],
    },
}


def _export(trace: Path, argv: list[str]) -> tuple[float, float, int]:
    """One export: its CPU seconds (this process, all its threads), its wall seconds and the
    bytes it wrote."""
    from edgescope.cli import main

    out = tempfile.mkdtemp(prefix="bench-export-")
    atexit.register(shutil.rmtree, out, True)
    args = ["export", str(trace), *(a.replace("{out}", out) for a in argv)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)  # export's notes on stderr would land in pyperf's output
    try:
        t, cpu = time.perf_counter(), time.process_time()
        code = main(args)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    assert code == 0, args
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return cpu, elapsed, size


def bench(loops: int, trace: Path, argv: list[str]) -> float:
    """pyperf's value: CPU seconds, which the other engineers' load on a shared machine moves
    far less than wall time."""
    return sum(_export(trace, argv)[0] for _ in range(loops))


def _rows(trace: Path, everything: bool) -> int:
    from edgescope_tracing import TraceReader

    from edgescope.cli.export import rows

    with TraceReader(trace) as r:
        return sum(1 for _ in rows(r, system=everything, events=everything))


def _worker_args(cmd: list[str], args: object) -> None:
    cmd.extend(["--size-mb", str(args.size_mb)])  # type: ignore[attr-defined]


def main() -> None:
    runner = pyperf.Runner(processes=1, values=2, warmups=0, add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--size-mb", type=int, default=64)
    runner.argparser.set_defaults(loops=1)
    args = runner.parse_args()
    trace = ensure_trace(args.size_mb)
    mb = trace.stat().st_size / 1e6
    results = {}
    for case, formats in CASES.items():
        for fmt, argv in formats.items():
            results[case, fmt] = runner.bench_time_func(
                f"export {case} as {fmt} ({mb:.0f} MB trace)", bench, trace, argv
            )
    if args.worker or any(r is None for r in results.values()):
        return
    print()
    print(f"export of {trace} ({mb:.0f} MB)")
    print(f"{'':22} {'CPU s':>7} {'MB/s':>7} {'rows/s':>11} {'wall s':>7} {'output':>9}  vs CSV")
    for case, formats in CASES.items():
        n = _rows(trace, case == "everything")
        csv_mean = results[case, "csv"].mean()
        for fmt, argv in formats.items():
            mean = results[case, fmt].mean()
            _, wall, size = _export(trace, argv)  # once more: its wall time and output size
            print(
                f"{case + ' ' + fmt:22} {mean:>7.2f} {mb / mean:>7.2f} {n / mean:>11,.0f} "
                f"{wall:>7.2f} {size / 1e6:>7.1f}MB  {csv_mean / mean:.2f}x"
            )
        print(f"{'':22} ({n:,} rows; MB/s and rows/s per CPU second)")
    print(f"\nrerun: {COMMAND} --size-mb {args.size_mb}")


if __name__ == "__main__":
    main()
