"""``edgescope rounds [--json] TRACE_OR_DIR...``: federated rounds across devices.

Reads the traces of a Flower run's clients and server (files, or directories of them: a
collector's data directory, an ``edgescope-runs`` directory) and prints, for each Flower run,
one row per round and one column per client (train and evaluate seconds), the straggler of each
round with its cause from its own device's signals, the round's critical path (how long the
server waited, for whom), and the clients that failed or timed out. ``--json``: one JSON object
on stdout, ``{"runs": [...]}``. The analysis is :mod:`edgescope_tracing.rounds`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgescope.errors import UsageError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rounds", help="federated rounds across clients: stragglers and their causes"
    )
    p.add_argument(
        "paths",
        metavar="TRACE_OR_DIR",
        nargs="+",
        help="a trace file, or a directory of them (a collector's data directory)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgescope_tracing.files import check_input
    from edgescope_tracing.rounds import analyze_paths, report_lines, trace_files
    from edgescope_tracing.text import escape

    for p in args.paths:
        shown = escape(p)
        if Path(p).is_dir():
            if not trace_files(p):
                raise UsageError(f"{shown}: a directory with no trace files (*.est)")
            continue
        try:
            check_input(p)
        except FileNotFoundError:
            raise UsageError(f"{shown}: no such file or directory") from None
        except PermissionError:
            raise UsageError(f"{shown}: permission denied") from None
    try:
        reports = analyze_paths(args.paths)
    except PermissionError as e:
        raise UsageError(f"{escape(str(e.filename or e))}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{escape(str(e.filename or ''))}: {e.strerror or e}") from None
    if not reports:
        raise UsageError(
            "no Flower rounds in these traces (record them with "
            "edgescope.integrations.flower: the client Mod and RecordedStrategy)"
        )
    if args.json:
        json.dump({"runs": [r.to_json() for r in reports]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for i, report in enumerate(reports):
        if i:
            print()
        for line in report_lines(report):
            print(escape(line))
    return 0
