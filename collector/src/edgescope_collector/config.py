"""The collector's command line and the checked configuration it becomes.

The same arguments serve ``edgescope collector`` and ``python -m edgescope_collector``;
:func:`config_from_args` turns them into a :class:`Config` or raises :class:`ConfigError` with
one sentence (the commands exit 2 with it).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgescope_tracing.paths import ingest_socket
from edgescope_tracing.protocol import DEFAULT_PORT, parse_target

from .errors import ConfigError

if TYPE_CHECKING:
    from .mqtt import MqttSettings

__all__ = [
    "Config",
    "ConfigError",
    "add_arguments",
    "config_from_args",
    "default_data_dir",
    "is_loopback",
    "parse_size",
]

Profile = Literal["python", "perf", "bpftrace"]

DEFAULT_PROMETHEUS_PORT = 9464
"""``--prometheus HOST`` without a port (the OpenTelemetry Prometheus exporter's port)."""

DEFAULT_MAX_DISK = 512 * 1024 * 1024
MIN_MAX_DISK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path | None = None
    data_dir: Path = Path(".")
    ingest: Path = Path("ingest.sock")
    max_disk: int = DEFAULT_MAX_DISK
    segment_size: int | None = None
    segment_age: float = 600.0
    interval: float = 1.0
    rates: dict[str, float] = field(default_factory=dict)
    """Per-sampler intervals from ``--sample-every NAME=SECONDS``."""
    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    mdns: bool = False
    profile: Profile = "python"
    log_level: str = "info"
    prometheus: tuple[str, int] | None = None
    """Where ``/metrics`` is served (``--prometheus HOST:PORT``), or None."""
    mqtt: MqttSettings | None = None
    """Where to publish for the fleet (``--mqtt``): :mod:`.mqtt`."""

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def default_data_dir() -> Path:
    """``/var/lib/edgescope`` for root, else ``$XDG_STATE_HOME/edgescope/collector``."""
    if os.getuid() == 0:
        return Path("/var/lib/edgescope")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgescope" / "collector"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``64KiB``, ``1048576`` to bytes (K, M, G, T are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 2G, 1048576)")
    number, unit = float(m.group(1)), m.group(2).lower()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(number * scale)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        help=f"where clients connect (default 127.0.0.1:{DEFAULT_PORT}, loopback only; any "
        "other address needs --token-file)",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the shared token clients must prove (challenge-response)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where segments are kept (default /var/lib/edgescope for root, else "
        "$XDG_STATE_HOME/edgescope/collector)",
    )
    p.add_argument(
        "--ingest",
        metavar="PATH",
        help="Unix socket the SDK sends to (default $EDGESCOPE_SOCKET, else the SDK's default)",
    )
    p.add_argument(
        "--max-disk",
        metavar="SIZE",
        default="512M",
        help="bound on the segments on disk, oldest dropped first (default 512M)",
    )
    p.add_argument(
        "--segment-size",
        metavar="SIZE",
        help="start a new segment after this many bytes (default max-disk/8, 128K to 16M)",
    )
    p.add_argument(
        "--segment-age",
        metavar="SECONDS",
        default="600",
        help="start a new segment after this long (default 600)",
    )
    p.add_argument(
        "--interval",
        metavar="SECONDS",
        default="1",
        help="sampling interval (default 1)",
    )
    p.add_argument(
        "--sample-every",
        metavar="NAME=SECONDS",
        action="append",
        default=[],
        help="a sampler's own interval, e.g. nvml=0.2 or thermal=5 (repeatable; samplers: "
        "system, process, thermal, jetson_gpu, nvml)",
    )
    p.add_argument("--procfs", metavar="PATH", default="/proc", help="procfs root (default /proc)")
    p.add_argument("--sysfs", metavar="PATH", default="/sys", help="sysfs root (default /sys)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--mdns",
        dest="mdns",
        action="store_true",
        default=None,
        help="advertise _edgescope._tcp over mDNS (default: when listening beyond loopback)",
    )
    g.add_argument("--no-mdns", dest="mdns", action="store_false", help="never advertise")
    p.add_argument(
        "--profile",
        default="python",
        metavar="python|perf|bpftrace",
        help="stack sampler for the runs: python (the SDK's own, default), perf or bpftrace",
    )
    p.add_argument(
        "--prometheus",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; any "
        "other than loopback needs --token-file, sent as a bearer token; needs "
        "edgescope-collector[prometheus])",
    )
    p.add_argument(
        "--log-level",
        default="info",
        metavar="LEVEL",
        help="debug, info, warning or error (default info)",
    )
    from .mqtt_config import add_mqtt_arguments

    add_mqtt_arguments(p)


