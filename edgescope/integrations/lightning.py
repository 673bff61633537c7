"""A PyTorch Lightning logger that records the run as an edgescope trace.

::

    from lightning.pytorch import Trainer
    from edgescope.integrations.lightning import EdgescopeLogger

    trainer = Trainer(logger=EdgescopeLogger(name="mnist"), max_epochs=3)
    trainer.fit(model, datamodule)

Install with ``pip install 'edgescope[lightning]'`` (the ``lightning`` package; the older
``pytorch_lightning`` import name has classes of its own and is not supported).

What it records:

- ``log_metrics(metrics, step)``: every number Lightning hands the logger (what ``self.log``
  logged, ``epoch`` included), at Lightning's step (the count of optimizer steps);
- ``log_hyperparams(params)``: the module's (and datamodule's) ``hparams``, merged with
  ``config=``, become the run's config. The run starts at the first of ``log_hyperparams``,
  ``log_metrics`` or ``logger.experiment.log/mark``, so that in ``Trainer.fit`` the
  hyperparameters are in the run's start. Hyperparameters that arrive after the start (a
  second ``fit`` with other ones) are recorded as a ``config`` event with them as its detail;
- ``finalize(status)``: a mark ``lightning: success`` at the end of each Trainer call
  (``lightning: failed`` when Lightning caught an exception). The run stays open, so that
  ``trainer.fit`` then ``trainer.test`` land in one run; it ends at ``logger.finish()``, or
  when the interpreter exits (the SDK does that, with the exception and exit code 1 when one
  escaped); ``finish()`` records exit code 0 when the last Trainer call succeeded, 1 when it
  failed. What the logger records after its run finished (``finish()``, or an
  ``edgescope.init()`` elsewhere in the process) goes into a new run, same name and config.

Under DDP (and any multi-process strategy) only global rank zero records: ``log_*`` and
``finalize`` are ``rank_zero_only`` and ``experiment`` is Lightning's dummy on the other ranks,
as in Lightning's own loggers, so one run holds the values rank zero sees.

``experiment`` is the :class:`edgescope.Run` (for ``self.logger.experiment.mark("...")``). It
is made when first asked for; Lightning asks for it in its setup hook, before it hands the
hyperparameters, so until then it is a small handle that starts the run on first use and holds
the run after that. ``version`` is the run's id once it has started (None before).

``run=`` records into a run you started yourself with ``edgescope.init()``: the logger never
finishes that run, and hyperparameters go to it as a ``config`` event. Without ``run=`` the
logger calls ``edgescope.init()``, which finishes any run active in the process first (under
``edgescope record --profile python`` that is the start-up run of the profiler, and the
logger's own run is profiled from there on). A copy of the logger in another process (the
Trainer is pickled to the workers of ``strategy="ddp_spawn"``) records into a run of its own:
a run lives in the process that started it.
"""

from __future__ import annotations

import threading
from argparse import Namespace
from typing import Any

try:
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import Logger
except ImportError as _e:
    from edgescope.integrations._common import missing

    raise missing("lightning", "PyTorch Lightning", "lightning", _e, "lightning") from _e

import edgescope
from edgescope.integrations._common import Numbers, given_run, record_config
from edgescope.sdk._run import Run
from edgescope.sdk._values import jsonable_config

__all__ = ["EdgescopeLogger", "Experiment"]


class Experiment:
    """What ``EdgescopeLogger.experiment`` is: the run, started when first used.

    ``log`` and ``mark`` are the run's; ``run`` starts it and returns it.
    """

    def __init__(self, logger: EdgescopeLogger) -> None:
        self._logger = logger

    @property
    def run(self) -> Run:
        """The :class:`edgescope.Run` (started now if it had not)."""
        return self._logger._start()

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """``Run.log``: record values at a step."""
        self.run.log(metrics, step)

    def mark(self, text: str) -> None:
        """``Run.mark``: an annotation on the run's timeline."""
        self.run.mark(text)

    def __repr__(self) -> str:
        return f"<edgescope Lightning experiment {self._logger._run!r}>"


