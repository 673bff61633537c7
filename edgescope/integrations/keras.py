"""A Keras 3 callback that records ``model.fit`` as an edgescope trace.

::

    from edgescope.integrations.keras import EdgescopeCallback

    model.fit(x, y, epochs=5, callbacks=[EdgescopeCallback(name="mnist")])

Install with ``pip install 'edgescope[keras]'``; any Keras 3 backend (TensorFlow, JAX,
PyTorch) works, as the callback only reads the logs Keras hands it.

What it records:

- ``on_train_begin``: starts a run (``edgescope.init``, tagged ``keras``) whose config is
  ``config=`` plus ``keras`` (``epochs``, ``steps`` per epoch, ``verbose`` as ``fit`` set them,
  and the backend) and ``optimizer`` (the optimizer's ``get_config()``);
- ``on_train_batch_end``: every number of the batch logs as ``batch/NAME`` (``batch/loss``,
  ``batch/accuracy``, ...) at the step = batches trained so far in this ``fit``, minus one;
- ``on_epoch_end``: every number of the epoch logs as ``epoch/NAME`` (``epoch/loss``,
  ``epoch/val_loss``, ...) at the step of the epoch's last batch, and a mark ``epoch N done``;
- ``on_train_end``: the run is finished (exit code 0; a ``fit`` that raised is finished by
  the SDK with the exception and exit code 1 when it escapes the script).

Two things to know about Keras' batch logs:

- they are **running averages** over the epoch so far, not the value of that one batch (Keras'
  metrics accumulate until ``reset_state`` at the start of each epoch): ``batch/loss`` at the
  tenth batch is the mean loss of batches one to ten;
- they come once per **``steps_per_execution``** batches (Keras calls ``on_train_batch_end``
  once per execution, with the index of its last batch), so with ``steps_per_execution=32``
  there is one value every 32 steps; the steps stay those of the batches, so curves from runs
  with different settings line up. (The PyTorch backend requires ``steps_per_execution=1``.)

``log_batches=False`` records only the epoch logs. The callback has no notion of rank: under
multi-worker training each process that runs it records its own run (give it to the chief
only, for one run). ``run=`` records into a run you started with
``edgescope.init()``: the callback then neither starts nor finishes it, and its config goes to
the run as a ``config`` event.
"""

from __future__ import annotations

from typing import Any

try:
    import keras
except ImportError as _e:
    from edgescope.integrations._common import missing

    raise missing(
        "keras",
        "Keras 3",
        "keras",
        _e,
        "keras",
        "Keras runs on the backend that KERAS_BACKEND names (tensorflow by default, jax or "
        "torch), which must be installed too",
    ) from _e

import edgescope
from edgescope.integrations._common import Numbers, given_run, record_config
from edgescope.sdk._run import Run
from edgescope.sdk._values import jsonable_config

__all__ = ["EdgescopeCallback"]


class EdgescopeCallback(keras.callbacks.Callback):  # type: ignore[misc,unused-ignore]
    """Records ``fit``'s batch and epoch logs into an edgescope run (see the module's docstring).

    ``name``, ``config`` (a dict), ``tags`` and any other keyword (``profile``, ``dir``, ...) go
    to ``edgescope.init()``; ``run`` is a run to record into instead of starting one.
    """

    def __init__(
        self,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        *,
        log_batches: bool = True,
        run: Run | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        run = given_run("EdgescopeCallback", run)
        self._name = name
        self._config = jsonable_config(config)
        self._tags = ["keras", *(tags or [])]
        self._init_kwargs = init_kwargs
        self._log_batches = bool(log_batches)
        self._given = run
        self.run: Run | None = run
        """The run being recorded (None before ``fit`` began)."""
        self._numbers = Numbers("EdgescopeCallback")
        self._base = 0
        """Batches trained in the epochs before this one."""
        self._last = -1
        """The index (within its epoch) of the last batch Keras reported, -1 before any."""

    def _fit_config(self) -> dict[str, Any]:
        params = dict(self.params or {})
        config: dict[str, Any] = {
            "keras": {**params, "backend": keras.backend.backend(), "version": keras.__version__}
        }
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and callable(getattr(optimizer, "get_config", None)):
            config["optimizer"] = optimizer.get_config()
        config.update(self._config)
        return config

    def _step(self, batch: int) -> int:
        return self._base + int(batch)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._base = 0
        self._last = -1
        if self._given is not None:
            record_config(self._given, self._fit_config(), "Keras fit's configuration")
            return
        self.run = edgescope.init(
            name=self._name, config=self._fit_config(), tags=self._tags, **self._init_kwargs
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last = -1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._last = int(batch)
        if self._log_batches and self.run is not None and logs:
            values = self._numbers(logs, "batch/")
            if values:
                self.run.log(values, step=self._step(batch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._step(max(self._last, 0))
        self._base += self._last + 1
        self._last = -1
        if self.run is None:
            return
        values = self._numbers(logs or {}, "epoch/")
        if values:
            self.run.log(values, step=step)
        self.run.mark(f"epoch {epoch + 1} done")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.run is not None and self._given is None and not self.run.finished:
            self.run.finish(0)
