"""All the devices at once: configured targets and mDNS adverts, each checked and re-checked.

:class:`Discovery` is what ``edgescope ls`` and the devices screen run. Devices from the
command line and the devices file are listed at once (state ``found``) and checked; devices
advertised over mDNS join as their adverts resolve and leave when they are withdrawn. Each
change is reported through ``on_change(key, device_or_None)``; a failing device changes only
its own row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ._device import Device, Origin
from ._mdns import MdnsBrowser
from ._targets import SshTarget, Target
from .probe import Prober, ProbeSettings

__all__ = ["Discovery", "device_for"]

OnChange = Callable[[str, Device | None], None]


def device_for(target: Target, origin: Origin) -> Device:
    """A not-yet-checked row for a configured target."""
    return Device(key=target.key, label=target.label, origin=origin, target=target)


class Discovery:
    """Configured and advertised devices, checked now and every ``recheck`` seconds.

    ``recheck=0`` checks each device once (what ``edgescope ls`` wants). ``mdns=False`` skips
    the network browse; ``mdns_interfaces`` restricts it (``["127.0.0.1"]`` in tests).
    """

    def __init__(
        self,
        targets: Iterable[tuple[Target, Origin]] = (),
        *,
        mdns: bool = True,
        mdns_interfaces: Sequence[str] | None = None,
        probe: ProbeSettings | None = None,
        on_change: OnChange | None = None,
        recheck: float = 10.0,
    ) -> None:
        self.devices: dict[str, Device] = {}
        for target, origin in targets:
            device = self._keyed(device_for(target, origin))
            self.devices[device.key] = device
        self.prober = Prober(probe)
        self.on_change = on_change
        self.recheck = recheck
        self._mdns = MdnsBrowser(self._on_mdns, interfaces=mdns_interfaces) if mdns else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._rechecker: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._closed = False
        self.mdns_error = ""
        """Why mDNS browsing could not start, if it could not."""

    async def start(self) -> None:
        for key in list(self.devices):
            self.check(key)
        if self._mdns is not None:
            try:
                await self._mdns.start()
            except OSError as e:
                # No multicast here (no network, a sandbox): the configured devices still work.
                self.mdns_error = f"mDNS unavailable: {(e.strerror or str(e)).lower()}"
                await self._mdns.close()
                self._mdns = None
        if self.recheck > 0:
            self._rechecker = self._spawn(self._recheck_loop())
        self._update_settled()

    async def close(self) -> None:
        self._closed = True
        if self._mdns is not None:
            await self._mdns.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.prober.close()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Checks in flight."""
        return len(self._checking)

    async def settle(self, timeout: float) -> bool:
        """Wait until no check is in flight (True), or ``timeout`` passes (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_settled(), timeout)
        return not self._checking

    async def _wait_settled(self) -> None:
        while self._checking:
            self._settled.clear()
            await self._settled.wait()

    def check(self, key: str) -> None:
        """(Re)check one device now, unless a check of it is already running."""
        device = self.devices.get(key)
        if device is None or device.target is None or key in self._checking or self._closed:
            return
        if device.state == "found":
            self._set(replace(device, state="checking"))
        self._checking[key] = self._spawn(self._run(key, self.prober.probe, device))
        self._update_settled()

    def _keyed(self, device: Device, key: str | None = None) -> Device:
        """``device`` under ``key`` (default its own), or, where another device has that key
        (one address listed twice), under the next free ``KEY#2``, ``KEY#3``, ... and marked as
        the other's duplicate: both are listed and checked, neither is dropped."""
        key = key or device.key
        first = self.devices.get(key)
        if first is None:
            return replace(device, key=key)
        n = 2
        while f"{key}#{n}" in self.devices:
            n += 1
        return replace(device, key=f"{key}#{n}", duplicate_of=first.label)

    def add(self, target: Target, origin: Origin = "address") -> Device:
        """Add a target while running (the devices screen's ``a``), and check it. A target
        for an address already listed replaces that device's target (a new token file, a
        name), keeping where it came from."""
        current = self.devices.get(target.key)
        if current is None:
            device = device_for(target, origin)
        else:
            device = replace(
                device_for(target, current.origin),
                key=current.key,
                duplicate_of=current.duplicate_of,
            )
        self._set(device)
        self.check(device.key)
        return device

    def edit(self, key: str, target: Target) -> Device:
        """Give the device under ``key`` a new target (a token file, a name, an address), and
        check it again. Another address is another key: the old row goes, the new one comes
        (as a duplicate where that address is listed already)."""
        current = self.devices.get(key)
        origin: Origin = current.origin if current is not None else "address"
        if current is not None and current.target is not None and current.target.key == target.key:
            device = replace(device_for(target, origin), key=key, duplicate_of=current.duplicate_of)
            self._set(device)
            self.check(key)
            return device
        self.remove(key)
        device = self._keyed(device_for(target, origin))
        self._set(device)
        self.check(device.key)
        return device

    def saved(self, key: str) -> None:
        """The device was written to the devices file: it is listed from there now."""
        current = self.devices.get(key)
        if current is not None and current.origin != "config":
            self._set(replace(current, origin="config"))

    def remove(self, key: str) -> None:
        """Take a device off the list (its check, if one runs, is let go)."""
        task = self._checking.pop(key, None)
        if task is not None:
            task.cancel()
            self._update_settled()
        if self.devices.pop(key, None) is not None and self.on_change is not None:
            self.on_change(key, None)

    def start_collector(self, key: str) -> None:
        """Start the collector over SSH on a device that has it installed but not running."""
        device = self.devices.get(key)
        if device is None or not isinstance(device.target, SshTarget) or key in self._checking:
            return
        self._set(device.with_state("checking", "", "starting the collector..."))
        self._checking[key] = self._spawn(self._run(key, self.prober.start_collector, device))
        self._update_settled()

    async def _run(
        self, key: str, action: Callable[[Device], Coroutine[Any, Any, Device]], device: Device
    ) -> None:
        try:
            result = await action(device)
        finally:
            if self._checking.get(key) is asyncio.current_task():  # not a later check's
                del self._checking[key]
            self._update_settled()
        current = self.devices.get(key)
        if current is None:
            return  # withdrawn while we looked
        # An advert may have changed while checking: keep its newest facts, add our findings.
        if current.target != device.target:
            self.check(key)
            return
        # Where it is listed from may have changed meanwhile (saved to the devices file).
        self._set(replace(result, origin=current.origin, duplicate_of=current.duplicate_of))

    def _update_settled(self) -> None:
        if not self._checking:
            self._settled.set()

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck)
            for key in list(self.devices):
                self.check(key)

    def _on_mdns(self, key: str, device: Device | None) -> None:
        if device is None:
            self.remove(key)
            return
        # A collector advertised on an address we already know by configuration is one device.
        for other in self.devices.values():
            if (
                other.key != key
                and other.target is not None
                and device.target is not None
                and other.target.key == device.target.key
            ):
                return
        current = self.devices.get(key)
        if (
            current is not None
            and current.target is not None
            and device.target is not None
            and current.target.key == device.target.key
        ):
            # The same collector re-announced: keep what we know (a token file given with e),
            # take the advert's new facts.
            device = replace(
                current,
                hostname=device.hostname,
                board=device.board,
                auth_required=device.auth_required,
                protocol=device.protocol,
            )
        self._set(device)
        if device.target is not None:
            self.check(key)

    def _set(self, device: Device) -> None:
        self.devices[device.key] = device
        if self.on_change is not None:
            self.on_change(device.key, device)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
