"""pytest fixtures around :func:`start_sshd`; import them into a test module to use them.

The functions are named ``*_fixture`` so that importing them does not shadow the fixture names
(``sshd``, ``sshd_with_edgescope``) that tests take as arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import Sshd, SshdUnavailable, start_sshd

__all__ = ["sshd_fixture", "sshd_with_edgescope_fixture"]


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
