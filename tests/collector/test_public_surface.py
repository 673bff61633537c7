"""The collector's public surface and its one error root (``edgescope_collector.errors``)."""

from __future__ import annotations

import subprocess
import sys

import edgescope_collector
from edgescope_collector import errors
from edgescope_collector.config import ConfigError as FromConfig
from edgescope_collector.stacks import StackBackendError as FromStacks
from edgescope_collector.store import StoreError as FromStore


def test_the_surface_is_what_we_meant() -> None:
    assert set(edgescope_collector.__all__) == {
        "Collector",
        "CollectorError",
        "Config",
        "ConfigError",
        "StackBackendError",
        "StoreError",
        "run",
    }
    for name in edgescope_collector.__all__:
        assert getattr(edgescope_collector, name) is not None


def test_one_error_root() -> None:
    for cls in (errors.ConfigError, errors.StoreError, errors.StackBackendError):
        assert issubclass(cls, errors.CollectorError)
    # each module raises the one class, not a copy of its own
    assert FromConfig is errors.ConfigError
    assert FromStore is errors.StoreError
    assert FromStacks is errors.StackBackendError
    assert errors.ConfigError("x").exit_code == 2
    assert errors.StoreError("x").exit_code == 1
    assert errors.CollectorError("x", 3).exit_code == 3


def test_importing_the_package_imports_no_submodule() -> None:
    probe = (
        "import sys, edgescope_collector; "
        "print(sorted(m for m in sys.modules if m.startswith('edgescope_collector.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "['edgescope_collector.errors']"
