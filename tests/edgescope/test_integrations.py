"""The framework hooks as a package: ``import edgescope`` loads none of them, and a hook whose
framework is absent says which extra to install. Needs no framework (each is blocked here);
the hooks' behaviour is tested with the real libraries in ``test_integration_*.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
from withoutparts import blocking

HOOKS = {
    "lightning": ("lightning", "PyTorch Lightning"),
    "transformers": ("transformers", "Hugging Face Transformers"),
    "keras": ("keras", "Keras 3"),
    "flower": ("flwr", "Flower"),
}
"""Each hook module under ``edgescope.integrations`` (named as the extra that installs its
library): the library's top-level module, and what the message calls it."""


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_import_edgescope_loads_no_hook_and_no_framework() -> None:
    code = (
        "import sys, json, edgescope\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'lightning', 'transformers', 'keras', 'accelerate', 'flwr') "
        "or m.startswith('edgescope.integrations'))))"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("extra", sorted(HOOKS))
def test_a_hook_without_its_framework_names_the_extra(extra: str) -> None:
    code = blocking((HOOKS[extra][0],)) + textwrap.dedent(
        f"""
        import edgescope.integrations
        try:
            import edgescope.integrations.{extra}
        except ImportError as e:
            print(e)
        else:
            print("imported")
        """
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"edgescope.integrations.{extra} needs {HOOKS[extra][1]}, which is not installed here: "
        f"pip install 'edgescope[{extra}]'"
    )


@pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is not None,
    reason="needs Keras installed without TensorFlow (its default backend)",
)
def test_keras_installed_without_its_backend_says_what_is_missing() -> None:
    proc = _python(
        "try:\n    import edgescope.integrations.keras\nexcept ImportError as e:\n    print(e)",
        KERAS_BACKEND="tensorflow",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("edgescope.integrations.keras needs Keras 3, which is installed but")
    assert "tensorflow" in out and "KERAS_BACKEND" in out
