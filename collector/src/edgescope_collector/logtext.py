"""The collector's log lines: one line each, whatever a client or a run put in them.

A run name, a client's version field, a file name from the data directory: a log line carries
words that the collector did not choose, and a newline or a terminal escape among them would
forge a line of its own (issue #11 item 13) or reach the terminal of whoever reads the log.
:class:`OneLineFormatter` escapes every message with :func:`edgescope_tracing.text.escape`, in
one place, so that no call site has to remember; a traceback the collector logs itself keeps
its lines.
"""

from __future__ import annotations

import logging

from edgescope_tracing.text import escape

__all__ = ["OneLineFormatter"]


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message part is always one escaped line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)
