"""A real OpenSSH server for tests: Debian's ``sshd`` on 127.0.0.1 with throwaway keys.

:func:`start_sshd` writes a host key, a user key and an ``sshd_config`` of its own under a
directory, starts ``sshd -D -e`` as root on a free loopback port, and waits until it accepts
connections. Nothing is read from or written to ``/etc/ssh`` or ``~/.ssh``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SSHD", "Sshd", "SshdUnavailable", "free_port", "keygen", "start_sshd"]

SSHD = "/usr/sbin/sshd"


class SshdUnavailable(Exception):
    """This machine cannot run the test server (no sshd, not root); the reason says which."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A fresh key pair at ``path`` and ``path.pub``, no passphrase."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "edgescope-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


@dataclass
class Sshd:
    """A running test sshd and the files a client needs to reach it."""

    port: int
    host_key: Path
    """The server's private host key; ``host_key.with_suffix('.pub')`` is the public half."""
    user_key: Path
    """A client key that the server accepts for ``root``."""
    known_hosts: Path
    """A known_hosts file that trusts this server's host key on 127.0.0.1 at ``port``."""
    proc: subprocess.Popen[bytes]
    log: Path
    env_path: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def host_pub(self) -> str:
        return self.host_key.with_suffix(".pub").read_text().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_sshd(base: Path, *, path_env: str | None = None) -> Sshd:
    """Start sshd under ``base`` (a fresh directory); raise :class:`SshdUnavailable` if it can't.

    ``path_env`` becomes ``PATH`` in the sessions the server starts (``SetEnv``), so a test
    decides whether ``edgescope`` is installed as far as the remote shell can tell.
    """
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        raise SshdUnavailable("OpenSSH server not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        raise SshdUnavailable("the test sshd must run as root")
    base.mkdir(parents=True, exist_ok=True)
    # sshd insists on its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = keygen(base / "host_ed25519")
    user_key = keygen(base / "id_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    env_path = path_env or "/usr/bin:/bin"
    log = base / "sshd.log"
    for _ in range(5):
        port = free_port()
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "PidFile none",
                    "LogLevel DEBUG1",
                    f"SetEnv PATH={env_path}",
                    "",
                ]
            )
        )
        logf = log.open("ab")
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        logf.close()
        if _wait_listening(port, proc):
            known = base / "known_hosts"
            pub = host_key.with_suffix(".pub").read_text().split()
            known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
            return Sshd(port, host_key, user_key, known, proc, log, env_path)
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    raise SshdUnavailable(f"sshd did not start: {log.read_text(errors='replace')[-500:]}")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
