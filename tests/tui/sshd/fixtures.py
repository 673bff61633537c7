"""pytest fixtures around :func:`start_sshd`; import them into a test module to use them.

The functions are named ``*_fixture`` so that importing them does not shadow the fixture names
(``sshd``, ``sshd_with_edgescope``) that tests take as arguments.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import Sshd, SshdUnavailable, start_sshd

__all__ = ["ssh_home_fixture", "sshd_fixture", "sshd_with_edgescope_fixture"]


def _start(base: Path, path_env: str | None = None) -> Iterator[Sshd]:
    try:
        server = start_sshd(base, path_env=path_env)
    except SshdUnavailable as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="sshd")
def sshd_fixture(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd whose sessions have a bare PATH: edgescope is not installed there."""
    yield from _start(tmp_path / "sshd")


@pytest.fixture(name="sshd_with_edgescope")
def sshd_with_edgescope_fixture(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd whose sessions find this virtualenv's ``edgescope`` on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    yield from _start(tmp_path / "sshd", f"{venv_bin}:/usr/bin:/bin")


@pytest.fixture(name="ssh_home")
def ssh_home_fixture(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose ``~/.ssh`` is what OpenSSH would use to reach the test sshd.

    ``id_ed25519`` is the accepted key, ``known_hosts`` trusts the server, and ``config`` names
    it ``testbox`` (``HostName 127.0.0.1``, its ``Port``, ``User root``). No agent.
    """
    home = tmp_path / "home"
    dot = home / ".ssh"
    dot.mkdir(parents=True)
    shutil.copy(sshd.user_key, dot / "id_ed25519")
    shutil.copy(sshd.user_key.with_suffix(".pub"), dot / "id_ed25519.pub")
    (dot / "id_ed25519").chmod(0o600)
    shutil.copy(sshd.known_hosts, dot / "known_hosts")
    (dot / "config").write_text(
        f"Host testbox\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User root\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home
