"""The collector's ``--mqtt`` options and the :class:`~.mqtt.MqttSettings` they become.

Apart from :mod:`.config` so that the shared command line takes two lines for them; nothing
here imports aiomqtt (a collector without the ``[mqtt]`` extra parses its options and says,
when ``--mqtt`` is given, what to install).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
from pathlib import Path

from edgescope_tracing.extras import NOT_INSTALLED, not_installed
from edgescope_tracing.fleet import client_options, parse_broker_url, valid_device

from .errors import CollectorError, ConfigError
from .mqtt import MqttSettings, load_password

__all__ = ["add_mqtt_arguments", "mqtt_settings"]

MQTT_EXTRA = "pip install aiomqtt paho-mqtt (or './collector[mqtt]' from a clone of edgescope)"


def add_mqtt_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fleet over MQTT (docs/fleet.md)")
    g.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish to a broker: mqtt://[user@]host[:port], or mqtts:// for TLS",
    )
    g.add_argument(
        "--mqtt-ca", metavar="FILE", help="CA certificate(s) the broker's TLS is checked against"
    )
    g.add_argument(
        "--mqtt-password-file",
        metavar="FILE",
        help="file holding the broker password (never on the command line)",
    )
    g.add_argument(
        "--device",
        metavar="NAME",
        help="this device's name under edgescope/v1/ (default: the hostname)",
    )
    g.add_argument(
        "--mqtt-keepalive",
        metavar="SECONDS",
        default="10",
        help="MQTT keep-alive; the broker says the device is gone after 1.5 times it (default 10)",
    )


def default_device() -> str:
    """The hostname as a device name (its first label; characters a topic cannot hold as -)."""
    host = socket.gethostname().split(".")[0]
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:64].lstrip(".-")
    return name or "device"


def mqtt_settings(args: argparse.Namespace) -> MqttSettings | None:
    """The checked MQTT settings (None without ``--mqtt``), or ConfigError with one sentence."""
    if not getattr(args, "mqtt", None):
        for flag in ("mqtt_ca", "mqtt_password_file"):
            if getattr(args, flag, None):
                raise ConfigError(f"--{flag.replace('_', '-')} needs --mqtt URL")
        return None
    try:
        client = importlib.util.find_spec("aiomqtt")
    except (ImportError, ValueError):  # a broken install: as good as none
        client = None
    if client is None:
        raise ConfigError(
            not_installed("--mqtt", "the MQTT client (aiomqtt)", MQTT_EXTRA), NOT_INSTALLED
        )
    try:
        url = parse_broker_url(str(args.mqtt))
    except ValueError as e:
        raise ConfigError(f"--mqtt: {e}") from None
    device = str(args.device) if args.device else default_device()
    if not valid_device(device):
        raise ConfigError(
            f"--device {device!r}: a device name is letters, digits, '.', '_' and '-' (at most "
            "64, not starting with '.' or '-')"
        )
    ca = Path(args.mqtt_ca) if args.mqtt_ca else None
    if ca is not None and not url.tls:
        raise ConfigError("--mqtt-ca is for TLS: use an mqtts:// URL")
    if ca is not None and not ca.is_file():
        raise ConfigError(f"--mqtt-ca {ca} is not a file")
    try:
        client_options(url, ca_file=ca)  # a CA file that is not one is said now, not later
    except ValueError as e:
        raise ConfigError(f"--mqtt-ca: {e}") from None
    password = None
    if args.mqtt_password_file:
        if url.user is None:
            raise ConfigError("--mqtt-password-file needs a user in the URL (mqtt://user@host)")
        try:
            password = load_password(Path(args.mqtt_password_file))
        except CollectorError as e:
            raise ConfigError(str(e)) from None
    try:
        keepalive = int(args.mqtt_keepalive)
    except ValueError:
        raise ConfigError(
            f"--mqtt-keepalive must be whole seconds, not {args.mqtt_keepalive!r}"
        ) from None
    if not 2 <= keepalive <= 3600:
        raise ConfigError("--mqtt-keepalive must be between 2 and 3600 seconds")
    return MqttSettings(url=url, device=device, password=password, ca_file=ca, keepalive=keepalive)
