"""The ``edgescope`` command.

Each subcommand lives in its own module, which imports its heavy dependencies only when it runs,
so that ``edgescope inspect`` on a device never imports the collector or the UI. A subcommand
module follows one protocol: ``add_parser(sub)`` adds its parser to the ``argparse``
subparsers ``sub`` and sets ``func`` (``Namespace -> int``, the exit code); :data:`NEEDS` says
which installable part each command needs, checked here before its arguments are, so a
device-only or laptop-only install refuses the other side's commands in one line. Errors are
translated to one line on stderr and an exit code here, once.

Exit codes: 0 done; 1 it failed (the message says why); 2 bad arguments or input; 3 a part the
command needs is not installed; 130 interrupted; ``record`` ends with its command's own code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edgescope_tracing import TraceError
from edgescope_tracing.text import escape

from edgescope.cli._extras import require
from edgescope.errors import EdgescopeError

__all__ = ["NEEDS", "main"]

COMMANDS: list[str] = [
    # one line per command module of this package, e.g. "record" (edgescope/cli/record.py)
    "inspect",
    "export",
    "demo",
    "collector",
    "tail",
    "ls",
    "replay",
    "record",
    "doctor",
    "archive",
    "rounds",
]

NEEDS: dict[str, str] = {
    "collector": "collector",
    "record": "collector",
    "doctor": "collector",
    "demo": "collector",
    "ls": "tui",
    "replay": "tui",
    "tui": "tui",
    "archive": "mqtt",
}
"""The part (a key of :data:`edgescope.cli._extras.PARTS`) each command needs; other commands need
only the trace format, which every install has."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgescope",
        description="See inside AI training runs on small Linux devices.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # Each module in COMMANDS has ``add_parser(sub)``, which adds its parser and sets ``func``;
    # the module imports its heavy dependencies inside ``func`` only.
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"edgescope.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        need = NEEDS.get(args.command)
        if need is not None:
            # before the arguments: without its part a command may not know its options
            require(need, f"edgescope {args.command}")
        if unknown:
            parser.parse_args(argv)  # says which arguments it does not know, and exits 2
        code: int = args.func(args)
    except EdgescopeError as e:
        # one line, escaped: a message may hold a file name or a run's name from a trace
        print(f"edgescope: {escape(str(e))}", file=sys.stderr)
        return e.exit_code
    except TraceError as e:
        print(f"edgescope: {escape(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
