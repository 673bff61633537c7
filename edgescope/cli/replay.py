"""``edgescope replay FILE...`` and ``edgescope tui [FILE...]``: open traces in the terminal UI.

One file opens its run dashboard, with the replay bar to scrub, play and pause; several open
the compare screen over all of them. The UI is the ``tui`` extra: without it, one sentence
says how to install it. The UI reads keys from stdin and draws on stderr (as Textual does):
where either is not a terminal (``</dev/null``, a pipe, cron) it would hang or die, so the
command says it needs one and exits 2. A FILE that is a FIFO or a device is refused at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from edgescope.cli._extras import require
from edgescope.errors import UsageError


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
            p.add_argument(
                "--token-file",
                metavar="FILE",
                help="token for collectors that want one (a device's own token_file wins)",
            )
            p.add_argument("--mqtt", metavar="URL", help="the fleet on this MQTT broker")
            p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) for mqtts://")
            p.add_argument("--mqtt-password-file", metavar="FILE", help="the broker password")
        p.set_defaults(func=run)


def _open_sources(files: list[str], follow: bool) -> list[Any]:
    from edgescope_tracing.files import check_input
    from edgescope_tracing.text import escape
    from edgescope_tui.sources import FileSource

    sources = []
    for f in files:
        shown = escape(f)
        try:
            check_input(f)
            sources.append(FileSource(f, follow=follow))
        except FileNotFoundError:
            raise UsageError(f"{shown}: no such file") from None
        except PermissionError:
            raise UsageError(f"{shown}: permission denied") from None
        except IsADirectoryError:
            raise UsageError(f"{shown} is a directory, not an edgescope trace") from None
    return sources


def _no_terminal() -> str | None:
    """Which of the UI's streams is not a terminal, or None when both are."""
    for name, stream in (("input", sys.__stdin__), ("error output", sys.__stderr__)):
        try:
            if stream is None or not stream.isatty():
                return name
        except (ValueError, OSError):  # closed
            return name
    return None


def _fleet_home(args: argparse.Namespace) -> Any:
    """``tui --mqtt``: the fleet screen first (checked before the UI starts)."""
    require("mqtt", "edgescope tui --mqtt")
    from edgescope_tui.screens.fleet import FleetScreen
    from edgescope_tui.sources.mqtt import MqttSettings

    try:
        settings = MqttSettings(
            args.mqtt, password_file=args.mqtt_password_file, ca_file=args.mqtt_ca
        )
    except ValueError as e:
        raise UsageError(f"--mqtt: {e}") from None
    return lambda: FleetScreen(settings)


def run(args: argparse.Namespace) -> int:
    require("tui", f"edgescope {getattr(args, 'command', 'replay')}")
    from edgescope_tui.app import EdgescopeApp
    from edgescope_tui.discovery import read_token_file
    from edgescope_tui.screens.devices import DevicesScreen, cli_targets

    sources = _open_sources(list(args.files), args.follow)
    try:
        targets = cli_targets(getattr(args, "ssh", []), getattr(args, "address", []))
        token_file = getattr(args, "token_file", None)
        token = read_token_file(token_file, "--token-file").encode() if token_file else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    home = lambda: DevicesScreen.from_config(targets, token=token)  # noqa: E731
    if getattr(args, "mqtt", None):
        home = _fleet_home(args)  # a bad URL or file is said before the terminal is asked for
    missing = _no_terminal()
    if missing is not None:
        for src in sources:
            asyncio.run(src.close())
        hint = " (for a summary without one: edgescope inspect FILE)" if args.files else ""
        raise UsageError(f"{args.command} needs a terminal, and its {missing} is not one{hint}")
    EdgescopeApp(sources, compare=args.compare, home=home).run()
    return 0
