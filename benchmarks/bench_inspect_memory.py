"""``edgescope inspect`` memory against the size of the trace: it must not grow with the file.

Issue #11 item 13 measured 257 MiB peak RSS (549 MiB with ``--json``) for a trace of 20 MB of
events: the summary held every event. It now streams (bounded lists and counts). This writes
traces of events (short log lines, as a chatty run makes them) of ``--mb`` and of a tenth of
it, runs ``edgescope inspect`` and ``inspect --json`` on each in a subprocess, and prints each
one's peak RSS (the kernel's ``ru_maxrss`` for that child) side by side: the anchor is the
small file, measured in the same run, and the claim is that the large file costs about the
same. A memory figure, not a timing: pyperf is not needed for it. The trace and the measure
are ``tests/reliability/eventtrace.py``'s, which ``test_cli_hostile.py`` holds to 1.5x.

Rerun::

    .venv/bin/python benchmarks/bench_inspect_memory.py            # 20 MB and 2 MB
    .venv/bin/python benchmarks/bench_inspect_memory.py --fast     # 4 MB and 0.4 MB
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from eventtrace import peak_rss_mib, write_events  # noqa: E402  (shared with the test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0, help="size of the large trace (MB)")
    ap.add_argument("--fast", action="store_true", help="4 MB and 0.4 MB")
    args = ap.parse_args()
    big = 4.0 if args.fast else args.mb
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for mb in (big / 10, big):
            path = Path(d) / f"events-{mb:g}MB.est"
            n = write_events(path, mb)
            size = path.stat().st_size / 1e6
            base = [sys.executable, "-m", "edgescope", "inspect", str(path)]
            rows.append((size, n, peak_rss_mib(base), peak_rss_mib([*base, "--json"])))
    print("edgescope inspect: peak RSS against the size of the trace (events only)")
    print(f"{'trace':>10} {'events':>10} {'inspect':>12} {'--json':>12}")
    for size, n, text, js in rows:
        print(f"{size:>8.1f}MB {n:>10,} {text:>9.1f}MiB {js:>9.1f}MiB")
    (s0, _, t0, j0), (s1, _, t1, j1) = rows
    print(
        f"{s1 / s0:.0f}x the file: {t1 / t0:.2f}x the memory (text), {j1 / j0:.2f}x (--json); "
        "issue #11 measured 257 MiB (549 MiB --json) for 20 MB before the summary streamed"
    )
    print("rerun: .venv/bin/python benchmarks/bench_inspect_memory.py" + (" --fast" * args.fast))


if __name__ == "__main__":
    main()
