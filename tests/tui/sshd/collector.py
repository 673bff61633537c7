"""A real collector process for tests: ``python -m edgescope_collector`` on a free loopback port.

Start, kill (as a crash would: SIGKILL) and restart it on the same port and data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import free_port

__all__ = ["Collector"]


class Collector:
    """One collector's port and data directory, and its current process (if running)."""

    def __init__(
        self,
        base: Path,
        *,
        port: int | None = None,
        interval: float = 0.05,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.base = base
        self.port = port or free_port()
        self.data_dir = base / "data"
        self.ingest = base / "ingest.sock"
        self.interval = interval
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "collector.log"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgescope_collector",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            "--ingest",
            str(self.ingest),
            "--interval",
            str(self.interval),
            "--no-mdns",
            *self.extra,
        ]

    def start(self, timeout: float = 20.0) -> Collector:
        self.base.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"collector did not listen: {self.log.read_text()[-800:]}")

    def kill(self) -> None:
        """SIGKILL: the connection drops mid-stream, as when a device loses power."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (clients are told ``end``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
