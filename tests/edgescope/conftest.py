"""Fixtures of the SDK's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sdkutil import sdk_env

import edgescope


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No collector in reach; runs go to ``tmp_path/runs``; any run left active is finished."""
    for k, v in sdk_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EDGESCOPE_SOCKET", raising=False)
    yield tmp_path
    edgescope.finish()
