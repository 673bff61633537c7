"""Which local user opened a loopback TCP connection: the kernel's socket table, read by address.

A collector without a token serves loopback clients of its own user only (``docs/devices.md``).
TCP has no ``SO_PEERCRED``, but the client's end of a loopback connection is a socket of this
machine, and ``/proc/net/tcp`` (``tcp6``) lists each socket with its addresses and the uid that
created it. The client's socket is the one whose local address is our peer and whose remote
address is our end.

The table is the one of this process's network namespace (``/proc/self/net``), where a loopback
peer must be. Addresses are printed as the kernel holds them (32-bit words in the machine's
byte order), so they are decoded with native byte order.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

__all__ = ["Address", "address", "loopback_peer_uid", "parse_socket_table"]

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
"""An IP address (IPv4-mapped IPv6 taken as IPv4) and a port."""

_TABLES = ("tcp", "tcp6")


def _address(text: str) -> Address:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = struct.unpack(f">{len(raw) // 4}I", raw)
    packed = struct.pack(f"={len(words)}I", *words)
    return _normal(ipaddress.ip_address(packed)), int(port, 16)


def _normal(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address(host: str, port: int) -> Address:
    """``(host, port)`` as a socket name gives it, in the form the table is compared in."""
    return _normal(ipaddress.ip_address(host.split("%")[0])), port


def parse_socket_table(text: str) -> list[tuple[Address, Address, int]]:
    """``(local, remote, uid)`` of each socket in a ``/proc/net/tcp``-style table."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            out.append((_address(fields[1]), _address(fields[2]), int(fields[7])))
        except ValueError:
            continue
    return out


def loopback_peer_uid(
    ours: tuple[str, int], peer: tuple[str, int], net: Path = Path("/proc/self/net")
) -> int | None:
    """The uid of the local socket at ``peer`` connected to ``ours``; None if none is listed
    (a remote peer, a client already gone, or no such table on this system)."""
    want_local, want_remote = address(*peer), address(*ours)
    for name in _TABLES:
        try:
            text = (net / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for local, remote, uid in parse_socket_table(text):
            if local == want_local and remote == want_remote:
                return uid
    return None
