"""``edgescope tail TARGET``: print a collector's stream as it comes, the reference client.

``--since SEQ`` starts at sequence number SEQ (retained history first, then live); without it,
only records newer than the connection. ``--count N`` exits 0 after N records. ``--json`` writes
one object per record per line (``seq``, ``kind`` and the record's fields; an event's own kind,
e.g. ``anomaly``, is ``event_kind``), flushed per line so it pipes into ``jq`` live. Non-finite
numbers are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; bytes are hex; the JSON is
ASCII. A gap (records the collector no longer holds) is said on stderr. What the stream says
(names, hosts, keys, messages) is escaped before it reaches the terminal
(:func:`edgescope_tracing.text.escape`): a collector cannot send control sequences to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import IO, Any

from edgescope_tracing.text import escape

from edgescope.cli._extras import require
from edgescope.errors import EdgescopeError, UsageError

__all__ = ["add_parser", "record_json", "record_line"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tail",
        help="print a collector's records as they come",
        description="Print a collector's stream: history from --since, then live.",
    )
    p.add_argument(
        "target", metavar="TARGET", help="the collector, HOST[:PORT] or ssh://[USER@]HOST[:PORT]"
    )
    p.add_argument("--since", metavar="SEQ", help="start at this sequence number")
    p.add_argument("--count", metavar="N", help="exit 0 after N records")
    p.add_argument("--json", action="store_true", help="one JSON object per record per line")
    p.add_argument("--token-file", metavar="FILE", help="the collector's token")
    p.set_defaults(func=_run)


MAX_SEQ = (1 << 64) - 1
"""The highest sequence number the wire carries (an unsigned 64-bit integer)."""


def _int_flag(text: str | None, flag: str, low: int, high: int = MAX_SEQ) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag} must be a whole number, not {escape(repr(text))}") from None
    if value < low:
        raise UsageError(f"{flag} must be at least {low}, not {value}")
    if value > high:
        raise UsageError(f"{flag} must be at most {high} (2**64 - 1), not {value}")
    return value


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def record_json(rec: Any) -> dict[str, Any]:
    """``{"seq": ..., "kind": ..., <fields>}`` for one record (JSON-safe)."""
    from edgescope_tracing.summary import kind_name

    out: dict[str, Any] = {"seq": rec.seq, "kind": kind_name(rec)}
    for f in dataclasses.fields(rec):
        if f.name in ("seq", "kind"):
            continue
        out[f.name] = _jsonable(getattr(rec, f.name))
    if hasattr(rec, "kind") and isinstance(rec.kind, str):
        out["event_kind"] = rec.kind
    return out


def record_line(rec: Any) -> str:
    """One human line: sequence number, time, kind and the gist."""
    from edgescope_tracing import (
        Event,
        GpuSample,
        Keyframe,
        Metrics,
        PowerSample,
        ProcessSample,
        RunEnd,
        RunStart,
        StackSamples,
        SystemSample,
        ThermalSample,
    )
    from edgescope_tracing.energy import source_power_w
    from edgescope_tracing.summary import exit_words, iso_time, kind_name

    t = (iso_time(rec.t_us) or "")[11:23]
    kind = kind_name(rec)
    if isinstance(rec, Metrics):
        last = rec.values[-1] if rec.values else None
        step = rec.steps[-1] if rec.steps else None
        gist = (
            f"run {rec.run} {rec.key} n={len(rec.values)} last={last:.6g} step={step}"
            if (last is not None)
            else f"run {rec.run} {rec.key} (empty)"
        )
    elif isinstance(rec, RunStart):
        gist = f"run {rec.run} {rec.name!r} pid {rec.pid} on {rec.host}"
    elif isinstance(rec, RunEnd):
        why = f": {rec.cause}" if rec.cause else ""
        gist = f"run {rec.run} ended: {exit_words(rec.exit_code)}{why}, dropped {rec.dropped}"
    elif isinstance(rec, Event):
        gist = f"[{rec.kind}] {rec.message}"
    elif isinstance(rec, Keyframe):
        gist = f"#{rec.number} ({len(rec.runs)} active run(s))"
    elif isinstance(rec, StackSamples):
        n = sum(c for _, c in rec.samples)
        gist = f"run {rec.run} {rec.backend} {n} samples, {len(rec.samples)} stacks"
    elif isinstance(rec, ProcessSample):
        rss = f"{rec.rss / 2**20:.1f} MiB" if rec.rss is not None else "?"
        gist = f"run {rec.run} pid {rec.pid} cpu {rec.cpu_percent}% rss {rss}"
    elif isinstance(rec, SystemSample):
        mem = f"{rec.mem_used / 2**30:.2f} GiB" if rec.mem_used is not None else "?"
        gist = f"cpu {_num(rec.cpu_percent)}% mem {mem} load {_num(rec.load1)}"
    elif isinstance(rec, ThermalSample):
        hottest = max(rec.zones, key=lambda z: z.temp_c, default=None)
        flags = " ".join(f"{k}={v:#x}" for k, v in rec.throttle.items() if v)
        zone = f"{hottest.name} {hottest.temp_c:.1f}°C" if hottest else "no zones"
        gist = f"{zone} {flags}".rstrip()
    elif isinstance(rec, GpuSample):
        gist = (
            f"gpu{rec.index} {rec.name} {_num(rec.temp_c)}°C util {_num(rec.util_gpu)}% "
            f"power {_num(None if rec.power_mw is None else rec.power_mw / 1000)} W"
        )
    elif isinstance(rec, PowerSample):
        watts = source_power_w(rec)
        gist = " ".join(f"{k} {v:.4g} W" for k, v in sorted(watts.items()))
        gist = gist or f"{len(rec.readings)} counter(s)"
    else:
        gist = ""
    return escape(f"{rec.seq:>9} {t} {kind:<9} {gist}".rstrip())


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:.4g}"


def _run(args: argparse.Namespace) -> int:
    if args.target.startswith("ssh://"):
        return _run_over_ssh(args)
    from edgescope_tracing.protocol import Client, Gap, ProtocolError, parse_target

    try:
        host, port = parse_target(args.target)
    except ValueError as e:
        raise UsageError(escape(str(e))) from None
    since = _int_flag(args.since, "--since", 0)
    count = _int_flag(args.count, "--count", 1)
    token = None
    if args.token_file:
        from edgescope_tracing.tokens import TokenError, read_token

        try:
            read = read_token(args.token_file)
        except TokenError as e:
            raise UsageError(str(e)) from None
        for warning in read.warnings:
            print(f"edgescope: warning: {warning}", file=sys.stderr)
        token = read.value
    out: IO[str] = sys.stdout
    try:
        client = Client.connect(host, port, since=since, token=token)
    except ProtocolError as e:
        raise EdgescopeError(escape(str(e)), 1) from None
    n = 0
    floor = client.welcome.next_seq if since is None else 0
    try:
        with client:
            for item in client:
                if isinstance(item, Gap):
                    print(
                        f"edgescope: gap: records {item.first} to {item.last} will not come "
                        f"({escape(item.reason)})",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                if item.seq < floor:
                    continue
                if args.json:
                    out.write(json.dumps(record_json(item), separators=(",", ":")) + "\n")
                else:
                    out.write(record_line(item) + "\n")
                out.flush()
                n += 1
                if count is not None and n >= count:
                    return 0
            end = escape(client.end_message or "the collector ended the stream")
    except ProtocolError as e:
        raise EdgescopeError(escape(str(e)), 1) from None
    if count is not None:
        raise EdgescopeError(f"{end} after {n} of {count} records", 1)
    print(f"edgescope: {end}", file=sys.stderr)
    return 0


def _run_over_ssh(args: argparse.Namespace) -> int:
    """``ssh://[user@]host[:port]``: the same, through SSH to the collector's loopback port."""
    require("tui", "edgescope tail ssh://")
    from edgescope_tui.ssh import SshError, open_tunnel

    try:
        tunnel = open_tunnel(args.target)
    except SshError as e:
        raise EdgescopeError(escape(str(e)), 1) from None
    with tunnel:
        return _run(argparse.Namespace(**{**vars(args), "target": f"{tunnel.host}:{tunnel.port}"}))
