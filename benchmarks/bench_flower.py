"""What the Flower Mod costs a message: the example's ClientApp (``examples/flower``) with and
without ``EdgescopeMod``, side by side in the same run.

pyperf benchmarks:

- ``message, no Mod`` / ``message, Mod`` / ``message, Mod + device figures``: one train
  message through ``ClientApp.__call__`` in a process that has handled one before (the Mod's run
  is open), a real flwr ``Message`` with the model's arrays and a ``Context`` as the SuperNode
  hands them over; the Mod records into a trace file (no collector).
- ``fresh process, no Mod`` / ``fresh process, Mod -> collector``: what the deployment engine
  does for every message: a new Python process imports the app, handles one train message and
  exits. With the Mod that includes importing edgescope, joining the node's run on a real
  collector's ingest socket, recording, and finishing the run at exit. The difference is the
  Mod's cost per message under ``flower-supernode``.

Then, outside pyperf, the same comparisons *interleaved* (no Mod, Mod, no Mod, ... so that a
machine whose load changes, as a shared CI box's does, weighs on both alike), with the medians
and their difference: the Mod alone around a ClientApp function that only replies (3,000 of
each: the Mod's own cost, which the training's noise hides otherwise), 300 in-process messages
of the example, and 12 fresh processes.

The rest of a round (the SuperNode's 3-second poll, starting ``flwr-clientapp``, transport) is
the same with and without the Mod; ``tests/edgescope/test_flower.py`` runs the whole deployment.

Rerun::

    .venv/bin/python benchmarks/bench_flower.py --fast     # about two minutes
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flower"
RERUN = "  .venv/bin/python benchmarks/bench_flower.py --fast"
_state: dict[str, Any] = {}


def _tmpdir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def _setup(mode: str) -> tuple[Any, Any, Any]:
    """The ClientApp for ``mode`` (none, mod, device), a train message and a context."""
    sys.path.insert(0, str(EXAMPLE))
    import numpy as np
    from digits_fl import client_app
    from digits_fl.task import initial_weights
    from flwr.app import ArrayRecord, ConfigRecord, Context, Metadata, RecordDict
    from flwr.app.message.message import make_message
    from flwr.clientapp import ClientApp

    from edgescope.integrations.flower import EdgescopeMod

    mods = {"none": [], "mod": [EdgescopeMod()], "device": [EdgescopeMod(device_metrics=True)]}
    app = ClientApp(mods=mods[mode])
    app.train()(client_app.train)
    content = RecordDict(
        {
            "arrays": ArrayRecord([np.asarray(w) for w in initial_weights()]),
            "config": ConfigRecord({"server-round": 1, "lr": 0.5}),
        }
    )
    meta = Metadata(7, "bench", 0, 11, "", "1", time.time(), 3600.0, "train")
    msg = make_message(meta, content)
    ctx = Context(7, 11, {"partition-id": 0, "num-partitions": 3}, RecordDict(),
                  {"local-epochs": 5, "learning-rate": 0.5})  # fmt: skip
    return app, msg, ctx


def _message_bench(mode: str) -> Any:
    def bench(loops: int) -> float:
        if mode not in _state:
            tmp = _tmpdir("bench-flower-")
            os.environ["EDGESCOPE_DIR"] = tmp
            os.environ["XDG_RUNTIME_DIR"] = tmp
            os.environ.pop("EDGESCOPE_SOCKET", None)
            devnull = os.open(os.devnull, os.O_WRONLY)
            saved = os.dup(2)
            os.dup2(devnull, 2)  # init's one line would land in pyperf's output
            try:
                app, msg, ctx = _setup(mode)
                app(msg, ctx)  # the first message opens the run
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
            _state[mode] = (app, msg, ctx)
        app, msg, ctx = _state[mode]
        t0 = time.perf_counter()
        for _ in range(loops):
            app(msg, ctx)
        return time.perf_counter() - t0

    return bench


def one_message(mode: str) -> None:
    """``--one-message MODE``: what a flwr-clientapp process does for one message."""
    app, msg, ctx = _setup(mode)
    reply = app(msg, ctx)
    assert not reply.has_error(), reply.error


def _paired(sock: str, base: str) -> None:
    import statistics

    apps = {m: _setup(m) for m in ("none", "mod")}
    for app, msg, ctx in apps.values():
        app(msg, ctx)  # the Mod's run opens on its first message
    times: dict[str, list[float]] = {"none": [], "mod": []}
    for _ in range(300):
        for mode, (app, msg, ctx) in apps.items():
            t0 = time.perf_counter()
            app(msg, ctx)
            times[mode].append(time.perf_counter() - t0)
    # the Mod alone: around a ClientApp function that does nothing but reply
    from flwr.app import Message, MetricRecord, RecordDict

    from edgescope.integrations.flower import EdgescopeMod

    _, msg, ctx = apps["none"]

    def noop(m: Any, c: Any) -> Any:
        metrics = MetricRecord({"num-examples": 10, "loss": 0.1})
        return Message(RecordDict({"arrays": m.content["arrays"], "metrics": metrics}), reply_to=m)

    plain, dev = EdgescopeMod(), EdgescopeMod(device_metrics=True)
    bare: dict[str, list[float]] = {"none": [], "mod": [], "device": []}
    calls = {
        "none": lambda: noop(msg, ctx),
        "mod": lambda: plain(msg, ctx, noop),
        "device": lambda: dev(msg, ctx, noop),
    }
    for _ in range(3000):
        for mode, call in calls.items():
            t0 = time.perf_counter()
            call()
            bare[mode].append(time.perf_counter() - t0)
    env = {**os.environ, "EDGESCOPE_SOCKET": sock, "EDGESCOPE_DIR": base, "XDG_RUNTIME_DIR": base}
    procs: dict[str, list[float]] = {"none": [], "mod": []}
    for _ in range(12):
        for mode in procs:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--one-message", mode], env=env,
                           check=True, stderr=subprocess.DEVNULL)  # fmt: skip
            procs[mode].append(time.perf_counter() - t0)
    print()
    print("interleaved (medians):")
    for what, got, unit, scale in (
        ("the Mod around a no-op", bare, "us", 1e6),
        ("in-process message", times, "ms", 1e3),
        ("fresh process, one message", procs, "ms", 1e3),
    ):
        a, b = statistics.median(got["none"]), statistics.median(got["mod"])
        print(
            f"  {what:28} no Mod {a * scale:9.3f} {unit}   Mod {b * scale:9.3f} {unit}   "
            f"Mod costs {(b - a) * scale:+.3f} {unit} ({len(got['none'])} of each)"
        )
        if "device" in got:
            d = statistics.median(got["device"])
            print(f"  {'':28} with device figures {d * scale:9.3f} {unit}   "
                  f"costs {(d - a) * scale:+.3f} {unit}")  # fmt: skip


def _collector() -> tuple[str, str]:
    """A real collector for the fresh-process benchmarks: its ingest socket and a dir."""
    base = _tmpdir("bench-flower-collector-")
    sock = os.path.join(base, "ingest.sock")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgescope_collector", "--listen", f"127.0.0.1:{port}",
         "--data-dir", os.path.join(base, "data"), "--ingest", sock, "--no-mdns"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    atexit.register(proc.terminate)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return sock, base


def main() -> None:
    import pyperf

    if len(sys.argv) > 2 and sys.argv[1] == "--one-message":
        one_message(sys.argv[2])
        return
    if "--worker" not in sys.argv:
        sock, base = _collector()
        os.environ["EDGESCOPE_BENCH_SOCKET"], os.environ["EDGESCOPE_BENCH_DIR"] = sock, base
        sys.argv.append("--inherit-environ=EDGESCOPE_BENCH_SOCKET,EDGESCOPE_BENCH_DIR")
    sock, base = os.environ["EDGESCOPE_BENCH_SOCKET"], os.environ["EDGESCOPE_BENCH_DIR"]
    runner = pyperf.Runner()
    names = {"none": "message, no Mod", "mod": "message, Mod", "device": "message, Mod + device"}
    results = {}
    for mode, name in names.items():
        results[name] = runner.bench_time_func(name, _message_bench(mode))
    env = (f"EDGESCOPE_SOCKET={sock}", f"EDGESCOPE_DIR={base}", f"XDG_RUNTIME_DIR={base}")
    for mode, name in (("none", "fresh process, no Mod"), ("mod", "fresh process, Mod")):
        cmd = ["env", *env, sys.executable, __file__, "--one-message", mode]
        results[name] = runner.bench_command(name, cmd)
    if not runner.args.worker:
        rows = [(n, r) for n, r in results.items() if r is not None]
        if rows:
            print()
            print(f"{'benchmark':34} {'median':>12} {'vs no Mod':>12}")
            base_msg = results["message, no Mod"].median()
            base_proc = results["fresh process, no Mod"].median()
            for n, r in rows:
                anchor = base_proc if n.startswith("fresh") else base_msg
                extra = r.median() - anchor
                print(f"{n:34} {r.median() * 1e3:9.3f} ms {extra * 1e3:+9.3f} ms")
            devnull = os.open(os.devnull, os.O_WRONLY)
            saved = os.dup(2)
            os.dup2(devnull, 2)
            try:
                os.environ.update(EDGESCOPE_DIR=base, XDG_RUNTIME_DIR=base)
                os.environ.pop("EDGESCOPE_SOCKET", None)
                _paired(sock, base)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
            print()
            print("rerun:")
            print(RERUN)


if __name__ == "__main__":
    main()
