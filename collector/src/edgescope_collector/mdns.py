"""Advertising the collector as ``_edgescope._tcp.local.`` over mDNS (python-zeroconf, async).

TXT record (what ``edgescope_tui.discovery`` and ``avahi-browse -r`` show):

- ``proto``: the stream protocol version,
- ``host``: the device's hostname,
- ``board``: the board model from the device tree (``/proc/device-tree/model``) or DMI
  (``/sys/class/dmi/id/product_name``), empty when neither is there,
- ``auth``: ``1`` when clients need a token, else ``0``.

The advert is sent on the interfaces the stream server listens on (all of them for a wildcard
address) and withdrawn (goodbye packets) on :meth:`Advertiser.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable
from pathlib import Path

from edgescope_tracing.protocol import MDNS_SERVICE_TYPE, PROTOCOL_VERSION

__all__ = ["SERVICE_TYPE", "Advertiser", "board_model", "txt_record"]

log = logging.getLogger("edgescope.collector.mdns")

SERVICE_TYPE = MDNS_SERVICE_TYPE


def board_model(procfs: Path = Path("/proc"), sysfs: Path = Path("/sys")) -> str:
    """The board's model name from the device tree or DMI, or ``""``."""
    for path in (
        procfs / "device-tree" / "model",
        sysfs / "firmware" / "devicetree" / "base" / "model",
        sysfs / "class" / "dmi" / "id" / "product_name",
    ):
        try:
            text = path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if text:
            return text[:200]
    return ""


def txt_record(hostname: str, board: str, auth: bool) -> dict[str, str]:
    return {
        "proto": str(PROTOCOL_VERSION),
        "host": hostname,
        "board": board,
        "auth": "1" if auth else "0",
    }


class Advertiser:
    """One mDNS service registration, for the lifetime of the collector."""

    def __init__(
        self,
        *,
        listen_host: str,
        port: int,
        hostname: str,
        board: str,
        auth: bool,
        instance: str | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.port = port
        self.hostname = hostname
        self.properties = txt_record(hostname, board, auth)
        label = (instance or hostname).replace(".", "-")[:63] or "edgescope"
        self.name = f"{label}.{SERVICE_TYPE}"
        self._zc: object | None = None
        self._info: object | None = None
        self._announce: Awaitable[object] | None = None

    def _interfaces_and_addresses(self) -> tuple[object, list[str]]:
        from zeroconf import InterfaceChoice
        from zeroconf._utils.net import get_all_addresses

        host = self.listen_host
        if host in ("0.0.0.0", "::"):
            addrs = [a for a in get_all_addresses() if not ipaddress.ip_address(a).is_loopback]
            return InterfaceChoice.All, addrs or ["127.0.0.1"]
        if host == "localhost":
            host = "127.0.0.1"
        return [host], [host]

    async def start(self) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        interfaces, addresses = self._interfaces_and_addresses()
        v6 = any(ipaddress.ip_address(a).version == 6 for a in addresses)
        zc = AsyncZeroconf(
            interfaces=interfaces,  # type: ignore[arg-type]
            ip_version=IPVersion.All if v6 else IPVersion.V4Only,
        )
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.name,
            port=self.port,
            properties=self.properties,
            server=f"{socket.gethostname().split('.')[0]}.local.",
            parsed_addresses=addresses,
        )
        try:
            # Probing is awaited here; the announcements go on in a task kept until close.
            self._announce = await zc.async_register_service(info, allow_name_change=True)
        except BaseException:
            await zc.async_close()
            raise
        self._zc, self._info = zc, info
        self.name = info.name
        log.info("advertising %s on %s", info.name, ", ".join(addresses))

    async def close(self) -> None:
        """Withdraw the advert (goodbye packets) and close the sockets."""
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        zc, info = self._zc, self._info
        self._zc = self._info = None
        if not isinstance(zc, AsyncZeroconf):
            return
        announce, self._announce = self._announce, None
        try:
            if isinstance(announce, asyncio.Future) and not announce.done():
                announce.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await announce
            if isinstance(info, AsyncServiceInfo):
                # The first await queues the goodbye packets, the second waits until they went.
                await (await zc.async_unregister_service(info))
        finally:
            await zc.async_close()
        log.info("withdrew the mDNS advert %s", self.name)
