"""The SDK in real processes: exit, exceptions, SIGTERM, SIGKILL, fork, 1,000,000 calls."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from edgescope_tracing import Event, RunEnd, RunStart
from sdkutil import (
    PYTHON,
    HungCollector,
    count_values,
    decode,
    of,
    read,
    run_script,
    script,
    sdk_env,
    trace_files,
    values,
)


def _one_file(tmp: Path) -> Path:
    files = trace_files(tmp)
    assert len(files) == 1, files
    return files[0]


def test_a_script_that_raises_keeps_everything_and_says_why(tmp_path: Path) -> None:
    r = run_script(
        tmp_path,
        """
        import edgescope
        edgescope.init(name="raises", flush_interval=60)
        for i in range(5000):
            edgescope.log({"loss": i / 10}, step=i)
        raise ValueError("diverged at step 4999")
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 1
    assert "ValueError: diverged at step 4999" in r.stderr  # the traceback is still printed
    recs = read(_one_file(tmp_path))
    assert values(recs, "loss") == [(i, i / 10) for i in range(5000)]
    ev = [e for e in of(recs, Event) if e.kind == "exception"]
    assert [e.message for e in ev] == ["ValueError: diverged at step 4999"]
    assert of(recs, RunEnd)[0].exit_code == 1


def test_normal_exit_without_finish_writes_everything(tmp_path: Path) -> None:
    r = run_script(
        tmp_path,
        """
        import edgescope
        edgescope.init(name="plain", flush_interval=60)
        for i in range(3000):
            edgescope.log({"loss": float(i)})
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    recs = read(_one_file(tmp_path))
    assert len(values(recs, "loss")) == 3000
    assert len(of(recs, RunEnd)) == 1


def test_sigterm_writes_everything_then_dies_by_sigterm(tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        import sys, time, edgescope
        edgescope.init(name="term", flush_interval=60)  # nothing would reach the file by time
        for i in range(5000):
            edgescope.log({"loss": float(i)}, step=i)
        print("logged", flush=True)
        time.sleep(60)
        """,
    )
    p = subprocess.Popen(
        [PYTHON, str(path)], env=sdk_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == "logged\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == -signal.SIGTERM
    finally:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    recs = read(_one_file(tmp_path))
    assert values(recs, "loss") == [(i, float(i)) for i in range(5000)]
    assert of(recs, RunEnd)[0].exit_code == 128 + signal.SIGTERM
    assert [e.message for e in of(recs, Event) if e.kind == "signal"] == ["received SIGTERM"]


def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path: Path) -> None:
    flush = 0.2
    path = script(
        tmp_path,
        f"""
        import time, edgescope
        edgescope.init(name="killed", flush_interval={flush})
        i = 0
        while True:
            edgescope.log({{"loss": float(i)}}, step=i)
            if i % 50 == 0:
                print(i, time.monotonic(), flush=True)
            i += 1
            time.sleep(0.001)
        """,
    )
    p = subprocess.Popen(
        [PYTHON, str(path)], env=sdk_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    seen: list[tuple[int, float]] = []
    try:
        assert p.stdout is not None
        for line in p.stdout:
            step, t = line.split()
            seen.append((int(step), float(t)))
            if len(seen) >= 3 and seen[-1][1] - seen[0][1] > 1.5:
                break
        p.kill()
        killed_at = time.monotonic()
        p.wait(10)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    recs = read(_one_file(tmp_path))
    assert not of(recs, RunEnd), "SIGKILL leaves no run end"
    got = [s for s, _ in values(recs, "loss")]
    assert got == list(range(len(got)))
    # Everything logged more than a flush interval (plus the shipper's tick and a loaded
    # machine's scheduling slack) before the kill is in the file.
    safe = [s for s, t in seen if t < killed_at - flush - 0.8]
    assert safe and got[-1] >= safe[-1]


def test_one_million_calls_with_a_hung_collector_stay_bounded_and_all_are_kept(
    tmp_path: Path,
) -> None:
    hung = HungCollector(tmp_path / "hung.sock")
    try:
        r = run_script(
            tmp_path,
            """
            import time, edgescope
            def hwm():
                for line in open("/proc/self/status"):
                    if line.startswith(("VmHWM", "VmRSS")):
                        yield int(line.split()[1]) * 1024
            run = edgescope.init(name="million")
            base = max(hwm())
            t0 = time.perf_counter()
            for i in range(1_000_000):
                edgescope.log({"loss": 0.5}, step=i)
            spent = time.perf_counter() - t0
            peak = max(hwm())
            edgescope.finish()
            print(peak - base, spent, run.dropped, run.path)
            """,
            sdk_env(tmp_path, EDGESCOPE_SOCKET=str(hung.path), EDGESCOPE_STALL_TIMEOUT="1"),
            timeout=120,
        )
        sent = decode(hung.read_all())
    finally:
        hung.close()
    assert r.returncode == 0, r.stderr
    grew, _spent, dropped, path = r.stdout.split()
    # A buffer that kept every call would hold ~350 MB; the cap is far below that.
    assert int(grew) < 80 * 2**20, f"RSS grew {int(grew) / 2**20:.0f} MiB"
    # The stall ended the connection; everything the collector had not confirmed (all of it:
    # it never read) was replayed into the file with the rest. A run that outlasts the
    # reconnect interval (a slow machine) tries the collector again, but the hung collector
    # never confirms the run's start, so the run stays in its one file: the loop waited once.
    assert sorted(Path(path).parent.glob("*.est")) == [Path(path)]
    recs = read(Path(path))
    end = of(recs, RunEnd)[0]
    assert end.dropped == int(dropped) == 0
    notices = [e for e in of(recs, Event) if e.kind == "log"]
    assert len(notices) == 1 and "took nothing for 1 s" in notices[0].message
    assert notices[0].detail["replayed"] > 0  # type: ignore[index]
    assert count_values(recs) == 1_000_000 and count_values(sent) > 0


def test_fork_child_gets_its_own_run_and_the_parent_none_twice(tmp_path: Path) -> None:
    r = run_script(
        tmp_path,
        """
        import os, sys, time, edgescope
        run = edgescope.init(name="parent", tags=["p"], flush_interval=0.05)
        pids = []
        for k in range(20):
            for i in range(200):  # keep the shipper busy while forking
                edgescope.log({"loss": float(k * 200 + i)}, step=k * 200 + i)
            pid = os.fork()
            if pid == 0:
                if k % 2 == 0:
                    for i in range(10):
                        edgescope.log({"worker_loss": float(i)}, step=i)
                    edgescope.mark("child done")
                    sys.exit(0)  # the normal way out: atexit finishes the child's run
                os._exit(0)  # a child that never logs leaves nothing behind
            pids.append(pid)
        deadline = time.monotonic() + 30
        for pid in pids:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    raise SystemExit("a forked child deadlocked")
                time.sleep(0.01)
        edgescope.finish(0)
        print(os.getpid(), " ".join(map(str, pids)))
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    parent_pid, *child_pids = map(int, r.stdout.split())
    files = trace_files(tmp_path)
    runs = {}
    for f in files:
        recs = read(f)
        runs[of(recs, RunStart)[0].pid] = recs
    assert set(runs) == {parent_pid} | set(child_pids[::2])
    parent = runs.pop(parent_pid)
    assert values(parent, "loss") == [(i, float(i)) for i in range(4000)]
    assert not values(parent, "worker_loss")
    parent_id = of(parent, RunStart)[0].run_id
    for pid, recs in runs.items():
        start = of(recs, RunStart)[0]
        assert start.name == f"parent.fork{pid}" and start.tags == (
            "p",
            "fork",
            f"parent:{parent_id}",
        )
        assert start.run_id != parent_id
        assert values(recs, "worker_loss") == [(i, float(i)) for i in range(10)]
        assert not values(recs, "loss")
        assert [e.message for e in of(recs, Event)] == ["child done"]
        assert of(recs, RunEnd)[0].dropped == 0


def test_multiprocessing_fork_workers_that_log_are_finished_at_their_exit(tmp_path: Path) -> None:
    r = run_script(
        tmp_path,
        """
        import multiprocessing as mp, edgescope

        def work(k):
            for i in range(100):
                edgescope.log({"worker": float(k)}, step=i)  # then os._exit() ends the worker

        if __name__ == "__main__":
            edgescope.init(name="mp", flush_interval=60)
            edgescope.log({"main": 1.0})
            ctx = mp.get_context("fork")
            procs = [ctx.Process(target=work, args=(k,)) for k in range(3)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(30)
                assert p.exitcode == 0, p.exitcode
            edgescope.finish()
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    files = trace_files(tmp_path)
    assert len(files) == 4
    workers = [read(f) for f in files if ".fork" in f.name]
    assert sorted(values(w, "worker")[0][1] for w in workers) == [0.0, 1.0, 2.0]
    for w in workers:
        assert len(values(w, "worker")) == 100 and of(w, RunEnd)


def test_the_sdk_imports_neither_numpy_nor_torch_nor_the_collector(tmp_path: Path) -> None:
    r = run_script(
        tmp_path,
        """
        import sys, edgescope
        with edgescope.init(name="lean", profile=True):
            edgescope.log({"loss": 0.5, "n": 3})
        heavy = sorted(
            m for m in ("numpy", "torch", "edgescope_collector", "edgescope_tui", "textual")
            if m in sys.modules
        )
        print(",".join(heavy))
        """,
        sdk_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_sigterm_while_the_caller_ships_a_full_buffer_still_ends_the_run(tmp_path: Path) -> None:
    # A 16-call buffer: the loop spends most of its time shipping (caller-runs, holding the
    # shipper's lock), so SIGTERM lands there often; it must neither deadlock nor lose values.
    path = script(
        tmp_path,
        """
        import edgescope
        edgescope.init(name="term-busy", buffer_size=16)
        i = 0
        while True:
            edgescope.log({"loss": float(i), "lr": 0.1}, step=i)
            if i == 20_000:
                print("busy", flush=True)
            i += 1
        """,
    )
    for attempt in range(3):
        for f in trace_files(tmp_path):
            f.unlink()
        p = subprocess.Popen(
            [PYTHON, str(path)],
            env=sdk_env(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert p.stdout is not None and p.stdout.readline() == "busy\n"
            time.sleep(0.05 * attempt)
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == -signal.SIGTERM
        finally:
            p.kill()
            p.wait()
            p.stdout.close()  # type: ignore[union-attr]
        recs = read(_one_file(tmp_path))
        end = of(recs, RunEnd)[0]
        assert end.exit_code == 128 + signal.SIGTERM and end.dropped == 0
        loss = values(recs, "loss")
        assert loss == [(i, float(i)) for i in range(len(loss))] and len(loss) > 20_000
        assert len(values(recs, "lr")) == len(loss)
