"""The edgescope device collector: samplers, ingest, the pipeline, the store, the stream server.

The public surface is the daemon (:class:`Collector`, :func:`run`), its configuration
(:class:`Config`) and its errors (one root, :class:`CollectorError`; see
:mod:`edgescope_collector.errors`). Submodules (``samplers``, ``detectors``, ``pipeline``,
``store``, ``server``, ``stacks``) are imported where they are used; this module imports none of
them, so ``import edgescope_collector`` stays cheap on a device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CollectorError, ConfigError, StackBackendError, StoreError

if TYPE_CHECKING:
    from .config import Config
    from .daemon import Collector, run

__version__ = "0.1.0"

__all__ = [
    "Collector",
    "CollectorError",
    "Config",
    "ConfigError",
    "StackBackendError",
    "StoreError",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in ("Collector", "run"):
        from . import daemon

        return getattr(daemon, name)
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
