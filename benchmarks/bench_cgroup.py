"""What the cgroup figures cost the process sampler: a run in a limited container, beside the
same run with no cgroup figures to read.

The recorded ``docker-v2`` tree (``tests/collector/trees``): a training process and its data
worker in a Docker container on cgroup v2 with a CPU quota, ``memory.max``, ``memory.high``,
``memory.events`` and swap. Measured: one ``ProcessSampler.sample`` of the two processes with
every cgroup figure (memory, limits and events, the quota's ``cpu.max`` on the way up and its
``cpu.stat``), beside its anchor, the same sample with the processes in the root cgroup
(``0::/``: no cgroup figures, what a run outside any container costs). The difference is what
issue 14's figures add per sample; at 1 Hz it is that many microseconds of a core per second.
The ``k8s-v1`` tree (a Kubernetes pod on cgroup v1) is measured the same way.

Rerun (a few seconds)::

    .venv/bin/python benchmarks/bench_cgroup.py --fast
    .venv/bin/python benchmarks/bench_cgroup.py            # 2 processes x 3 values

Any pyperf option works (``--rigorous``, ``-o FILE``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyperf
from edgescope_collector.samplers import ProcessWatch, Roots
from edgescope_collector.samplers.process import ProcessSampler

TREES = Path(__file__).resolve().parents[1] / "tests" / "collector" / "trees"
RERUN = "    .venv/bin/python benchmarks/bench_cgroup.py --fast"
CASES = (("docker-v2", 4242, (4242, 4250)), ("k8s-v1", 3100, (3100, 3107)))


def tree(name: str, pids: tuple[int, ...], *, root_cgroup: bool) -> Path:
    dest = Path(tempfile.mkdtemp(prefix=f"bench-cgroup-{name}-"))
    shutil.copytree(TREES / name, dest / name, symlinks=True)
    if root_cgroup:
        for pid in pids:
            (dest / name / "proc" / str(pid) / "cgroup").write_text("0::/\n")
    return dest / name


def sampler(path: Path, pid: int) -> ProcessSampler:
    watch = ProcessWatch()
    watch.add(1, pid)
    s = ProcessSampler(Roots(path / "proc", path / "sys"), watch)
    s.sample(1)  # the first sample finds the children and says how the peak is taken
    return s


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1)
    runner.metadata["description"] = "ProcessSampler.sample with and without cgroup figures"
    results: list[tuple[str, float, float]] = []
    made: list[Path] = []
    for name, pid, pids in CASES:
        timed = {}
        for root in (True, False):
            path = tree(name, pids, root_cgroup=root)
            made.append(path.parent)
            s = sampler(path, pid)
            label = f"{name}: {'no cgroup (anchor)' if root else 'with cgroup figures'}"
            t = [2]

            def once(s: ProcessSampler = s, t: list[int] = t) -> None:
                t[0] += 1_000_000
                s.sample(t[0])

            timed[root] = runner.bench_func(label, once)
        if not runner.args.worker and timed[True] is not None and timed[False] is not None:
            results.append((name, timed[True].median(), timed[False].median()))
    for d in made:
        shutil.rmtree(d, ignore_errors=True)
    if runner.args.worker or not results:
        return
    print()
    print("one process sample of a training process and its data worker (two processes):")
    print(f"{'tree':<12}{'no cgroup (anchor)':>20}{'with cgroup':>14}{'added':>10}{'at 1 Hz':>14}")
    for name, anchor, full in results:
        added = full - anchor
        print(
            f"{name:<12}{anchor * 1e6:>17.0f} us{full * 1e6:>11.0f} us"
            f"{added * 1e6:>7.0f} us{added:>13.4%}"
        )
    print("(at 1 Hz: the added time as a share of one core)")
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