class EdgescopeLogger(Logger):  # type: ignore[misc,unused-ignore]
    """Records what Lightning logs into an edgescope run (see the module's docstring).

    ``name``, ``config`` (extra hyperparameters, a dict), ``tags`` and any other keyword
    (``profile``, ``dir``, ...) go to ``edgescope.init()``; ``run`` is a run to record into
    instead of starting one.
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
        super().__init__()
        run = given_run("EdgescopeLogger", run)
        self._name = name
        self._config = jsonable_config(config)
        self._tags = ["lightning", *(tags or [])]
        self._init_kwargs = init_kwargs
        self._run: Run | None = run
        self._own = run is None
        self._hparams: dict[str, Any] | None = None
        self._status: str | None = None
        """The status of the last ``finalize`` of the current run."""
        self._numbers = Numbers("EdgescopeLogger")
        self._lock = threading.RLock()
        self._experiment = Experiment(self)

    # --- what Lightning asks ---------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The run's name (None until the run starts, when none was given)."""
        if self._run is not None:
            return self._run.name
        return self._name

    @property
    def version(self) -> str | None:
        """The run's id, once it has started."""
        return self._run.run_id if self._run is not None else None

    @property
    @rank_zero_experiment  # type: ignore[untyped-decorator, unused-ignore]
    def experiment(self) -> Experiment:
        """The run behind this logger (see :class:`Experiment`); a dummy on ranks above zero."""
        return self._experiment

    @rank_zero_only  # type: ignore[untyped-decorator, unused-ignore]
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """The hyperparameters: the run's config if it has not started, else a config event."""
        values = jsonable_config(params)
        with self._lock:
            if self._run is None or (self._own and self._run.finished):
                self._hparams = values
                self._run = None
                self._start()
                return
            if self._hparams == values:
                return  # Lightning hands the same ones again for each trainer.fit/test
            self._hparams = values
        record_config(self._run, values, "hyperparameters given after the run started")

    @rank_zero_only  # type: ignore[untyped-decorator, unused-ignore]
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record the numbers among ``metrics`` at ``step`` (the next step when None)."""
        values = self._numbers(metrics)
        if values:
            self._start().log(values, step)

    @rank_zero_only  # type: ignore[untyped-decorator, unused-ignore]
    def finalize(self, status: str) -> None:
        """Mark the end of a Trainer call on the run's timeline (the run stays open)."""
        if self._run is not None and not self._run.finished:
            self._run.mark(f"lightning: {status}")
            self._status = status

    def finish(self) -> None:
        """Finish the run this logger started (a run given as ``run=`` is left to its owner).

        Its exit code is 0 when the last Trainer call ended in success, 1 when it failed, and
        None (not recorded) before any ended. What the logger records after this goes into a
        new run, with the same name and config.
        """
        if self._run is not None and self._own and not self._run.finished:
            self._run.finish({"success": 0, "failed": 1}.get(self._status or ""))
            self._status = None

    # --- processes -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Spawn-based strategies (ddp_spawn) pickle the Trainer with its loggers. A run lives in
        # one process, so a copy in another process starts a run of its own when it records.
        state = self.__dict__.copy()
        state.update(_run=None, _own=True, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- the run ---------------------------------------------------------------------------

    def _start(self) -> Run:
        """The run, started now if there is none; a finished run of the logger's own is
        followed by a new one (same name and config), a finished ``run=`` is not."""
        run = self._run
        if run is not None and not (self._own and run.finished):
            return run
        with self._lock:
            if self._run is None or (self._own and self._run.finished):
                config = {**self._config, **(self._hparams or {})}
                self._run = edgescope.init(
                    name=self._name, config=config, tags=self._tags, **self._init_kwargs
                )
            return self._run
