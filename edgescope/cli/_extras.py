"""Which installable part a command needs, and the one way of saying that it is missing.

A device installs the SDK and the collector (``./tracing ./collector '.[collector]'``), a laptop
the UI (``./tracing ./tui '.[tui]'``). A command whose part is absent ends with one line that
names the part and the pip command, and exit code 3 (:class:`~edgescope.errors.NotInstalled`),
whichever command it is.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from edgescope_tracing.extras import COLLECTOR_INSTALL, TUI_INSTALL, not_installed

from edgescope.errors import NotInstalled

__all__ = ["PARTS", "Part", "installed", "require"]


@dataclass(frozen=True, slots=True)
class Part:
    """An optional part of edgescope: what it is called, what imports it, how to install it."""

    name: str
    """What a user calls it in a message."""
    module: str
    """The module whose presence means the part is installed."""
    install: str
    """The pip command that installs it, from a clone of the repository."""


PARTS: dict[str, Part] = {
    "collector": Part(
        "the collector (edgescope-collector)",
        "edgescope_collector",
        COLLECTOR_INSTALL,
    ),
    "tui": Part(
        "the terminal UI (edgescope-tui)",
        "edgescope_tui",
        TUI_INSTALL,
    ),
    "mqtt": Part(
        "the MQTT client (aiomqtt)",
        "aiomqtt",
        "pip install aiomqtt paho-mqtt (or '.[mqtt]' from a clone of edgescope)",
    ),
    "demo": Part("NumPy", "numpy", "pip install numpy (or '.[demo]' from a clone of edgescope)"),
    "torch": Part("PyTorch", "torch", "pip install torch"),
    "parquet": Part(
        "pyarrow", "pyarrow", "pip install pyarrow (or '.[parquet]' from a clone of edgescope)"
    ),
}
"""The extras a command can need, by the name of the pip extra (or package)."""


def installed(part: str) -> bool:
    """Whether ``part`` (a key of :data:`PARTS`) can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(PARTS[part].module) is not None
    except (ImportError, ValueError):
        return False


def require(part: str, what: str) -> None:
    """Raise :class:`NotInstalled` unless ``part`` is installed; ``what`` needs it (e.g.
    ``"edgescope ls"``, ``"ssh:// targets"``)."""
    if not installed(part):
        p = PARTS[part]
        raise NotInstalled(not_installed(what, p.name, p.install))
