"""Profile a Python program that never calls ``edgescope.init()``: ``record --profile python``.

``edgescope record --profile python -- CMD`` puts this directory first on CMD's
``PYTHONPATH`` and names a status directory in ``EDGESCOPE_AUTOPROFILE``. Every Python that CMD
starts (and that honours ``PYTHONPATH``: not ``-E`` or ``-I``) imports this module at start-up,
before its own code, and starts a run with ``profile=True`` (named after its script, tagged
``autoprofile``), which streams to ``record`` like any other run. If the program calls
``edgescope.init()`` itself, that run ends there and the program's own run (profiled too, by
``EDGESCOPE_PROFILE=python``) takes over. Where the run cannot start (edgescope is not
importable by that Python, ...), the reason goes to ``STATUS_DIR/PID`` for ``record`` to
report, and the program runs as it would have. Then the ``sitecustomize`` this one shadows,
if there is one further along ``sys.path``, runs as well.

Without ``EDGESCOPE_AUTOPROFILE`` (or imported under another name) it does nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _name() -> str:
    arg0 = sys.argv[0] if sys.argv else ""
    if arg0 in ("", "-c"):
        return "python -c"
    if arg0 == "-m":
        return "python -m"
    return os.path.basename(arg0) or "python"


def _start(status: str) -> None:
    try:
        import edgescope

        edgescope.init(name=_name(), tags=["autoprofile"], profile=True)
    except Exception as e:  # never stop the program; say why it has no stacks instead
        why = f"{sys.executable} could not start the sampler ({type(e).__name__}: {e})"
        try:
            with open(os.path.join(status, str(os.getpid())), "w") as f:
                f.write(why.replace("\n", " ") + "\n")
        except OSError as err:
            print(f"edgescope: {why}; and could not say so to record: {err}", file=sys.stderr)


def _chain() -> None:
    """Run the ``sitecustomize`` that this one hides, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    _status = os.environ.get("EDGESCOPE_AUTOPROFILE")
    if _status:
        _start(_status)
    _chain()
