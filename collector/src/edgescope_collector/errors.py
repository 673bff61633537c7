"""The collector's errors: one root, each a sentence a user can act on.

    CollectorError        the collector (or its pipeline under ``edgescope record``) cannot start
    │                     or go on; ``exit_code`` for the command (1)
    ├── ConfigError       a flag or file that cannot be used (exit 2)
    ├── StoreError        the data directory cannot be used
    └── StackBackendError a stack sampler (perf, bpftrace) cannot start or run here

Errors of the trace format are ``edgescope_tracing.TraceError`` (a token file's is its
``TokenError``); a command translates both to its exit code once.
"""

from __future__ import annotations

__all__ = ["CollectorError", "ConfigError", "StackBackendError", "StoreError"]


class CollectorError(Exception):
    """The collector cannot start or go on (one sentence); ``exit_code`` for the command."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(CollectorError):
    """A flag or file that cannot be used (one sentence)."""

    exit_code = 2


class StoreError(CollectorError):
    """The data directory cannot be used (one sentence)."""


class StackBackendError(CollectorError):
    """A stack sampler cannot start or run here (one sentence: what is missing)."""