def _seconds(text: str, flag: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number of seconds, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{flag} must be between {low:g} and {high:g} seconds, not {text}")
    return value


def _address(text: str, flag: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` (or a bare port, on loopback) of a listening flag, checked."""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        host, port = parse_target(text, default_port)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None
    if host not in ("localhost", "0.0.0.0", "::"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                f"{flag}: {host!r} is not an IP address (use e.g. 0.0.0.0 or 192.168.1.20)"
            ) from None
    return host, port


def config_from_args(args: argparse.Namespace) -> Config:
    """The checked configuration, or ConfigError with one sentence."""
    host, port = _address(str(args.listen), "--listen", DEFAULT_PORT)
    token_file = Path(args.token_file) if args.token_file else None
    if not is_loopback(host) and token_file is None:
        raise ConfigError(
            f"refusing to listen on {host} without --token-file: beyond loopback, clients "
            "must authenticate (or use --listen 127.0.0.1 and reach it over SSH)"
        )
    prometheus = None
    if getattr(args, "prometheus", None):
        prometheus = _address(str(args.prometheus), "--prometheus", DEFAULT_PROMETHEUS_PORT)
        if not is_loopback(prometheus[0]) and token_file is None:
            raise ConfigError(
                f"refusing to serve --prometheus on {prometheus[0]} without --token-file: "
                "beyond loopback, scrapers must send the token (as a bearer token)"
            )
    try:
        max_disk = parse_size(args.max_disk)
    except ValueError as e:
        raise ConfigError(f"--max-disk: {e}") from None
    if max_disk < MIN_MAX_DISK:
        raise ConfigError(f"--max-disk must be at least 256K, not {args.max_disk}")
    segment_size = None
    if args.segment_size:
        try:
            segment_size = parse_size(args.segment_size)
        except ValueError as e:
            raise ConfigError(f"--segment-size: {e}") from None
        if not 64 * 1024 <= segment_size <= max_disk:
            raise ConfigError("--segment-size must be between 64K and --max-disk")
    profile = args.profile
    if profile not in ("python", "perf", "bpftrace"):
        raise ConfigError(f"--profile must be python, perf or bpftrace, not {profile!r}")
    level = str(args.log_level).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error, not {level!r}")
    procfs, sysfs = Path(args.procfs), Path(args.sysfs)
    for flag, root in (("--procfs", procfs), ("--sysfs", sysfs)):
        if not root.is_dir():
            raise ConfigError(f"{flag} {root} is not a directory")
    rates: dict[str, float] = {}
    for item in args.sample_every:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--sample-every takes NAME=SECONDS, not {item!r}")
        rates[name.strip()] = _seconds(value, f"--sample-every {name.strip()}", 0.05, 3600)
    mdns = args.mdns if args.mdns is not None else not is_loopback(host)
    from .mqtt_config import mqtt_settings

    return Config(
        host=host,
        port=port,
        token_file=token_file,
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
        ingest=Path(args.ingest) if args.ingest else ingest_socket(),
        max_disk=max_disk,
        segment_size=segment_size,
        segment_age=_seconds(args.segment_age, "--segment-age", 1, 7 * 86400),
        interval=_seconds(args.interval, "--interval", 0.05, 3600),
        rates=rates,
        procfs=procfs,
        sysfs=sysfs,
        mdns=mdns,
        profile=profile,
        log_level=level,
        prometheus=prometheus,
        mqtt=mqtt_settings(args),
    )
