"""The cost of ``edgescope.log({"loss": x}, step=i)`` beside its floor and tensorboardX.

pyperf benchmarks in the same run. Each times calls in chunks of 1,000 (one call per step with
a fresh one-key dict, as a training loop does); between chunks, untimed, the logger's
background work is let finish, so that a figure is the cost of the call itself:

- ``list.append floor``: ``buf.append((i, {"loss": x}))`` (the list is emptied between chunks),
  the least any buffering logger can do;
- ``edgescope.log``: the SDK writing its own trace file (no collector); between chunks its
  shipper thread drains, encodes and writes what was logged;
- ``tensorboardX add_scalar``: ``SummaryWriter.add_scalar("loss", x, i)``, flushed between
  chunks.

and two more whose figure is CPU time (``time.process_time``, all threads) per call including
that background work, which in CPython shares the GIL with the training loop:

- ``edgescope.log + shipping (CPU)`` and ``tensorboardX add_scalar + writing (CPU)``.

Targets (issue 3): edgescope.log median <= 0.5 us, within 3x of the floor, and >= 50x faster
than tensorboardX.

pyperf runs each benchmark in its own worker processes one after the other, so on a shared
machine the floor and the call are timed at different moments (this VM's floor has read 0.09
and 0.20 us in consecutive runs while the call read 0.27 both times). So, outside pyperf, the
ratio is also taken paired: chunks of the floor and of ``edgescope.log`` alternate in one
process, each pair timed back to back, and the median of the pairs' ratios is printed beside
pyperf's.

Then, outside pyperf, the latency of single calls (median, p99 and the slowest of 200,000 calls
timed one by one, the timer's own ~50 ns included, logging as fast as possible so that the
default 32,768-call buffer fills and the caller ships it itself) with no collector, with a
collector that accepts and never reads (stall timeout 1 s: one call waits that long, then the
run goes on in a file), one that hangs up 30 ms into the run, and a dead collector (a stale
socket): the issue asks p99 within 10x of the median. ``dropped`` is 0 in every row.

Rerun::

    .venv/bin/python benchmarks/bench_sdk_log.py --fast            # about a minute
    .venv/bin/python benchmarks/bench_sdk_log.py -o sdk_log.json   # pyperf defaults, slower
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyperf

_state: dict[str, Any] = {}
CHUNK = 1000
RERUN = "  .venv/bin/python benchmarks/bench_sdk_log.py --fast"


def _tmpdir(prefix: str) -> str:
    """A temporary directory removed when the (worker) process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def _quiet_env(tmp: str) -> None:
    os.environ["EDGESCOPE_DIR"] = tmp
    os.environ["XDG_RUNTIME_DIR"] = tmp  # no default collector socket in reach
    os.environ.pop("EDGESCOPE_SOCKET", None)


def _chunks(loops: int) -> list[int]:
    return [min(CHUNK, loops - i) for i in range(0, loops, CHUNK)]


def bench_floor(loops: int) -> float:
    buf: list[tuple[int, dict[str, float]]] = []
    append = buf.append
    x = 0.5
    total = 0.0
    for n in _chunks(loops):
        t0 = time.perf_counter()
        for i in range(n):
            append((i, {"loss": x}))
        total += time.perf_counter() - t0
        buf.clear()
    return total


def _run() -> Any:
    import edgescope

    if "run" not in _state:
        tmp = _tmpdir("bench-sdk-")
        _quiet_env(tmp)
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2)
        os.dup2(devnull, 2)  # the one line init prints would land in pyperf's output
        try:
            _state["run"] = edgescope.init(name="bench")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    return _state["run"]


def bench_edgescope(loops: int) -> float:
    import edgescope

    run = _run()
    log = edgescope.log
    x = 0.5
    total = 0.0
    for n in _chunks(loops):
        t0 = time.perf_counter()
        for i in range(n):
            log({"loss": x}, step=i)
        total += time.perf_counter() - t0
        run._sync()  # untimed: the shipper drains, encodes, writes
    assert run.dropped == 0
    return total


