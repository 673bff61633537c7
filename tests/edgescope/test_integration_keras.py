"""The Keras 3 callback with real Keras on its PyTorch backend (no TensorFlow or JAX): a tiny
Sequential model fits random data; the trace is read back and compared with what Keras handed
a plain callback beside ours and with ``fit``'s history. Skipped only where Keras 3 (or the
PyTorch it runs on here) is not installed.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import Event, RunEnd, RunStart
from sdkutil import of, read, trace_files, values

# Before Keras is imported: its backend, and a config directory of its own (Keras writes
# keras.json into it on import) instead of the user's ~/.keras.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="edgescope-keras-"))
pytest.importorskip("torch", reason="PyTorch, the Keras backend these tests use, is not installed")
keras = pytest.importorskip(
    "keras", reason="Keras 3 is not installed (pip install 'edgescope[keras]')"
)
if keras.backend.backend() != "torch":  # Keras was imported earlier with another backend
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)
import numpy as np  # noqa: E402

from edgescope.integrations.keras import EdgescopeCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Seen(keras.callbacks.Callback):  # type: ignore[misc]
    """What Keras hands a callback, as it hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int, dict[str, float]]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batches.append((len(self.batches), batch, dict(logs)))


def _fit(callbacks: list[Any], epochs: int = 2) -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model.fit(
        x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, callbacks=callbacks
    )


def test_fit_is_recorded_per_batch_and_per_epoch(sdk: Path) -> None:
    seen = Seen()
    history = _fit([EdgescopeCallback(name="keras-tiny", config={"data": "random"}), seen])
    (path,) = trace_files(sdk)
    records = read(path)

    (start,) = of(records, RunStart)
    assert start.name == "keras-tiny" and "keras" in start.tags
    assert start.config["data"] == "random"
    assert start.config["keras"]["epochs"] == 2 and start.config["keras"]["steps"] == 3
    assert start.config["keras"]["backend"] == "torch"
    assert math.isclose(start.config["optimizer"]["learning_rate"], 0.1, rel_tol=1e-6)

    # 48 training samples in batches of 16: 3 batches an epoch, steps 0..5 across both epochs
    for key in ("loss", "accuracy"):
        ours = values(records, f"batch/{key}")
        theirs = [(i, float(logs[key])) for i, _batch, logs in seen.batches]
        assert [s for s, _ in ours] == [s for s, _ in theirs] == list(range(6))
        for (_, v1), (_, v2) in zip(ours, theirs, strict=True):
            assert math.isclose(v1, v2, rel_tol=1e-6)
    assert [b for _, b, _ in seen.batches] == [0, 1, 2, 0, 1, 2]  # Keras counts per epoch

    # the epoch logs at the step of the epoch's last batch, as fit's history has them
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        ours = values(records, f"epoch/{key}")
        assert [s for s, _ in ours] == [2, 5]
        for (_, v1), v2 in zip(ours, history.history[key], strict=True):
            assert math.isclose(v1, v2, rel_tol=1e-6), key
    # batch logs are running averages over the epoch: the last one is the epoch's figure
    batch_loss = dict(values(records, "batch/loss"))
    for step, epoch_loss in values(records, "epoch/loss"):
        assert math.isclose(batch_loss[step], epoch_loss, rel_tol=1e-6)

    assert [e.message for e in of(records, Event) if e.kind == "mark"] == [
        "epoch 1 done",
        "epoch 2 done",
    ]
    (end,) = of(records, RunEnd)
    assert end.exit_code == 0 and end.dropped == 0


def test_epochs_only_and_a_run_of_ones_own(sdk: Path) -> None:
    import edgescope

    run = edgescope.init(name="mine", config={"seed": 1})
    _fit([EdgescopeCallback(run=run, log_batches=False)], epochs=1)
    assert not run.finished
    run.finish()
    records = read(trace_files(sdk)[0])
    assert of(records, RunStart)[0].config == {"seed": 1}
    (event,) = [e for e in of(records, Event) if e.kind == "config"]
    assert event.detail["keras"]["epochs"] == 1
    assert values(records, "batch/loss") == []
    assert [s for s, _ in values(records, "epoch/loss")] == [2]
