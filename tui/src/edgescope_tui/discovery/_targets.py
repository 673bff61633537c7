"""Where a device can be reached: parsing ``[user@]host[:port]``, ``HOST:PORT``, the devices file.

A target is plain data; connecting is the business of :mod:`edgescope_tui.ssh` and the live
source. Every parse error is a :class:`TargetError` whose message is one sentence a user can act
on.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgescope_tracing.files import read_regular
from edgescope_tracing.protocol import DEFAULT_PORT, parse_port, split_host_port
from edgescope_tracing.tokens import TokenError, read_token

from ..errors import TuiError

__all__ = [
    "DEFAULT_COLLECTOR_PORT",
    "DevicesFile",
    "SshTarget",
    "Target",
    "TargetError",
    "TcpTarget",
    "default_devices_file",
    "load_devices_file",
    "parse_ssh_target",
    "parse_tcp_target",
    "read_token_file",
    "ssh_config_hosts",
]

DEFAULT_COLLECTOR_PORT = DEFAULT_PORT
"""The collector's default stream port (loopback); an SSH target forwards to it on the device."""


class TargetError(TuiError, ValueError):
    """A target, devices file or SSH config entry that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SshTarget:
    """A device reached over SSH; the collector is its loopback port ``collector_port``.

    ``user`` and ``port`` are ``None`` where the SSH client configuration (``~/.ssh/config``) or
    OpenSSH's defaults decide, as ``ssh host`` would.
    """

    host: str
    user: str | None = None
    port: int | None = None
    collector_port: int = DEFAULT_COLLECTOR_PORT
    name: str | None = None
    token_file: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{host}{port}"

    @property
    def key(self) -> str:
        """Stable identity, whatever the name: two entries for one login are one device."""
        return f"ssh:{self.user or ''}@{self.host}:{self.port or ''}:{self.collector_port}"


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """A collector reached directly over TCP at ``host:port``, with a token if it wants one."""

    host: str
    port: int
    token: str | None = None
    name: str | None = None
    token_file: str | None = None
    """Where ``token`` was read from, when it came from a file (kept to edit and save it)."""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.address

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``), as the devices file and ``--address`` take it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def key(self) -> str:
        return f"tcp:{self.host}:{self.port}"


Target = SshTarget | TcpTarget

_HOST_RE = re.compile(r"^[A-Za-z0-9_.%:-]+$")


def _port(text: str, what: str) -> int:
    try:
        return parse_port(text)
    except ValueError as e:
        raise TargetError(f"{what}: {e}") from None


def _split_host_port(text: str, what: str) -> tuple[str, str | None]:
    try:
        return split_host_port(text)
    except ValueError as e:
        raise TargetError(f"{what}: {e}") from None


def _check_host(host: str, what: str) -> str:
    if not host:
        raise TargetError(f"{what}: no host name")
    if not _HOST_RE.match(host):
        raise TargetError(f"{what}: {host!r} is not a host name or address")
    return host


def parse_ssh_target(
    text: str, *, collector_port: int = DEFAULT_COLLECTOR_PORT, name: str | None = None
) -> SshTarget:
    """``[ssh://][user@]host[:port]`` as ``ssh`` takes it (SSH's port, not the collector's).

    ``ssh://[user@]host[:port]/COLLECTOR_PORT`` names the collector's loopback port on the
    device when it is not the default.
    """
    what = repr(text)
    rest = text.strip()
    if rest.startswith("ssh://"):
        rest, _, cport = rest[len("ssh://") :].partition("/")
        if cport:
            collector_port = _port(cport, f"{what} (collector port)")
    elif "://" in rest:
        raise TargetError(f"{what}: only ssh:// targets go through SSH")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user or any(c.isspace() or c in "/:" for c in user):
            raise TargetError(f"{what}: {user!r} is not a user name")
    host, port = _split_host_port(rest, what)
    return SshTarget(
        host=_check_host(host, what),
        user=user,
        port=_port(port, what) if port is not None else None,
        collector_port=collector_port,
        name=name,
    )


def parse_tcp_target(
    text: str,
    *,
    default_port: int | None = DEFAULT_COLLECTOR_PORT,
    token: str | None = None,
    name: str | None = None,
) -> TcpTarget:
    """``HOST:PORT`` (``[v6]:PORT``) of a collector listening on the network."""
    what = repr(text)
    host, port = _split_host_port(text.strip(), what)
    if port is None:
        if default_port is None:
            raise TargetError(f"{what}: give the collector's address as HOST:PORT")
        return TcpTarget(_check_host(host, what), default_port, token, name)
    return TcpTarget(_check_host(host, what), _port(port, what), token, name)


def default_devices_file() -> Path:
    """``$XDG_CONFIG_HOME/edgescope/devices.toml`` (``~/.config/edgescope/devices.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgescope" / "devices.toml"


_warned: set[str] = set()


def read_token_file(path: str | os.PathLike[str], what: str) -> str:
    """The token in a token file, read as every part of edgescope reads it
    (:func:`edgescope_tracing.tokens.read_token`); TargetError naming ``what`` if unusable."""
    try:
        token = read_token(path)
    except TokenError as e:
        raise TargetError(f"{what}: {e}") from None
    for warning in token.warnings:
        if warning not in _warned:  # probes reread the file: say it once
            _warned.add(warning)
            print(f"edgescope: warning: {warning}", file=sys.stderr)
    return token.value.decode("utf-8")


@dataclass(frozen=True, slots=True)
class DevicesFile:
    """What ``devices.toml`` says: its devices, and whether ``~/.ssh/config`` hosts count."""

    targets: tuple[Target, ...]
    ssh_config_hosts: bool = False


_DEVICE_KEYS = {"name", "ssh", "address", "collector_port", "token_file"}


def load_devices_file(path: str | os.PathLike[str] | None = None) -> DevicesFile:
    """Parse the devices file (see ``docs/devices.md``); a missing default file is empty.

    An explicit ``path`` that does not exist is an error; so is any entry that cannot be used,
    named by its position and name.
    """
    explicit = path is not None
    p = Path(path) if path is not None else default_devices_file()
    try:
        data = tomllib.loads(read_regular(p).decode("utf-8"))
    except FileNotFoundError:
        if explicit:
            raise TargetError(f"devices file {str(p)!r} does not exist") from None
        return DevicesFile(())
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"cannot read devices file {str(p)!r} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"devices file {str(p)!r} is not valid TOML ({e})") from None
    unknown = set(data) - {"device", "ssh_config_hosts"}
    if unknown:
        raise TargetError(
            f"devices file {str(p)!r}: unknown top-level key {sorted(unknown)[0]!r} "
            "(expected [[device]] tables and ssh_config_hosts)"
        )
    use_ssh_config = data.get("ssh_config_hosts", False)
    if not isinstance(use_ssh_config, bool):
        raise TargetError(f"devices file {str(p)!r}: ssh_config_hosts must be true or false")
    entries = data.get("device", [])
    if not isinstance(entries, list):
        raise TargetError(f"devices file {str(p)!r}: use [[device]] tables for devices")
    targets = [_device_entry(e, i, p) for i, e in enumerate(entries, 1)]
    return DevicesFile(tuple(targets), use_ssh_config)


def _device_entry(entry: Any, i: int, path: Path) -> Target:
    what = f"{path}, device {i}"
    if not isinstance(entry, dict):
        raise TargetError(f"{what}: not a table")
    name = entry.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise TargetError(f"{what}: name must be a non-empty string")
        what = f"{path}, device {name!r}"
    unknown = set(entry) - _DEVICE_KEYS
    if unknown:
        raise TargetError(f"{what}: unknown key {sorted(unknown)[0]!r}")
    ssh, address = entry.get("ssh"), entry.get("address")
    if (ssh is None) == (address is None):
        raise TargetError(f'{what}: give exactly one of ssh = "user@host" or address = HOST:PORT')
    token_file = entry.get("token_file")
    if token_file is not None and not isinstance(token_file, str):
        raise TargetError(f"{what}: token_file must be a path")
    if ssh is not None:
        if not isinstance(ssh, str):
            raise TargetError(f'{what}: ssh must be a string like "pi@raspberrypi.local"')
        cport = entry.get("collector_port", DEFAULT_COLLECTOR_PORT)
        try:
            cport = parse_port(cport)
        except ValueError as e:
            raise TargetError(f"{what}: collector_port: {e}") from None
        try:
            t = parse_ssh_target(ssh, collector_port=cport, name=name)
        except TargetError as e:
            raise TargetError(f"{what}: {e}") from None
        return SshTarget(t.host, t.user, t.port, t.collector_port, t.name, token_file)
    if "collector_port" in entry:
        raise TargetError(f"{what}: collector_port goes with ssh; put the port in address")
    if not isinstance(address, str):
        raise TargetError(f'{what}: address must be a string like "10.0.0.5:7313"')
    try:
        tcp = parse_tcp_target(address, default_port=None, name=name)
    except TargetError as e:
        raise TargetError(f"{what}: {e}") from None
    token = read_token_file(token_file, what) if token_file else None
    return TcpTarget(tcp.host, tcp.port, token, tcp.name, token_file)


def ssh_config_hosts(path: str | os.PathLike[str] | None = None) -> list[SshTarget]:
    """The concrete ``Host`` names of an OpenSSH client config (no patterns), in file order.

    Each becomes a target by its alias: connecting applies that ``Host`` block's ``HostName``,
    ``User``, ``Port`` and ``IdentityFile`` as ``ssh alias`` would. ``Include`` is not followed.
    """
    p = Path(path) if path is not None else Path.home() / ".ssh" / "config"
    try:
        text = read_regular(p).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise TargetError(f"cannot read SSH config {str(p)!r} ({e})") from None
    seen: dict[str, SshTarget] = {}
    for line in text.splitlines():
        words = line.strip().replace("=", " ", 1).split()
        if len(words) < 2 or words[0].lower() != "host":
            continue
        for alias in words[1:]:
            if alias.startswith("#"):
                break
            if any(c in alias for c in "*?!") or not _HOST_RE.match(alias):
                continue
            seen.setdefault(alias, SshTarget(host=alias))
    return list(seen.values())