def bench_edgescope_cpu(loops: int) -> float:
    import edgescope

    run = _run()
    log = edgescope.log
    x = 0.5
    t0 = time.process_time()
    for n in _chunks(loops):
        for i in range(n):
            log({"loss": x}, step=i)
        run._sync()
    assert run.dropped == 0
    return time.process_time() - t0


def _tb() -> Any:
    from tensorboardX import SummaryWriter

    if "tb" not in _state:
        _state["tb"] = SummaryWriter(_tmpdir("bench-tbx-"))
    return _state["tb"]


def bench_tensorboardx(loops: int) -> float:
    tb = _tb()
    add = tb.add_scalar
    x = 0.5
    total = 0.0
    for n in _chunks(loops):
        t0 = time.perf_counter()
        for i in range(n):
            add("loss", x, i)
        total += time.perf_counter() - t0
        tb.flush()
    return total


def bench_tensorboardx_cpu(loops: int) -> float:
    tb = _tb()
    add = tb.add_scalar
    x = 0.5
    t0 = time.process_time()
    for n in _chunks(loops):
        for i in range(n):
            add("loss", x, i)
        tb.flush()
    return time.process_time() - t0


def paired(rounds: int = 400) -> tuple[float, float, float]:
    """Medians of (floor us, edgescope.log us, ratio) over back-to-back chunk pairs."""
    import edgescope

    run = _run()
    log = edgescope.log
    clock = time.perf_counter
    buf: list[tuple[int, dict[str, float]]] = []
    append = buf.append
    x = 0.5
    floors, calls, ratios = [], [], []
    for _ in range(rounds):
        t0 = clock()
        for i in range(CHUNK):
            append((i, {"loss": x}))
        t1 = clock()
        for i in range(CHUNK):
            log({"loss": x}, step=i)
        t2 = clock()
        buf.clear()
        run._sync()  # untimed, as in bench_edgescope
        floors.append(t1 - t0)
        calls.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    assert run.dropped == 0
    us = 1e6 / CHUNK
    return statistics.median(floors) * us, statistics.median(calls) * us, statistics.median(ratios)


# --- single-call latency under collector trouble (manager process only) -----------------


def _latencies(n: int) -> tuple[float, float, float, int]:
    import edgescope

    log = edgescope.log
    clock = time.perf_counter_ns
    out = [0] * n
    x = 0.5
    for i in range(n):
        t0 = clock()
        log({"loss": x}, step=i)
        out[i] = clock() - t0
    run = edgescope.sdk._run._active
    dropped = run.dropped if run is not None else 0
    edgescope.finish()
    out.sort()
    return statistics.median(out), out[int(n * 0.99)], out[-1], dropped


