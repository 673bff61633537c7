"""Run Python code in a fresh interpreter in which some top-level packages cannot be imported,
as on an install that lacks them (a device without the UI, a laptop without the collector)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_PRELUDE = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class NotHere:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotHere())
    """
)
EDGESCOPE_MAIN = "from edgescope.cli import main; sys.exit(main({argv!r}))"
COLLECTOR_MAIN = "from edgescope_collector.__main__ import main; sys.exit(main({argv!r}))"


def blocking(blocked: tuple[str, ...]) -> str:
    """Code that, run first in an interpreter, makes the ``blocked`` top-level packages
    unimportable (``ModuleNotFoundError``); ``BLOCKED`` names them to the code after it."""
    return _PRELUDE.format(blocked=blocked)


def run_without(
    blocked: tuple[str, ...],
    entry: str,
    argv: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``entry`` (one of the ``*_MAIN`` lines) with ``argv``, the ``blocked`` packages absent."""
    code = blocking(blocked) + entry.format(argv=argv) + "\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )
