"""What a framework hook adds to each logging call, beside ``edgescope.log`` and Lightning's
own ``CSVLogger`` in the same run.

pyperf benchmarks; each times calls in chunks of 1,000 with a fresh two-key dict per call, as a
training loop hands them, and between chunks (untimed) lets the background work finish:

- ``edgescope.log``: ``edgescope.log({"train_loss": x, "epoch": e}, step=i)``, the floor of
  every hook (they end in ``Run.log``);
- ``EdgescopeLogger.log_metrics``: what Lightning calls per logged step;
- ``Keras EdgescopeCallback.on_train_batch_end``: what Keras calls per batch (the names become
  ``batch/...``);
- ``Lightning CSVLogger.log_metrics``: the anchor, Lightning's own simplest logger (it buffers
  rows in memory and writes every ``flush_logs_every_n_steps``; flushed between chunks).

Keras runs on its PyTorch backend (``KERAS_BACKEND=torch``), as in the tests. A worker imports
only the library its benchmark needs.

Rerun::

    .venv/bin/python benchmarks/bench_integrations.py --fast
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from typing import Any

import pyperf

CHUNK = 1000
RERUN = "  .venv/bin/python benchmarks/bench_integrations.py --fast"
_state: dict[str, Any] = {}


def _tmpdir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def _quiet_init(make: Any) -> Any:
    """Call ``make()`` with stderr closed: the line ``init`` prints would land in pyperf's."""
    tmp = _tmpdir("bench-integ-")
    os.environ["EDGESCOPE_DIR"] = tmp
    os.environ["XDG_RUNTIME_DIR"] = tmp  # no default collector socket in reach
    os.environ.pop("EDGESCOPE_SOCKET", None)
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        return make()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _chunks(loops: int) -> list[int]:
    return [min(CHUNK, loops - i) for i in range(0, loops, CHUNK)]


def _timed(loops: int, call: Any, between: Any) -> float:
    total = 0.0
    x = 0.5
    for n in _chunks(loops):
        t0 = time.perf_counter()
        for i in range(n):
            call(i, x)
        total += time.perf_counter() - t0
        between()
    return total


def bench_sdk(loops: int) -> float:
    import edgescope

    run = _quiet_init(lambda: edgescope.init(name="bench"))
    log = edgescope.log
    t = _timed(loops, lambda i, x: log({"train_loss": x, "epoch": 0.0}, step=i), run._sync)
    assert run.dropped == 0
    return t


def bench_lightning(loops: int) -> float:
    from edgescope.integrations.lightning import EdgescopeLogger

    logger = EdgescopeLogger(name="bench")
    run = _quiet_init(logger.experiment._logger._start)
    log = logger.log_metrics
    t = _timed(loops, lambda i, x: log({"train_loss": x, "epoch": 0.0}, i), run._sync)
    assert run.dropped == 0
    return t


def bench_keras(loops: int) -> float:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("KERAS_HOME", _tmpdir("bench-keras-"))
    from edgescope.integrations.keras import EdgescopeCallback

    cb = EdgescopeCallback(name="bench")
    cb.set_params({"epochs": 1, "steps": None, "verbose": 0})
    _quiet_init(cb.on_train_begin)
    run = cb.run
    assert run is not None
    end = cb.on_train_batch_end
    t = _timed(loops, lambda i, x: end(i, {"loss": x, "accuracy": x}), run._sync)
    assert run.dropped == 0
    return t


def bench_csv(loops: int) -> float:
    from lightning.pytorch.loggers import CSVLogger

    if "csv" not in _state:
        _state["csv"] = CSVLogger(_tmpdir("bench-csv-"), name="bench")
    logger = _state["csv"]
    log = logger.log_metrics
    return _timed(loops, lambda i, x: log({"train_loss": x, "epoch": 0.0}, i), logger.save)


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "framework hooks vs edgescope.log vs Lightning's CSVLogger"
    names = [
        "edgescope.log",
        "EdgescopeLogger.log_metrics",
        "Keras EdgescopeCallback.on_train_batch_end",
        "Lightning CSVLogger.log_metrics",
    ]
    funcs = [bench_sdk, bench_lightning, bench_keras, bench_csv]
    benches = [runner.bench_time_func(n, f) for n, f in zip(names, funcs, strict=True)]
    if runner.args.worker or any(b is None for b in benches):
        return
    sdk, lit, keras, csv = (b.median() * 1e6 for b in benches)
    print()
    print(f"{'per call (2 values), median':<46}{'us':>9}{'x edgescope.log':>17}{'CSV / this':>12}")
    for name, v in zip(names, (sdk, lit, keras, csv), strict=True):
        print(f"{name:<46}{v:>9.3f}{v / sdk:>17.1f}{csv / v:>12.1f}")
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
