"""The process table model: each process of a run at the cursor, sorted, filtered, as a tree.

The records come from the collector's own process sampler reading the recorded Raspberry Pi
tree (``tests/collector/trees/rpi4``: a training process and its data-loader child), rewritten
between samples as a device would change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgescope_collector.samplers import ProcessWatch, Roots
from edgescope_collector.samplers.process import ProcessSampler
from edgescope_tracing import GpuSample, ProcessSample, Record, RunStart
from edgescope_tui.processes import process_rows
from edgescope_tui.state import fold_all

TREE = Path(__file__).parents[1] / "collector" / "trees" / "rpi4"
S = 1_000_000


def _stat(root: Path, pid: int, *, utime: int | None = None, state: str | None = None) -> None:
    p = root / "proc" / str(pid) / "stat"
    head, _, rest = p.read_text().rpartition(")")
    f = rest.split()
    if utime is not None:
        f[11] = str(utime)
    if state is not None:
        f[0] = state
    p.write_text(head + ") " + " ".join(f) + "\n")


def sampled(tmp_path: Path) -> list[Record]:
    """Three sweeps: both processes, the child in disk wait and busy, then the child gone."""
    root = tmp_path / "rpi4"
    shutil.copytree(TREE, root, symlinks=True)
    watch = ProcessWatch()
    watch.add(0, 1234)
    sampler = ProcessSampler(Roots(procfs=root / "proc", sysfs=root / "sys"), watch, clk_tck=100)
    out: list[Record] = [RunStart(0, "ab", "train", "pi", 1234, t_us=S)]
    out += sampler.sample(2 * S)
    _stat(root, 1240, utime=300 + 150, state="D")  # 150 ticks in 1 s: 1.5 cores
    _stat(root, 1234, utime=5000 + 20)
    out += sampler.sample(3 * S)
    out.append(GpuSample(0, "gpu", processes=((1234, 3 << 30),), t_us=3 * S + 10))
    shutil.rmtree(root / "proc" / "1240")
    (root / "proc" / "1234" / "task" / "1234" / "children").write_text("\n")
    sampler.rescan_every = 1
    out += sampler.sample(4 * S)
    return out


def test_each_process_at_the_cursor_with_its_figures(tmp_path: Path) -> None:
    s = fold_all(sampled(tmp_path))
    rows = process_rows(s, 0, 3 * S + 10)
    assert [r.pid for r in rows] == [1240, 1234]  # busiest first
    child, main = rows
    assert child.cpu == 150.0 and child.state == "disk wait" and child.alive
    assert child.command == "[pt_data_worker]" and child.ppid == 1234
    assert main.command == "python3 train.py --epochs 003" and main.state == "sleeping"
    assert main.rss == 1800000 * 1024 and main.rss_peak == 2100000 * 1024
    assert main.threads == 12 and main.gpu_mem == 3 << 30 and child.gpu_mem is None
    first = process_rows(s, 0, 2 * S)  # the first sweep: no rate yet, the child sleeping
    assert {r.pid: (r.cpu, r.state) for r in first} == {
        1234: (None, "sleeping"),
        1240: (None, "sleeping"),
    }


def test_a_process_missing_from_the_last_sweep_has_exited(tmp_path: Path) -> None:
    s = fold_all(sampled(tmp_path))
    rows = process_rows(s, 0, None)
    assert [(r.pid, r.state, r.alive) for r in rows] == [
        (1234, "sleeping", True),
        (1240, "exited", False),  # after the living, whatever the sort
    ]
    assert process_rows(s, 1, None) == []  # another run's table is its own


def test_sort_filter_and_tree(tmp_path: Path) -> None:
    s = fold_all(sampled(tmp_path))
    at = 3 * S + 10
    assert [r.pid for r in process_rows(s, 0, at, sort="rss")] == [1234, 1240]
    assert [r.pid for r in process_rows(s, 0, at, sort="rss", descending=False)] == [1240, 1234]
    assert [r.pid for r in process_rows(s, 0, at, sort="command")] == [1240, 1234]  # "[" < "p"
    assert [r.pid for r in process_rows(s, 0, at, text="worker")] == [1240]
    assert [r.pid for r in process_rows(s, 0, at, text="1234")] == [1234]
    tree = process_rows(s, 0, at, tree=True)
    assert [(r.pid, r.depth, r.prefix) for r in tree] == [(1234, 0, ""), (1240, 1, "└─ ")]
    # filtered, a tree keeps the parents that lead to what matched
    assert [r.pid for r in process_rows(s, 0, at, text="worker", tree=True)] == [1234, 1240]


def test_records_without_the_1_3_fields_still_make_rows() -> None:
    s = fold_all([ProcessSample(0, 7, rss=1 << 20, t_us=S)])
    (row,) = process_rows(s, 0, None)
    assert (row.command, row.state, row.ppid, row.rss) == ("?", "?", None, 1 << 20)


def test_trimmed_history_keeps_each_process_state_in_force(tmp_path: Path) -> None:
    from edgescope_tui.state import StateBuilder

    b = StateBuilder()
    for rec in sampled(tmp_path):
        b.apply(rec)
    b.trim(0.5)  # a long live session lets its oldest half go
    rows = {r.pid: r for r in process_rows(b.freeze(), 0, None)}
    assert rows[1234].state == "sleeping" and rows[1234].command.startswith("python3")
