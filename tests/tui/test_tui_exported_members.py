"""The public surface of edgescope_tui is what we meant, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import edgescope_tui


def test_exported_members() -> None:
    assert set(edgescope_tui.__all__) == {
        "EdgescopeApp",
        "FileSource",
        "RunState",
        "SeekableSource",
        "Source",
        "StateBuilder",
        "Status",
        "fold",
        "fold_all",
        "__version__",
    }
    for name in edgescope_tui.__all__:
        assert getattr(edgescope_tui, name) is not None


def test_importing_the_package_does_not_import_textual() -> None:
    code = "import sys, edgescope_tui; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
