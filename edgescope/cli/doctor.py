"""``edgescope doctor [--json]``: which samplers and stack backends work on this machine, and
for each that does not, why (no perf, not root, no BTF, no NVML, no thermal zones, ...).

Always exits 0 when it could look: a missing source is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgescope.cli._extras import require
from edgescope.errors import UsageError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="say which samplers and stack backends work here, and why others don't",
        description=(
            "Check every sampler and stack backend of the collector on this machine; for "
            "each that cannot run, say why."
        ),
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--procfs", metavar="PATH", help="read procfs here instead of /proc")
    p.add_argument("--sysfs", metavar="PATH", help="read sysfs here instead of /sys")
    p.add_argument(
        "--no-stacks", action="store_true", help="skip the stack backends (they run perf/bpftrace)"
    )
    p.set_defaults(func=_run)


def _root(text: str | None, default: str, flag: str) -> Path:
    path = Path(text) if text is not None else Path(default)
    if not path.is_dir():
        raise UsageError(f"{flag} {path}: no such directory")
    return path


def _run(args: argparse.Namespace) -> int:
    require("collector", "edgescope doctor")
    from edgescope_collector.doctor import diagnose, print_human
    from edgescope_collector.samplers import Roots

    roots = Roots(
        procfs=_root(args.procfs, "/proc", "--procfs"),
        sysfs=_root(args.sysfs, "/sys", "--sysfs"),
    )
    d = diagnose(roots, backends=not args.no_stacks)
    if args.json:
        json.dump(d.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_human(d, sys.stdout)
    return 0
