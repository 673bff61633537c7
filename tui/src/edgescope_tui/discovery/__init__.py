"""Finding devices: mDNS adverts, SSH targets, manual addresses and the devices file.

Each way of finding a device yields :class:`Device` rows. :mod:`edgescope_tui.discovery.probe`
checks one (connects, reads the head of its collector's stream) and says in one line what is
wrong when it can't; :mod:`edgescope_tui.discovery.watch` runs them all (``edgescope ls`` and
the devices screen). Those two import the SSH and protocol clients, so they are imported by
name, not from here.
"""

from ._devfile import entry_text, save_device
from ._device import DEVICE_COLUMNS, Device, DeviceState, Origin, device_row
from ._mdns import PROTOCOL_VERSION, REQUIRED_TXT, SERVICE_TYPE, MdnsBrowser, device_from_info
from ._targets import (
    DEFAULT_COLLECTOR_PORT,
    DevicesFile,
    SshTarget,
    Target,
    TargetError,
    TcpTarget,
    default_devices_file,
    load_devices_file,
    parse_ssh_target,
    parse_tcp_target,
    read_token_file,
    ssh_config_hosts,
)

__all__ = [
    "DEVICE_COLUMNS",
    "device_row",
    "DEFAULT_COLLECTOR_PORT",
    "PROTOCOL_VERSION",
    "REQUIRED_TXT",
    "SERVICE_TYPE",
    "Device",
    "DeviceState",
    "DevicesFile",
    "MdnsBrowser",
    "Origin",
    "SshTarget",
    "Target",
    "TargetError",
    "TcpTarget",
    "default_devices_file",
    "device_from_info",
    "entry_text",
    "load_devices_file",
    "parse_ssh_target",
    "parse_tcp_target",
    "read_token_file",
    "save_device",
    "ssh_config_hosts",
]
