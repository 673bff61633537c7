"""What an attacker (or an accident) leaves where a command will write: a link to a victim file
and a FIFO nobody reads, for the tests that a writer neither follows the one nor waits on the
other."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


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


def finishes(fn: Callable[[], object], fifo: Path, what: str, timeout: float = 10.0) -> None:
    """Run ``fn`` in a thread; where it is still waiting after ``timeout`` seconds (on the FIFO,
    for a reader or a writer), the FIFO is opened read-write, which frees either, and the test
    fails naming ``what`` hung."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        t.join(timeout)
        pytest.fail(f"{what} hung on a FIFO")
