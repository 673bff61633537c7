"""``edgescope replay FILE...`` and ``edgescope tui [FILE...]``: open traces in the terminal UI.

One file opens its run dashboard, with the replay bar to scrub, play and pause; several open
the compare screen over all of them. The UI is the ``tui`` extra: without it, one sentence
says how to install it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .errors import EdgescopeError, UsageError

INSTALL_HINT = "the terminal UI is not installed; install it with: pip install 'edgescope[tui]'"


def add_parser(sub: Any) -> None:
    for name, help_text, nargs in (
        ("replay", "replay trace files in the terminal UI", "+"),
        ("tui", "open the terminal UI (on trace files, when given)", "*"),
    ):
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("files", metavar="FILE", nargs=nargs, help="an edgescope trace")
        p.add_argument(
            "--compare",
            action="store_true",
            help="start on the compare screen (the default for several files)",
        )
        p.add_argument(
            "--follow",
            action="store_true",
            help="keep reading files that are still being written",
        )
        p.set_defaults(func=run)


def _open_sources(files: list[str], follow: bool) -> list[Any]:
    from edgescope_tui.sources import FileSource

    sources = []
    for f in files:
        try:
            sources.append(FileSource(f, follow=follow))
        except FileNotFoundError:
            raise UsageError(f"{f}: no such file") from None
        except PermissionError:
            raise UsageError(f"{f}: permission denied") from None
        except IsADirectoryError:
            raise UsageError(f"{f} is a directory, not an edgescope trace") from None
    return sources


def run(args: argparse.Namespace) -> int:
    try:
        from edgescope_tui.app import EdgescopeApp
        from edgescope_tui.screens.devices import DevicesScreen
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] in ("edgescope_tui", "textual"):
            raise EdgescopeError(INSTALL_HINT, 3) from None
        raise
    sources = _open_sources(list(args.files), args.follow)
    EdgescopeApp(sources, compare=args.compare, home=DevicesScreen.from_config).run()
    return 0
