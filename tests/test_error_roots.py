"""Each part has one documented error root and a public surface.

Every public exception class defined in a part derives from that part's root, so a caller can
catch the part's failures in one clause (``TraceError``, ``CollectorError``, ``TuiError``,
``EdgescopeError``); a private one (``_Drop``) is the part's own control flow and never leaves
it. Each root's module says the tree in its docstring, and every package has ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

ROOTS = {
    "edgescope_tracing": "edgescope_tracing.errors.TraceError",
    "edgescope_collector": "edgescope_collector.errors.CollectorError",
    "edgescope_tui": "edgescope_tui.errors.TuiError",
    "edgescope": "edgescope.errors.EdgescopeError",
}


def _modules(top: str) -> list[ModuleType]:
    pkg = importlib.import_module(top)
    out = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=lambda n: None):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf == "__main__" or info.name.startswith("edgescope.integrations."):
            continue  # a command's entry point; framework hooks import optional frameworks
        out.append(importlib.import_module(info.name))
    return out


def _root(top: str) -> type[BaseException]:
    module, _, name = ROOTS[top].rpartition(".")
    root: type[BaseException] = getattr(importlib.import_module(module), name)
    return root


@pytest.mark.parametrize("top", list(ROOTS))
def test_every_public_error_derives_from_the_parts_root(top: str) -> None:
    root = _root(top)
    found, stray = [], []
    for m in _modules(top):
        for name, value in vars(m).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == m.__name__
                and not name.startswith("_")
            ):
                found.append(value)
                if not issubclass(value, root):
                    stray.append(f"{m.__name__}.{name}")
    assert root in found
    assert len(found) > 1
    assert stray == [], f"errors outside {ROOTS[top]}: {stray}"


@pytest.mark.parametrize("top", list(ROOTS))
def test_the_root_is_documented_and_every_package_has_a_public_surface(top: str) -> None:
    root = _root(top)
    assert root.__doc__
    errors = importlib.import_module(root.__module__)
    assert errors.__doc__ and root.__name__ in errors.__doc__
    for m in _modules(top):
        if hasattr(m, "__path__"):  # a package
            assert isinstance(getattr(m, "__all__", None), list), f"{m.__name__} has no __all__"
