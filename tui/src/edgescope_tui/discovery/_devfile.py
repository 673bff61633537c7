"""Writing one device into the devices file, leaving the rest of the file as it was.

The devices screen's ``e`` saves an edited device here. The entry that described the device
before (the same address, name and token file) is rewritten in place, or a new ``[[device]]``
table is added at the end; every other line (the other entries, comments, ``ssh_config_hosts``)
stays as it was. The result is checked by parsing it before it replaces the file, and it
replaces it atomically (:func:`edgescope_tracing.files.open_output`: a temporary file beside
it, synced, renamed over it), so a failure leaves the old file whole. The reader, and with it
what an entry may say, is :mod:`._targets`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from edgescope_tracing import TraceError
from edgescope_tracing.files import open_output, read_regular

from ._targets import (
    DEFAULT_COLLECTOR_PORT,
    SshTarget,
    Target,
    TargetError,
    TcpTarget,
    parse_ssh_target,
    parse_tcp_target,
)

__all__ = ["entry_text", "save_device"]

_TABLE = re.compile(r"^\s*\[\[\s*device\s*\]\]\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")


def _string(text: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _ssh_text(t: SshTarget) -> str:
    host = f"[{t.host}]" if ":" in t.host else t.host
    user = f"{t.user}@" if t.user else ""
    port = f":{t.port}" if t.port is not None else ""
    return f"{user}{host}{port}"


def entry_text(target: Target) -> str:
    """The ``[[device]]`` table that describes ``target`` (with a final newline)."""
    lines = ["[[device]]"]
    if target.name:
        lines.append(f"name = {_string(target.name)}")
    if isinstance(target, TcpTarget):
        lines.append(f"address = {_string(target.address)}")
    else:
        lines.append(f"ssh = {_string(_ssh_text(target))}")
        if target.collector_port != DEFAULT_COLLECTOR_PORT:
            lines.append(f"collector_port = {target.collector_port}")
    if target.token_file:
        lines.append(f"token_file = {_string(target.token_file)}")
    return "\n".join(lines) + "\n"


def _describes(entry: Any, target: Target) -> bool:
    """Whether a parsed ``[[device]]`` table says ``target`` (its token as a file name)."""
    if not isinstance(entry, dict):
        return False
    if entry.get("name") != target.name or entry.get("token_file") != target.token_file:
        return False
    try:
        if isinstance(target, TcpTarget):
            address = entry.get("address")
            return isinstance(address, str) and (
                parse_tcp_target(address, default_port=None).key == target.key
            )
        ssh, cport = entry.get("ssh"), entry.get("collector_port", DEFAULT_COLLECTOR_PORT)
        return (
            isinstance(ssh, str)
            and isinstance(cport, int)
            and parse_ssh_target(ssh, collector_port=cport).key == target.key
        )
    except TargetError:
        return False


def _blocks(lines: list[str], path: Path) -> list[tuple[int, int]]:
    """``(first line, end line)`` of each ``[[device]]`` table, in file order."""
    starts = [i for i, line in enumerate(lines) if _ANY_TABLE.match(line)]
    for i in starts:
        if not _TABLE.match(lines[i]):
            raise TargetError(f"devices file {str(path)!r}: line {i + 1} is not a [[device]] table")
    return list(zip(starts, [*starts[1:], len(lines)][: len(starts)], strict=True))


def _body_end(lines: list[str], first: int, end: int) -> int:
    """Where a table's own lines end: the comments and blank lines after them stay."""
    while end > first + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip()[0] == "#"):
        end -= 1
    return end


def save_device(path: str | os.PathLike[str], new: Target, old: Target | None = None) -> int:
    """Write ``new`` into the devices file at ``path`` in place of the entry that said ``old``
    (or as a new entry, where none did); returns the entry's number (1 = the first).

    TargetError (one sentence) where the file cannot be read, parsed or written; the file is
    then as it was.
    """
    p = Path(path)
    try:
        text = read_regular(p).decode("utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"cannot read devices file {str(p)!r} ({e})") from None
    try:
        entries = tomllib.loads(text).get("device", [])
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"devices file {str(p)!r} is not valid TOML ({e})") from None
    lines = text.splitlines(keepends=True)
    blocks = _blocks(lines, p)
    if not isinstance(entries, list) or len(entries) != len(blocks):
        raise TargetError(
            f"devices file {str(p)!r}: write its devices as [[device]] tables to edit them here"
        )
    table = entry_text(new)
    at = next((i for i, e in enumerate(entries) if old is not None and _describes(e, old)), None)
    if at is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.append(table)
        number = len(entries) + 1
    else:
        first, end = blocks[at]
        lines[first : _body_end(lines, first, end)] = [table]
        number = at + 1
    out = "".join(lines)
    check = tomllib.loads(out).get("device", [])
    if len(check) != max(number, len(entries)) or not _describes(check[number - 1], new):
        raise TargetError(f"devices file {str(p)!r}: the edit did not read back; not saved")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open_output(p) as f:
            f.write(out)
    except OSError as e:
        raise TargetError(f"cannot write devices file {str(p)!r} ({e.strerror or e})") from None
    except TraceError as e:
        raise TargetError(str(e)) from None
    return number
