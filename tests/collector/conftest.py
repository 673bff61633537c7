"""Fixtures for the collector's sampler tests: recorded /proc and /sys trees to play with.

``board("rpi4")`` copies ``tests/collector/trees/rpi4`` to a temporary directory and returns a
:class:`Board` whose ``roots`` point there; tests rewrite files between samples to play out
what a device does (a temperature rising to a trip point, a throttle counter going up).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from edgescope_collector.samplers import Roots
from realdata import H200_RUN

TREES = Path(__file__).parent / "trees"


class Board:
    """A writable copy of a recorded tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.roots = Roots(procfs=path / "proc", sysfs=path / "sys")

    def write(self, rel: str, value: object) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{value}\n")

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def remove(self, rel: str) -> None:
        p = self.path / rel
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


@pytest.fixture
def board(tmp_path: Path) -> Callable[[str], Board]:
    def make(name: str) -> Board:
        dest = tmp_path / name
        shutil.copytree(TREES / name, dest, symlinks=True)
        return Board(dest)

    return make


@pytest.fixture(scope="session")
def h200_fixture() -> Path:
    return H200_RUN
