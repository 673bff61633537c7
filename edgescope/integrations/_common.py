"""What the framework hooks share: saying that a framework is missing, recording hyperparameters
that arrive after a run started, and keeping a framework's non-numeric log values visible.

Nothing here imports a framework: each hook module imports its own and calls these.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from typing import Any

from edgescope_tracing import Event
from edgescope_tracing.extras import not_installed

from edgescope.sdk._run import Run
from edgescope.sdk._ship import notify
from edgescope.sdk._values import as_float, jsonable_config

__all__ = ["CONFIG_EVENT", "Numbers", "given_run", "missing", "record_config"]

CONFIG_EVENT = "config"
"""The event kind that carries hyperparameters given after the run's start was recorded."""


def missing(
    hook: str, library: str, extra: str, cause: ImportError, module: str, hint: str = ""
) -> ImportError:
    """The error raised by importing ``edgescope.integrations.HOOK`` where ``library`` (whose
    top-level module is ``module``) cannot be imported: not installed, or installed but broken
    (``hint`` then says what it needs)."""
    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        return ImportError(
            f"edgescope.integrations.{hook} needs {library}, which is installed but cannot be "
            f"imported here ({cause}){'; ' + hint if hint else ''}"
        )
    return ImportError(
        not_installed(
            f"edgescope.integrations.{hook}", library, f"pip install 'edgescope[{extra}]'"
        )
    )


def given_run(hook: str, run: object) -> Run | None:
    """A hook's ``run=`` argument: None, or an :class:`edgescope.Run` to record into (TypeError
    otherwise, naming the hook)."""
    if run is not None and not isinstance(run, Run):
        raise TypeError(f"{hook}: run must be an edgescope.Run, got {run!r}")
    return run


def record_config(run: Run, config: Mapping[str, Any], why: str) -> None:
    """Record ``config`` on ``run`` as a ``config`` event, for hyperparameters that come after
    the run's start (whose config is fixed once recorded); ``why`` is the event's message."""
    run._push(
        Event(
            CONFIG_EVENT,
            why,
            run=0,
            detail=jsonable_config(dict(config)),
            t_us=time.time_ns() // 1000,
        )
    )


class Numbers:
    """Turns a framework's log dict into the numbers ``edgescope.log`` takes.

    Frameworks put strings and other objects beside their numbers now and then; those are not
    metrics. Each such name is said once on stderr (never silently dropped), then skipped.
    """

    def __init__(self, hook: str) -> None:
        self._hook = hook
        self._told: set[str] = set()
        self._names: dict[tuple[str, str], str] = {}
        """``prefix + key`` by ``(prefix, key)``: a batch hook builds each name once."""

    def __call__(self, logs: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        names = self._names
        for key, value in logs.items():
            name = key if not prefix else names.get((prefix, key))
            if name is None:
                name = names[prefix, key] = f"{prefix}{key}"
            if type(value) is float:  # what the frameworks hand over nearly always
                out[name] = value
                continue
            try:
                out[name] = as_float(name, value)
            except (TypeError, ValueError) as e:
                if name not in self._told:
                    self._told.add(name)
                    notify(f"{self._hook}: not recording {name!r}, which is not a number ({e})")
        return out
