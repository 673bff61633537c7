"""Finding collectors on the local network: browsing ``_edgescope._tcp.local.`` over mDNS.

The browser's handler is synchronous and only schedules work, as python-zeroconf asks; each
resolve runs as a task that is kept referenced until it is done and cancelled when its service
goes away. A malformed advert (a TXT key missing, port 0, no address, no answer to the resolve)
becomes a device in state ``error`` with one line that says what is wrong, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from edgescope_tracing.protocol import MDNS_SERVICE_TYPE, PROTOCOL_VERSION, parse_port
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ._device import Device
from ._targets import TcpTarget

__all__ = [
    "PROTOCOL_VERSION",
    "REQUIRED_TXT",
    "SERVICE_TYPE",
    "MdnsBrowser",
    "device_from_info",
]

SERVICE_TYPE = MDNS_SERVICE_TYPE
REQUIRED_TXT = ("proto", "host", "auth")
"""TXT keys every advert must carry: protocol version, the device's hostname, whether a token
is needed. ``board`` is optional."""

OnChange = Callable[[str, Device | None], None]
"""Called with a device's key and the device, or ``None`` when it went away."""


def instance_name(name: str) -> str:
    """``pi-kitchen`` of ``pi-kitchen._edgescope._tcp.local.``."""
    suffix = "." + SERVICE_TYPE
    return name[: -len(suffix)] if name.endswith(suffix) else name.rstrip(".")


def _txt(info: AsyncServiceInfo) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (info.properties or {}).items():
        key = k.decode("utf-8", "replace").lower()
        out[key] = v.decode("utf-8", "replace") if v is not None else ""
    return out


def device_from_info(name: str, info: AsyncServiceInfo) -> Device:
    """The device an advert describes, or the same device in state ``error`` saying what's wrong."""
    label = instance_name(name)
    key = f"mdns:{name}"
    txt = _txt(info)
    base = Device(key=key, label=label, origin="mdns", target=None)
    missing = [k for k in REQUIRED_TXT if k not in txt]
    if missing:
        keys = ", ".join(repr(k) for k in missing)
        return base.with_state("error", f"malformed advert: TXT record lacks {keys}")
    proto_text = txt["proto"]
    if not proto_text.isdigit():
        return base.with_state("error", f"malformed advert: protocol version {proto_text!r}")
    proto = int(proto_text)
    auth_text = txt["auth"].lower()
    if auth_text not in ("0", "1", "yes", "no", "true", "false"):
        return base.with_state("error", f"malformed advert: auth is {txt['auth']!r}, not 0 or 1")
    auth = auth_text in ("1", "yes", "true")
    facts = Device(
        key=key,
        label=label,
        origin="mdns",
        target=None,
        hostname=txt["host"],
        board=txt.get("board", ""),
        auth_required=auth,
        protocol=proto,
    )
    try:
        port = parse_port(info.port if info.port is not None else "")
    except ValueError:
        return facts.with_state("error", f"malformed advert: port {info.port} is not usable")
    addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
    if not addresses:
        return facts.with_state("error", "advert has no address to connect to")
    if proto > PROTOCOL_VERSION:
        return facts.with_state(
            "error",
            f"collector speaks protocol {proto}; this edgescope speaks {PROTOCOL_VERSION}: "
            "upgrade edgescope",
        )
    target = TcpTarget(addresses[0], port, name=label)
    return Device(
        key=key,
        label=label,
        origin="mdns",
        target=target,
        hostname=facts.hostname,
        board=facts.board,
        auth_required=auth,
        protocol=proto,
    )


def _check_local(addresses: Sequence[str]) -> None:
    """OSError unless each address is one of this machine's (checked before zeroconf opens
    its sockets: it leaves one open when an interface fails)."""
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((addr, 0))
            except OSError as e:
                raise OSError(e.errno, f"no interface of this machine has address {addr}") from None


class MdnsBrowser:
    """Live set of advertised collectors; ``on_change`` hears every arrival, update and exit.

    ``interfaces`` is python-zeroconf's (``["127.0.0.1"]`` in tests). Pass ``zeroconf`` to share
    an :class:`AsyncZeroconf` instance; the browser then leaves it open on :meth:`close`.
    """

    def __init__(
        self,
        on_change: OnChange | None = None,
        *,
        interfaces: Sequence[str] | None = None,
        zeroconf: AsyncZeroconf | None = None,
        resolve_timeout: float = 3.0,
    ) -> None:
        self.devices: dict[str, Device] = {}
        self._on_change = on_change
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._azc = zeroconf
        self._own_zc = zeroconf is None
        self._resolve_timeout = resolve_timeout
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        if self._azc is None:
            if self._interfaces is not None:
                _check_local(self._interfaces)
                self._azc = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
            else:
                self._azc = AsyncZeroconf()
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, [SERVICE_TYPE], handlers=[self._on_service_state_change]
        )

    async def close(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._azc is not None and self._own_zc:
            await self._azc.async_close()
        self._azc = None

    async def __aenter__(self) -> MdnsBrowser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called on the event loop by the browser: schedule, never wait.
        old = self._resolving.pop(name, None)
        if old is not None:
            old.cancel()
        if state_change is ServiceStateChange.Removed:
            key = f"mdns:{name}"
            if self.devices.pop(key, None) is not None:
                self._notify(key, None)
            return
        task = self._spawn(self._resolve(name))
        self._resolving[name] = task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _resolve(self, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        ok = await info.async_request(self._azc.zeroconf, int(self._resolve_timeout * 1000))
        if self._resolving.get(name) is asyncio.current_task():
            del self._resolving[name]
        if ok:
            device = device_from_info(name, info)
        else:
            label = instance_name(name)
            device = Device(f"mdns:{name}", label, "mdns", None).with_state(
                "error",
                f"advert could not be resolved: no address and port within "
                f"{self._resolve_timeout:g} s",
            )
        self.devices[device.key] = device
        self._notify(device.key, device)

    def _notify(self, key: str, device: Device | None) -> None:
        if self._on_change is not None:
            self._on_change(key, device)
