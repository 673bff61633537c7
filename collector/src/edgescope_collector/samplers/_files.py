"""Small, forgiving readers for /proc and /sys files.

Kernel files come and go (a process exits, a CPU goes offline, a thermal zone is disabled and
answers ``EINVAL``), so every reader here returns ``None`` for a file that cannot be read or
parsed instead of raising. Callers decide what an absent figure means.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_text", "read_int", "read_kv", "numbered"]


def read_text(path: Path | str) -> str | None:
    """The file's text with surrounding whitespace stripped, or None if it can't be read.

    Plain ``os.open``/``os.read``: a sampler reads a hundred small files a second on a
    board where every microsecond shows in the collector's CPU share.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace").strip()


def read_int(path: Path | str, base: int = 10) -> int | None:
    """The file's first token as an integer, or None if absent or not a number."""
    text = read_text(path)
    if not text:
        return None
    try:
        return int(text.split()[0], base)
    except ValueError:
        return None


def read_kv(path: Path | str) -> dict[str, int]:
    """``key value`` lines (``memory.events``, ``memory.stat``) as a dict; {} if unreadable."""
    text = read_text(path)
    out: dict[str, int] = {}
    if not text:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def numbered(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """Entries ``prefix<N>`` of a directory, sorted by N (``cpu3``, ``thermal_zone0``)."""
    try:
        names = [e.name for e in directory.iterdir()]
    except OSError:
        return []
    out = []
    for name in names:
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isdigit():
            out.append((int(suffix), directory / name))
    out.sort()
    return out
