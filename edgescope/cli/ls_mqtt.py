"""``edgescope ls --mqtt URL``: the fleet as the broker tells it (presence, summary), headless.

Reads the retained ``birth``, ``death`` and ``summary`` of every device under ``edgescope/v1/``
(:func:`edgescope_tui.sources.mqtt.snapshot`) and prints the fleet screen's columns, or with
``--json`` one array of devices. Exit 0 whatever the devices' states; 1 when the broker cannot
be reached or refuses the login; 2 for bad arguments; 3 without aiomqtt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO, TYPE_CHECKING

from edgescope.errors import EdgescopeError, UsageError

if TYPE_CHECKING:
    from edgescope_tui.fleet import FleetDevice

__all__ = ["add_arguments", "print_fleet", "run_mqtt"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt", metavar="URL", help="list the fleet on this MQTT broker instead")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) for mqtts://")
    p.add_argument("--mqtt-password-file", metavar="FILE", help="file holding the broker password")
    p.add_argument("--sort", metavar="COLUMN", default="device", help="with --mqtt: sort by")
    p.add_argument("--filter", metavar="TEXT", default="", help="with --mqtt: only matching rows")


def run_mqtt(args: argparse.Namespace, timeout: float) -> int:
    import asyncio

    from edgescope.cli._extras import require

    require("mqtt", "edgescope ls --mqtt")
    from edgescope_tui.fleet import SORT_KEYS, device_json
    from edgescope_tui.sources.mqtt import MqttSettings, snapshot

    if args.sort not in SORT_KEYS:
        raise UsageError(f"--sort must be one of {', '.join(SORT_KEYS)}, not {args.sort!r}")
    try:
        settings = MqttSettings(
            args.mqtt, password_file=args.mqtt_password_file, ca_file=args.mqtt_ca
        )
    except ValueError as e:
        raise UsageError(f"--mqtt: {e}") from None
    try:
        model = asyncio.run(snapshot(settings, timeout=timeout))
    except ConnectionError as e:
        raise EdgescopeError(f"cannot read the fleet: {e}") from None
    rows = model.rows(sort=args.sort, filter=args.filter)
    now = time.time_ns() // 1000
    if args.json:
        json.dump([device_json(d, now) for d in rows], sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        print_fleet(rows, now, sys.stdout)
        if not rows:
            print(f"edgescope: no devices on {settings.url}", file=sys.stderr)
    if model.malformed:
        print(f"edgescope: {model.malformed} malformed message(s) ignored", file=sys.stderr)
    return 0


def print_fleet(rows: list[FleetDevice], now_us: int, out: IO[str]) -> None:
    from edgescope_tui.fleet import FLEET_COLUMNS, fleet_row

    if not rows:
        return
    head = [c.upper() for c in FLEET_COLUMNS]
    cells = [fleet_row(d, now_us) for d in rows]
    widths = [max(len(r[i]) for r in [head, *cells]) for i in range(len(head))]
    for r in [head, *cells]:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
