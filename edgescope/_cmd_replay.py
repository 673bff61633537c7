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
        if name == "tui":  # the devices screen's targets (docs/devices.md)
            for flag, meta, what in (
                ("--ssh", "[USER@]HOST[:PORT]", "a device over SSH"),
                ("--address", "HOST:PORT", "a collector on the network"),
            ):
                p.add_argument(flag, metavar=meta, action="append", default=[], help=what)
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
        from edgescope_tui.screens.devices import DevicesScreen, cli_targets
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] in ("edgescope_tui", "textual"):
            raise EdgescopeError(INSTALL_HINT, 3) from None
        raise
    sources = _open_sources(list(args.files), args.follow)
    try:
        targets = cli_targets(getattr(args, "ssh", []), getattr(args, "address", []))
    except ValueError as e:
        raise UsageError(str(e)) from None
    home = lambda: DevicesScreen.from_config(targets)  # noqa: E731
    EdgescopeApp(sources, compare=args.compare, home=home).run()
    return 0
