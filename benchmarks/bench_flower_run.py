"""What the Flower Mod costs a round of a whole Flower run: the example app (``examples/flower``)
under the deployment engine with and without ``EdgescopeMod``, side by side on the same
SuperLink and SuperNodes, each round timed from the server's side.

On loopback: a SuperLink and ``--nodes`` SuperNodes (2), each SuperNode with its own real
edgescope collector (``tests/edgescope/flowerdeploy.py``, the deployment ``test_flower.py``
runs). The same app is run ``--pairs`` times (3; ``--fast``: 2) in two forms, interleaved
(plain, Mod, plain, Mod, ...) so that a machine whose load changes weighs on both alike:

- ``no Mod``: the example's ClientApp with its ``mods=[...]`` taken out and edgescope not
  imported at all (``digits_fl/plain.py``, written here from ``client_app.py``);
- ``Mod``: the example's ClientApp as shipped (``EdgescopeMod(device_metrics=True)``),
  recording every message into its node's collector.

Both ServerApps wrap FedAvg in ``RecordedStrategy``, whose ``flower.round`` events in the
server's trace time each round on the server's clock: a round is from the train phase's send to
the evaluate phase's last reply. The figures are pyperf ``Benchmark`` values (one a round:
``--rounds`` per run, 4), compared by their medians; ``-o FILE`` keeps both as a pyperf suite
(``python -m pyperf compare_to``).

Most of a round is Flower's own: a SuperNode pulls every 3 s when it has nothing, and every
message starts a ``flwr-clientapp`` process that imports flwr and the app. The Mod adds its
import, its run's join and finish in each of those processes, and its work per message
(``bench_flower.py`` measures those apart).

Rerun::

    .venv/bin/python benchmarks/bench_flower_run.py --fast     # about five minutes
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "edgescope"))

from flowerdeploy import Deployment, copy_app  # noqa: E402

RERUN = "  .venv/bin/python benchmarks/bench_flower_run.py --fast"
MOD_LINE = "app = ClientApp(mods=[EdgescopeMod(device_metrics=True)])"
IMPORT_LINE = "from edgescope.integrations.flower import EdgescopeMod\n"


def _plain_app(dst: Path) -> Path:
    """The example with its ClientApp as ``digits_fl/plain.py``: no Mod, no edgescope."""
    app = copy_app(dst, "digits_fl.plain:app")
    source = (app / "digits_fl" / "client_app.py").read_text()
    assert MOD_LINE in source and IMPORT_LINE in source, "the example's ClientApp changed"
    plain = source.replace(IMPORT_LINE, "").replace(MOD_LINE, "app = ClientApp()")
    (app / "digits_fl" / "plain.py").write_text(plain)
    return app


def _rounds(server_dir: Path, seen: set[Path]) -> list[float]:
    """Seconds per round (train sent to evaluate done) of the one new server trace."""
    from edgescope_tracing import Event, TraceReader
    from edgescope_tracing.rounds import FLOWER_ROUND

    new = sorted(p for p in server_dir.glob("*.est") if p not in seen)
    assert len(new) == 1, f"one new server trace per run, found {new}"
    seen.update(new)
    phases: dict[tuple[int, str], dict[str, int]] = {}
    with TraceReader(new[0]) as r:
        for rec in r:
            if isinstance(rec, Event) and rec.kind == FLOWER_ROUND:
                phases[(rec.detail["round"], rec.detail["type"])] = rec.detail
    out = []
    for (rnd, kind), ph in sorted(phases.items()):
        if kind == "train":
            ev = phases.get((rnd, "evaluate"))
            assert ev is not None, f"round {rnd} has no evaluate phase"
            out.append((ev["done_us"] - ph["sent_us"]) / 1e6)
    return out


def main() -> None:
    import pyperf

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="2 pairs of runs")
    ap.add_argument("--pairs", type=int, default=3, help="runs of each form (3)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds a run (4)")
    ap.add_argument("--nodes", type=int, default=2, help="SuperNodes (2)")
    ap.add_argument("-o", "--output", help="write both benchmarks as a pyperf JSON suite")
    args = ap.parse_args()
    pairs = 2 if args.fast else args.pairs
    base = Path(tempfile.mkdtemp(prefix="bench-flower-run-"))
    try:
        apps = {"no Mod": _plain_app(base / "app-plain"), "Mod": copy_app(base / "app-mod")}
        dep = Deployment(base / "deploy", args.nodes).start()
        times: dict[str, list[float]] = {name: [] for name in apps}
        walls: dict[str, list[float]] = {name: [] for name in apps}
        seen: set[Path] = set()
        config = f"min-nodes={args.nodes} num-server-rounds={args.rounds} local-epochs=5"
        try:
            for i in range(pairs):
                for name, app in apps.items():
                    t0 = time.perf_counter()
                    run = dep.run(app, config, timeout=1800)
                    walls[name].append(time.perf_counter() - t0)
                    if run.returncode != 0:
                        raise SystemExit(
                            f"flwr run failed: {run.stdout[-2000:]}{run.stderr[-2000:]}"
                        )
                    rounds = _rounds(dep.server_dir, seen)
                    assert len(rounds) == args.rounds, rounds
                    times[name] += rounds
                    print(f"pair {i + 1}/{pairs} {name:7}: rounds "
                          + " ".join(f"{t:.2f}" for t in rounds) + " s", flush=True)  # fmt: skip
        finally:
            dep.stop()
        benches = []
        for name, values in times.items():
            run = pyperf.Run(values, metadata={"name": f"flower round, {name}", "unit": "second"},
                             collect_metadata=False)  # fmt: skip
            benches.append(pyperf.Benchmark([run]))
        if args.output:
            pyperf.BenchmarkSuite(benches).dump(args.output, replace=True)
        a, b = (statistics.median(times[n]) for n in ("no Mod", "Mod"))
        qa, qb = (statistics.quantiles(times[n], n=4) for n in ("no Mod", "Mod"))
        print()
        print(f"{args.nodes} SuperNodes, {args.rounds} rounds a run, {pairs} runs of each "
              "(interleaved)")  # fmt: skip
        print("a round as the server timed it: from the train phase's send to the evaluate "
              "phase's last reply")  # fmt: skip
        print(f"{'':8} {'median':>9} {'quartiles':>17} {'whole run (median)':>20}")
        for name, med, q in (("no Mod", a, qa), ("Mod", b, qb)):
            wall = statistics.median(walls[name])
            print(f"{name:8} {med:8.3f} s  {q[0]:6.3f} - {q[2]:6.3f} s  {wall:17.1f} s")
        print(f"the Mod costs {b - a:+.3f} s a round ({(b - a) / a * 100:+.1f} %), "
              f"{len(times['Mod'])} rounds of each")  # fmt: skip
        print()
        print("rerun:")
        print(RERUN if args.fast or len(sys.argv) == 1 else f"{RERUN.split(' --')[0]} "
              + " ".join(sys.argv[1:]))  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
