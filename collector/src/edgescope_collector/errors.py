"""The collector's errors.

CollectorError      the collector (or its pipeline under ``edgescope record``) cannot start
                    or go on; one sentence, and ``exit_code`` for the command
"""

from __future__ import annotations

__all__ = ["CollectorError"]


class CollectorError(Exception):
    """The collector cannot start or go on (one sentence); ``exit_code`` for the command."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
