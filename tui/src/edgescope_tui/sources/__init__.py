"""Where records come from: a trace file or a live collector (TCP or through SSH).

Both yield the same records; live is replay at the head of the stream, so the views never know
which one they show.
"""

from .base import SeekableSource, Source, Status
from .file import FileSource

__all__ = ["FileSource", "SeekableSource", "Source", "Status"]
