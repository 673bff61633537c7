"""What an attacker (or an accident) leaves where a command will write: a link to a victim file
and a FIFO nobody reads, for the tests that a writer neither follows the one nor waits on the
other."""

from __future__ import annotations

import os
from pathlib import Path


def planted(tmp: Path, victim_bytes: bytes) -> tuple[Path, Path, Path]:
    """``(victim, link, fifo)`` in ``tmp``: ``victim`` holds ``victim_bytes``, ``link.est`` is a
    symbolic link to it and ``fifo.est`` a FIFO with no reader."""
    victim = tmp / "victim"
    victim.write_bytes(victim_bytes)
    link = tmp / "link.est"
    link.symlink_to(victim)
    fifo = tmp / "fifo.est"
    os.mkfifo(fifo)
    return victim, link, fifo
