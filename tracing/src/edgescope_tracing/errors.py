"""Errors of the trace format.

TraceError                    every error this package raises on purpose
├── NotATraceError            the bytes do not start with the edgescope magic
├── UnsupportedVersionError   written by a newer major version of the format
├── RecordTooLargeError       a record cannot fit in one frame (ValueError too)
└── DecodeError               a frame's payload is not valid records (the reader reports
                              it as damage and goes on; it reaches callers of the codec)
"""

from __future__ import annotations

__all__ = [
    "TraceError",
    "NotATraceError",
    "UnsupportedVersionError",
    "RecordTooLargeError",
    "DecodeError",
]


class TraceError(Exception):
    """Root of the errors raised by edgescope_tracing."""


class NotATraceError(TraceError):
    """The data is not an edgescope trace."""


class UnsupportedVersionError(TraceError):
    """The trace was written by a newer major format version than this reader knows."""


class RecordTooLargeError(TraceError, ValueError):
    """A record is larger than a frame may hold."""


class DecodeError(TraceError):
    """A payload that is not a valid record."""
