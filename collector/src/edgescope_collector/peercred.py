"""Which local user opened a loopback TCP connection: the kernel's socket table, read by address.

A collector without a token serves loopback clients of its own user only (``docs/devices.md``).
TCP has no ``SO_PEERCRED``, but the client's end of a loopback connection is a socket of this
machine, and ``/proc/net/tcp`` (``tcp6``) lists each socket with its addresses and the uid that
created it. The client's socket is the one whose local address is our peer and whose remote
address is our end.

The table is the one of this process's network namespace (``/proc/self/net``), where a loopback
peer must be. Addresses are printed as the kernel holds them (32-bit words in the machine's
byte order), so they are decoded with native byte order.

Reading the table costs in proportion to the sockets on the machine, and a flood of connections
asks for it once each: :class:`PeerUids` answers every connection waiting at one moment with one
read (off the event loop), so the work is bounded by time, not by how many connect. Asked once a
connection, a flood of 70 cycling connections queued thousands of reads behind which real
clients timed out, and the collector's stop waited for all of them (issue #11 item 7).
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from pathlib import Path

__all__ = ["Address", "PeerUids", "address", "loopback_peer_uid", "parse_socket_table"]

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


_NET = Path("/proc/self/net")


def _uids(wanted: set[tuple[Address, Address]], net: Path) -> dict[tuple[Address, Address], int]:
    """The uid of each ``(local, remote)`` socket of ``wanted`` that the tables list."""
    found: dict[tuple[Address, Address], int] = {}
    for name in _TABLES:
        try:
            text = (net / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for local, remote, uid in parse_socket_table(text):
            if (local, remote) in wanted:
                found.setdefault((local, remote), uid)
        if len(found) == len(wanted):
            break
    return found


def loopback_peer_uid(ours: tuple[str, int], peer: tuple[str, int], net: Path = _NET) -> int | None:
    """The uid of the local socket at ``peer`` connected to ``ours``; None if none is listed
    (a remote peer, a client already gone, or no such table on this system)."""
    key = (address(*peer), address(*ours))
    return _uids({key}, net).get(key)


class PeerUids:
    """:func:`loopback_peer_uid` for an asyncio server: the lookups waiting at one moment share
    one read of the tables, in a thread; at most one read is under way at a time."""

    def __init__(self, net: Path = _NET) -> None:
        self.net = net
        self.reads = 0
        """Reads of the tables so far (each answered every lookup waiting when it began)."""
        self._waiting: dict[tuple[Address, Address], list[asyncio.Future[int | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def uid(self, ours: tuple[str, int], peer: tuple[str, int]) -> int | None:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((address(*peer), address(*ours)), []).append(fut)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        return await fut

    async def _read(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            # A connection cut while it waited (a flood's) needs no answer: none is read for it.
            wanted = {k for k, futs in batch.items() if any(not f.done() for f in futs)}
            found: dict[tuple[Address, Address], int] = {}
            if wanted:
                self.reads += 1
                try:
                    found = await asyncio.to_thread(_uids, wanted, self.net)
                except asyncio.CancelledError:
                    for futs in (*batch.values(), *self._waiting.values()):
                        for f in futs:
                            f.cancel()
                    raise
            for key, futs in batch.items():
                for f in futs:
                    if not f.done():
                        f.set_result(found.get(key))
