"""The collector keeps up (issue 10): what the SDK logs flat out is all in a real collector's store.

A real ``python -m edgescope_collector`` process on its own ingest socket and data directory;
the SDK logs as fast as Python goes; then the collector is stopped and its segment files are
read back, and every run's values are counted (and compared) there, run by run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from edgescope_tracing import Metrics, Record, RunEnd, RunStart, TraceReader
from sdkutil import forking_job, log_from_threads, run_script, sdk_env, trace_files

import edgescope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))
from test_daemon import Collector  # the collector's own test helper


def _store(c: Collector) -> dict[str, list[Record]]:
    """The stored records of each run, by run name, in store order."""
    names: dict[int, str] = {}
    runs: dict[str, list[Record]] = {}
    for seg in sorted(c.data.glob("seg-*.est")):
        with TraceReader(seg) as r:
            for rec in r:
                if isinstance(rec, RunStart):
                    names[rec.run] = rec.name
                    runs.setdefault(rec.name, [])
                run = getattr(rec, "run", None)
                if run in names:
                    runs[names[run]].append(rec)
    return runs


def _by_key(recs: list[Record]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of each metric key in ``recs``, in store order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for m in recs:
        if isinstance(m, Metrics):
            out.setdefault(m.key, []).extend(zip(m.steps, m.values, strict=True))
    return out


def _ends(recs: list[Record]) -> list[RunEnd]:
    return [r for r in recs if isinstance(r, RunEnd)]


@pytest.fixture
def collector(sdk: Path, monkeypatch: pytest.MonkeyPatch) -> Collector:
    (sdk / "c").mkdir()
    c = Collector(sdk / "c").start()
    monkeypatch.setenv("EDGESCOPE_SOCKET", str(c.ingest))
    monkeypatch.setenv("EDGESCOPE_STALL_TIMEOUT", "60")  # a loaded test machine is not a hang
    return c


def test_a_million_one_key_values_from_one_run_are_all_in_the_store(collector: Collector) -> None:
    n = 1_000_000
    run = edgescope.init(name="million")
    log = edgescope.log
    for i in range(n):
        log({"loss": i * 0.5}, step=i)
    edgescope.finish(0)
    assert collector.stop() == 0, collector.stderr()
    assert run.collector == str(collector.ingest) and run.path is None, "never fell back"
    stored = _store(collector)["million"]
    assert _by_key(stored) == {"loss": [(i, i * 0.5) for i in range(n)]}
    (end,) = _ends(stored)
    assert end.dropped == 0 and end.exit_code == 0


def test_twenty_runs_logging_at_once_are_all_in_the_store_counted_per_run(
    collector: Collector, sdk: Path
) -> None:
    runs, n = 20, 10_000  # 200,000 values, each run ten times its 1,024-call buffer
    r = run_script(
        sdk,
        f"""
        import os, edgescope
        kids = []
        for k in range({runs}):
            pid = os.fork()
            if pid == 0:
                run = edgescope.init(name=f"run{{k}}", buffer_size=1024)
                for i in range({n}):
                    edgescope.log({{"loss": float(i), "k": float(k)}}, step=i)
                edgescope.finish(0)
                os._exit(0 if run.path is None and run.dropped == 0 else 3)
            kids.append(pid)
        print(sum(os.waitpid(p, 0)[1] != 0 for p in kids))
        """,
        sdk_env(sdk, EDGESCOPE_SOCKET=str(collector.ingest), EDGESCOPE_STALL_TIMEOUT="60"),
        timeout=150,
    )
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    assert collector.stop() == 0, collector.stderr()
    stored = _store(collector)
    assert sorted(stored) == sorted(f"run{k}" for k in range(runs))
    for k in range(runs):
        recs = stored[f"run{k}"]
        assert _by_key(recs) == {
            "loss": [(i, float(i)) for i in range(n)],
            "k": [(i, float(k)) for i in range(n)],
        }, f"run{k}"
        (end,) = _ends(recs)
        assert end.dropped == 0 and end.exit_code == 0, f"run{k}"


def test_several_threads_of_one_run_are_all_in_the_store(collector: Collector) -> None:
    run = edgescope.init(name="threads", buffer_size=4096)
    want = log_from_threads(30_000, 4)
    edgescope.finish(0)
    assert collector.stop() == 0, collector.stderr()
    assert run.collector == str(collector.ingest) and run.path is None, "never fell back"
    stored = _store(collector)["threads"]
    assert _by_key(stored) == want
    (end,) = _ends(stored)
    assert end.dropped == 0 and end.exit_code == 0


def test_a_child_forked_from_a_live_run_and_its_parent_are_all_in_the_store(
    collector: Collector, sdk: Path
) -> None:
    n = 100_000
    r = run_script(
        sdk,
        forking_job(n),
        sdk_env(sdk, EDGESCOPE_SOCKET=str(collector.ingest), EDGESCOPE_STALL_TIMEOUT="60"),
        timeout=150,
    )
    assert r.returncode == 0 and r.stdout.split() == ["0", "None"], r.stderr
    assert not trace_files(sdk), "neither fell back to a file"
    assert collector.stop() == 0, collector.stderr()
    stored = _store(collector)
    child = next(v for k, v in stored.items() if k.startswith("forks.fork"))
    parent = stored["forks"]
    assert _by_key(parent)["parent"] == [(i, float(i)) for i in range(n)]
    assert _by_key(child)["child"] == [(i, float(i)) for i in range(n)]
    for recs in (parent, child):
        (end,) = _ends(recs)
        assert end.dropped == 0 and end.exit_code == 0
