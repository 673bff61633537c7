"""The edgescope terminal UI and its clients.

The public surface: the App (``EdgescopeApp(sources)``, ``app.open_source(source)``), the
sources it reads (``FileSource``; the live source is in :mod:`edgescope_tui.sources.live`), and
the state the views draw (``RunState``, ``fold``, ``fold_all``, ``StateBuilder``). The App is
imported on first use, so headless clients (``edgescope ls``) that import this package do not
pay for Textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .sources import FileSource, SeekableSource, Source, Status
from .state import RunState, StateBuilder, fold, fold_all

if TYPE_CHECKING:
    from .app import EdgescopeApp

__version__ = "0.1.0"

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    if name == "EdgescopeApp":
        from .app import EdgescopeApp

        return EdgescopeApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
