"""The one way of saying that an installable part is missing, and its exit code.

A device installs the SDK and the collector, a laptop the UI; options pull optional libraries
(aiomqtt for ``--mqtt``, prometheus_client for ``--prometheus``, a framework for its hook).
Whichever part, command or option it is, the message is one sentence worded here and the
command ends with :data:`NOT_INSTALLED`. It lives in the format package because every part
imports that one: the ``edgescope`` command (``edgescope.cli._extras``), the framework hooks
(``edgescope.integrations._common``) and the collector's own command share it.
"""

from __future__ import annotations

__all__ = ["COLLECTOR_INSTALL", "NOT_INSTALLED", "TUI_INSTALL", "not_installed"]

NOT_INSTALLED = 3
"""The exit code of a command (or option) whose part is not installed, everywhere."""

COLLECTOR_INSTALL = "pip install ./tracing ./collector '.[collector]' (from a clone of edgescope)"
"""What installs the device side (the SDK and the collector): said by the ``edgescope`` command
and by the UI when a device it reaches over SSH has no collector."""

TUI_INSTALL = "pip install ./tracing ./tui '.[tui]' (from a clone of edgescope)"
"""What installs the laptop side (the terminal UI)."""


def not_installed(what: str, part: str, install: str) -> str:
    """The sentence: ``what`` (a command, an option, a module) needs ``part`` (what a user
    calls it), which is not installed here, and ``install``, the pip command that installs it."""
    return f"{what} needs {part}, which is not installed here: {install}"
