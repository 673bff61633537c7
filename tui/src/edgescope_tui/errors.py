"""The TUI's errors: one root, each a sentence a user can act on.

    TuiError              a failure of the UI or its clients (one sentence)
    ├── TargetError       a target, devices file or SSH config entry that cannot be used
    │                     (also a ValueError)
    ├── SshError          an SSH-side failure that names the target
    │   ├── HostKeyError, SshAuthError, SshUnreachable, NoCollectorError
    ├── FatalSourceError  a live source's failure that retrying won't fix
    └── SaveError         the run could not be saved (also an ``edgescope_tracing.TraceError``)

Errors of the trace format and the wire are ``edgescope_tracing.TraceError``; a command
translates both to its exit code once.
"""

from __future__ import annotations

__all__ = ["TuiError"]


class TuiError(Exception):
    """A failure of the UI or its clients, with a one-sentence message."""
