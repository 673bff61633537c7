"""Where records come from: a trace file or a live collector (TCP or through SSH).

Both yield the same records; live is replay at the head of the stream, so the views never know
which one they show.
"""

from .base import Source, Status

__all__ = ["Source", "Status"]
