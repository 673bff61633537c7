"""A real Mosquitto for the fleet tests: its own config, port and data dir in a temp dir.

Also used by ``benchmarks/bench_fleet.py``. Users and ACLs follow ``docs/fleet.md``: each
device account may publish under its own ``edgescope/v1/<device>/`` only and read nothing; the
``fleet`` account (archiver, TUI, ``ls``) reads everything.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

ACL = """\
# The archiver / TUI account: reads the whole fleet, publishes nothing.
user fleet
topic read edgescope/v1/#

# Every other account is a device: it publishes under its own name only, reads nothing.
pattern write edgescope/v1/%u/#
"""


def available() -> str | None:
    """Why the broker cannot run here, or None."""
    if not os.path.exists(MOSQUITTO):
        return "mosquitto is not installed (apt-get install mosquitto)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """``mosquitto -c CONF`` on a free loopback port; ``restart`` keeps port and data."""

    def __init__(
        self,
        tmp: Path,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        max_queued: int = 100_000,
        port: int | None = None,
    ) -> None:
        self.dir = tmp / f"broker-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.port = port or free_port()
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mosquitto.log"
        lines = [
            # As root, Mosquitto drops to the user "mosquitto", who cannot read a temp dir.
            *([f"user {pwd.getpwuid(os.getuid()).pw_name}"] if os.getuid() == 0 else []),
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"max_queued_messages {max_queued}",
            "max_inflight_messages 64",
            "max_packet_size 8388608",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if tls is not None:
            cert, key = tls
            lines += [f"certfile {cert}", f"keyfile {key}"]
        if users is not None:
            pwfile = self.dir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run([PASSWD, "-b", str(pwfile), user, password], check=True)
            acl = self.dir / "acl"
            acl.write_text(ACL)
            lines += ["allow_anonymous false", f"password_file {pwfile}", f"acl_file {acl}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    if self.proc.stderr is not None:
                        self.proc.stderr.close()
                    raise AssertionError(f"mosquitto exited: {err} {self.logtext()}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not listen: {self.logtext()}") from None
                time.sleep(0.05)

    def logtext(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