def _hung(path: Path) -> Callable[[], None]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        s.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(s.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    def close() -> None:
        stop.set()
        t.join()
        s.close()
        for c in held:
            c.close()

    return close


def _goes_away(path: Path, after: float) -> Callable[[], None]:
    """A collector that reads for ``after`` seconds, then hangs up and stops listening."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)

    def serve() -> None:
        c, _ = s.accept()
        c.settimeout(0.01)
        end = time.monotonic() + after
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                c.recv(1 << 16)
        c.close()
        s.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lambda: t.join()


def trouble_table(n: int = 200_000) -> list[tuple[str, float, float, float, int]]:
    import edgescope

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sdk-") as tmp:
        _quiet_env(tmp)
        devnull = open(os.devnull, "w")  # noqa: SIM115
        saved, sys.stderr = sys.stderr, devnull
        saved_fd = os.dup(2)
        os.dup2(devnull.fileno(), 2)  # the fallback notices go straight to fd 2
        try:
            edgescope.init(name="no-collector")
            rows.append(("no collector (own file)", *_latencies(n)))

            hung = Path(tmp) / "hung.sock"
            close = _hung(hung)
            os.environ["EDGESCOPE_SOCKET"] = str(hung)
            os.environ["EDGESCOPE_STALL_TIMEOUT"] = "1"  # the one call that waits, waits 1 s
            edgescope.init(name="hung")
            del os.environ["EDGESCOPE_STALL_TIMEOUT"]
            rows.append(("collector hung, 1 s stall timeout", *_latencies(n)))
            close()

            gone = Path(tmp) / "gone.sock"
            join = _goes_away(gone, 0.03)
            os.environ["EDGESCOPE_SOCKET"] = str(gone)
            edgescope.init(name="gone")
            rows.append(("collector gone mid-run", *_latencies(n)))
            join()

            dead = Path(tmp) / "dead.sock"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(dead))
            s.close()
            os.environ["EDGESCOPE_SOCKET"] = str(dead)
            edgescope.init(name="dead")
            rows.append(("collector dead (stale socket)", *_latencies(n)))
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.stderr = saved
            devnull.close()
            os.environ.pop("EDGESCOPE_SOCKET", None)
    return rows


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "edgescope.log vs list.append vs tensorboardX add_scalar"
    benches = [
        runner.bench_time_func("list.append floor", bench_floor),
        runner.bench_time_func("edgescope.log", bench_edgescope),
        runner.bench_time_func("tensorboardX add_scalar", bench_tensorboardx),
        runner.bench_time_func("edgescope.log + shipping (CPU)", bench_edgescope_cpu),
        runner.bench_time_func("tensorboardX add_scalar + writing (CPU)", bench_tensorboardx_cpu),
    ]
    if runner.args.worker or any(b is None for b in benches):
        return
    f, e, t, ec, tc = (b.median() * 1e6 for b in benches)
    print()
    print(f"{'per call, median':<40}{'us':>9}{'x floor':>9}{'tbX / this':>12}")
    for name, v, tb in (
        ("list.append floor", f, t),
        ("edgescope.log", e, t),
        ("tensorboardX add_scalar", t, t),
        ("edgescope.log + shipping (CPU)", ec, tc),
        ("tensorboardX add_scalar + writing (CPU)", tc, tc),
    ):
        print(f"{name:<40}{v:>9.3f}{v / f:>9.1f}{tb / v:>12.1f}")
    print()
    verdict = {True: "met", False: "NOT met"}
    print(
        f"edgescope.log {e:.3f} us: <= 0.5 us {verdict[e <= 0.5]}; "
        f"within 3x of the floor {verdict[e <= 3 * f]} ({e / f:.1f}x); "
        f">= 50x faster than tensorboardX {verdict[t / e >= 50]} ({t / e:.0f}x)"
    )
    print(
        f"with its background work counted: {ec:.3f} us of CPU per call, "
        f"{tc / ec:.0f}x less than tensorboardX's {tc:.3f} us"
    )
    pf, pe, pr = paired()
    print(
        f"paired (floor and edgescope.log chunks alternating in one process, median of 400 "
        f"pairs): floor {pf:.3f} us, edgescope.log {pe:.3f} us, {pr:.1f}x the floor: "
        f"within 3x {verdict[pr <= 3]}"
    )
    print()
    print("single calls, 200,000 timed one by one, as fast as possible (timer included):")
    print(
        f"{'situation':<36}{'median us':>11}{'p99 us':>9}{'p99/median':>12}{'max ms':>9}"
        f"{'dropped':>9}"
    )
    for name, med, p99, worst, dropped in trouble_table():
        print(
            f"{name:<36}{med / 1e3:>11.3f}{p99 / 1e3:>9.3f}{p99 / med:>12.1f}{worst / 1e6:>9.1f}"
            f"{dropped:>9}"
        )
    print(
        "(max: the call that ships a full buffer itself (caller-runs), or that waits for a hung "
        "collector up to the stall timeout)"
    )
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
