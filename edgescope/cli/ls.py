"""``edgescope ls``: the devices discovery finds, each with its state or what is wrong, headless.

Devices come from mDNS (``_edgescope._tcp`` adverts on the local network), ``--ssh`` and
``--address`` targets, the devices file (``~/.config/edgescope/devices.toml``, see
``docs/devices.md``) and, with ``--ssh-config``, the ``Host`` entries of ``~/.ssh/config``.
Each is checked within ``--timeout`` seconds: online (with its runs, hottest temperature,
memory and any throttling), or one line saying what failed. A device that fails does not stop
the others; the command exits 0 whatever the devices' states, and 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from edgescope.errors import UsageError

if TYPE_CHECKING:
    from edgescope_tui.discovery import Device, Origin, Target

__all__ = ["add_parser", "device_json", "print_table"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ls",
        help="list the devices that discovery finds (mDNS, SSH, devices file)",
        description="List devices with their collector's state, or one line on what is wrong.",
    )
    p.add_argument("--json", action="store_true", help="one JSON array of devices on stdout")
    p.add_argument(
        "--timeout",
        metavar="S",
        default="3",
        help="seconds to browse mDNS and check the devices (default 3)",
    )
    p.add_argument(
        "--ssh",
        metavar="[USER@]HOST[:PORT]",
        action="append",
        default=[],
        help="a device reached over SSH (repeatable); its collector on its loopback port",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="a collector listening on the network (repeatable)",
    )
    p.add_argument(
        "--collector-port",
        metavar="PORT",
        help="the collector's port on --ssh and ~/.ssh/config devices (default 7313)",
    )
    p.add_argument("--token-file", metavar="FILE", help="token for collectors that need one")
    p.add_argument(
        "--devices",
        metavar="FILE",
        help="the devices file (default ~/.config/edgescope/devices.toml)",
    )
    p.add_argument(
        "--ssh-config",
        action="store_true",
        help="also check the Host entries of ~/.ssh/config",
    )
    p.add_argument("--no-mdns", action="store_true", help="do not browse the local network")
    p.add_argument(
        "--mdns-interface",
        metavar="ADDR",
        action="append",
        help="browse mDNS only on the interface with this address (repeatable)",
    )
    from edgescope.cli.ls_mqtt import add_arguments

    add_arguments(p)
    p.set_defaults(func=_run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--timeout must be a number of seconds, not {text!r}") from None
    if not 0 < value <= 3600:
        raise UsageError(f"--timeout must be more than 0 and at most 3600 seconds, not {text}")
    return value


def _targets(args: argparse.Namespace) -> list[tuple[Target, Origin]]:
    from edgescope_tracing.protocol import parse_port
    from edgescope_tui.discovery import (
        DEFAULT_COLLECTOR_PORT,
        TargetError,
        load_devices_file,
        parse_ssh_target,
        parse_tcp_target,
        ssh_config_hosts,
    )

    port = DEFAULT_COLLECTOR_PORT
    if args.collector_port is not None:
        try:
            port = parse_port(str(args.collector_port))
        except ValueError as e:
            raise UsageError(f"--collector-port: {e}") from None
    out: list[tuple[Target, Origin]] = []
    try:
        for text in args.ssh:
            out.append((parse_ssh_target(text, collector_port=port), "ssh"))
        for text in args.address:
            out.append((parse_tcp_target(text, default_port=None), "address"))
        devices = load_devices_file(args.devices)
        out.extend((t, "config") for t in devices.targets)
        if args.ssh_config or devices.ssh_config_hosts:
            out.extend((replace(t, collector_port=port), "ssh-config") for t in ssh_config_hosts())
    except TargetError as e:
        raise UsageError(str(e)) from None
    return out


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from edgescope_tui.discovery import TargetError, read_token_file

    timeout = _seconds(args.timeout)
    if args.mqtt:
        from edgescope.cli.ls_mqtt import run_mqtt

        return run_mqtt(args, timeout)
    targets = _targets(args)
    token = None
    if args.token_file:
        try:
            token = read_token_file(args.token_file, "--token-file").encode()
        except TargetError as e:
            raise UsageError(str(e)) from None
    mdns = not args.no_mdns
    if not mdns and not targets:
        raise UsageError(
            "nothing to list: mDNS is off and no device is configured (--ssh, --address, "
            "or the devices file)"
        )
    devices, mdns_error = asyncio.run(_discover(targets, mdns, args.mdns_interface, token, timeout))
    if mdns_error:
        print(f"edgescope: {mdns_error}; listing configured devices only", file=sys.stderr)
    if args.json:
        json.dump([device_json(d) for d in devices], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(devices, sys.stdout)
        if not devices:
            where = "on the local network" if mdns else ""
            print(f"edgescope: no devices found {where} within {timeout:g} s", file=sys.stderr)
    return 0


async def _discover(
    targets: list[tuple[Target, Origin]],
    mdns: bool,
    interfaces: list[str] | None,
    token: bytes | None,
    timeout: float,
) -> tuple[list[Device], str]:
    import asyncio

    from edgescope_tui.discovery.probe import ProbeSettings
    from edgescope_tui.discovery.watch import Discovery

    probe = ProbeSettings(token=token, timeout=min(5.0, timeout), listen=min(1.5, timeout / 2))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with Discovery(
        targets, mdns=mdns, mdns_interfaces=interfaces, probe=probe, recheck=0
    ) as discovery:
        if mdns and not discovery.mdns_error:
            # Adverts may arrive at any moment: browse for the whole time, then let the checks
            # of late arrivals finish within what is left.
            await asyncio.sleep(max(0.0, min(timeout, 1.5 + timeout / 2)))
        await discovery.settle(max(0.0, deadline - loop.time()))
        devices = list(discovery.devices.values())
    return [_timed_out(d, timeout) for d in devices], discovery.mdns_error


def _timed_out(d: Device, timeout: float) -> Device:
    if d.state in ("checking", "found") and d.target is not None:
        return d.with_state("unreachable", f"{d.label}: no answer within {timeout:g} s")
    return d


def _via(d: Device) -> str:
    from edgescope_tui.discovery import DEVICE_COLUMNS, device_row

    return device_row(d)[DEVICE_COLUMNS.index("via")]


def _address(d: Device) -> str:
    from edgescope_tui.discovery import SshTarget

    t = d.target
    if t is None:
        return ""
    if isinstance(t, SshTarget):
        user = f"{t.user}@" if t.user else ""
        port = f":{t.port}" if t.port else ""
        return f"ssh://{user}{t.host}{port} -> 127.0.0.1:{t.collector_port}"
    return f"{t.host}:{t.port}"


def device_json(d: Device) -> dict[str, Any]:
    """One device as a JSON object (``null`` for what is not known)."""
    return {
        "name": d.label,
        "via": _via(d),
        "address": _address(d) or None,
        "state": d.state,
        "error": d.error or None,
        "hint": d.hint or None,
        "can_start_collector": d.can_start_collector,
        "hostname": d.hostname or None,
        "board": d.board or None,
        "auth_required": d.auth_required,
        "runs": list(d.runs),
        "temp_c": d.temp_c,
        "mem_used": d.mem_used,
        "mem_total": d.mem_total,
        "throttled": list(d.throttled),
        "head_seq": d.head_seq,
        "duplicate_of": d.duplicate_of or None,
    }


def _cells(d: Device) -> list[str]:
    from edgescope_tui.discovery import device_row

    cells = list(device_row(d))  # escaped there
    if cells[6] == "ok":
        cells[6] = "-"  # on a terminal without colour, nothing to flag reads better as a dash
    return cells


def print_table(devices: list[Device], out: IO[str]) -> None:
    """Aligned columns; a device's error (and what to do) on the lines under it, every one
    escaped (a name or an error can come from anyone on the network)."""
    if not devices:
        return
    from edgescope_tracing.text import escape
    from edgescope_tui.discovery import DEVICE_COLUMNS

    head = [c.upper() for c in DEVICE_COLUMNS]
    rows = [_cells(d) for d in devices]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out.write(line(head) + "\n")
    for d, r in zip(devices, rows, strict=True):
        out.write(line(r) + "\n")
        if d.error:
            out.write(f"    {escape(d.error)}\n")
        if d.hint and d.hint not in d.error:
            out.write(f"    run: {escape(d.hint)}\n")
        if d.duplicate_of:
            out.write(
                f"    the same address as {escape(d.duplicate_of)}: both are listed and checked\n"
            )
