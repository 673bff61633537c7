"""Errors of the edgescope command and SDK.

    EdgescopeError        a failure a user can act on; carries the command's exit code
    ├── UsageError        bad arguments or input (exit 2)
    └── NotInstalled      the command needs a part that is not installed here (exit 3)

Errors of the trace format (``edgescope_tracing.TraceError``) are translated to exit code 2
once, in :func:`edgescope.cli.main`.
"""

from __future__ import annotations

from edgescope_tracing.extras import NOT_INSTALLED

__all__ = ["EdgescopeError", "NotInstalled", "UsageError", "file_error"]


class EdgescopeError(Exception):
    """A failure with a one-sentence message and the exit code the command ends with."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(EdgescopeError):
    """Bad arguments or input."""

    exit_code = 2


class NotInstalled(EdgescopeError):
    """A command, or one of its options, needs an installable part that is not installed.

    Raised by :func:`edgescope.cli._extras.require`, which words the message, once for all."""

    exit_code = NOT_INSTALLED


def file_error(name: str, e: OSError) -> UsageError:
    """The one sentence for a file a command cannot open or create, ``NAME: WHY`` (exit 2):
    ``no such file``, ``permission denied``, else the system's words."""
    if isinstance(e, FileNotFoundError):
        why = "no such file"
    elif isinstance(e, PermissionError):
        why = "permission denied"
    else:
        why = (e.strerror or str(e)).lower()
    return UsageError(f"{name}: {why}")
