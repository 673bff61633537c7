"""A Hugging Face ``Trainer`` callback that records the run as an edgescope trace.

::

    from transformers import Trainer
    from edgescope.integrations.transformers import EdgescopeCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[EdgescopeCallback()])
    trainer.train()

Install with ``pip install 'edgescope[transformers]'``.

What it records, on the main process only (``state.is_world_process_zero``: under DDP or
DeepSpeed one run holds what the Trainer logs there):

- ``on_train_begin``: starts a run (``edgescope.init``) whose config is the Trainer's
  arguments (``TrainingArguments.to_dict()``: tokens are already masked there), with the
  model's config under ``model_config`` and ``config=`` merged on top, tagged
  ``transformers``;
- ``on_log``: every number in the Trainer's logs (``loss``, ``grad_norm``, ``learning_rate``,
  ``epoch``, ``eval_*``, the final ``train_runtime`` ...) at ``state.global_step``; a value
  that is not a number is said once on stderr and skipped;
- ``on_epoch_end``: a mark ``epoch N done``;
- ``on_train_end``: a mark ``training done``, then the run is finished (exit code 0).

Evaluation after training (``trainer.evaluate()``) logs through ``on_log`` too: into the run
while it is open, and into a run of its own (started there, config as above) once training
finished it. ``run=`` records into a run you started with ``edgescope.init()`` instead: the
callback then neither starts nor finishes a run, and the Trainer's arguments go to it as a
``config`` event.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as _e:
    from edgescope.integrations._common import missing

    raise missing(
        "transformers", "Hugging Face Transformers", "transformers", _e, "transformers"
    ) from _e

import edgescope
from edgescope.integrations._common import Numbers, given_run, record_config
from edgescope.sdk._run import Run
from edgescope.sdk._values import jsonable_config

__all__ = ["EdgescopeCallback"]


class EdgescopeCallback(TrainerCallback):  # type: ignore[misc,unused-ignore]
    """Records what the Trainer logs into an edgescope run (see the module's docstring).

    ``name``, ``config`` (a dict merged over the Trainer's arguments), ``tags`` and any other
    keyword (``profile``, ``dir``, ...) go to ``edgescope.init()``; ``run`` is a run to record
    into instead of starting one.
    """

    def __init__(
        self,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        *,
        run: Run | None = None,
        **init_kwargs: Any,
    ) -> None:
        run = given_run("EdgescopeCallback", run)
        self._name = name
        self._config = jsonable_config(config)
        self._tags = ["transformers", *(tags or [])]
        self._init_kwargs = init_kwargs
        self._given = run
        self.run: Run | None = run
        """The run being recorded (None before training began, and after it ended)."""
        self._numbers = Numbers("EdgescopeCallback")

    def _config_of(self, args: TrainingArguments, model: Any) -> dict[str, Any]:
        to_dict: Any = args.to_dict  # untyped in transformers
        config: dict[str, Any] = dict(to_dict())
        model_config = getattr(model, "config", None)
        if model_config is not None and callable(getattr(model_config, "to_dict", None)):
            config["model_config"] = model_config.to_dict()
        config.update(self._config)
        return config

    def _open(self, args: TrainingArguments, model: Any) -> Run:
        if self.run is None or self.run.finished:
            self.run = edgescope.init(
                name=self._name or args.run_name or None,
                config=self._config_of(args, model),
                tags=self._tags,
                **self._init_kwargs,
            )
        return self.run

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        if self._given is not None:
            record_config(self._given, self._config_of(args, model), "the Trainer's arguments")
            return
        if self.run is not None and not self.run.finished:
            self.run.finish()  # a train() that never reached on_train_end
        self.run = None
        self._open(args, model)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        values = self._numbers(logs)
        if values:
            self._open(args, model).log(values, step=state.global_step)

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and self.run is not None and not self.run.finished:
            self.run.mark(f"epoch {round(state.epoch or 0)} done")

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or self.run is None or self.run.finished:
            return
        self.run.mark("training done")
        if self._given is None:
            self.run.finish(0)
