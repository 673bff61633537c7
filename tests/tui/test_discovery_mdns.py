"""mDNS discovery against real adverts: python-zeroconf on 127.0.0.1, both ends in the test."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from edgescope_tui.discovery import SERVICE_TYPE, Device, MdnsBrowser, TcpTarget
from edgescope_tui.discovery.probe import ProbeSettings
from edgescope_tui.discovery.watch import Discovery
from sshd.collector import Collector
from zeroconf import DNSOutgoing, DNSPointer, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_PTR

pytestmark = pytest.mark.asyncio

LOOPBACK = ["127.0.0.1"]
RUN = uuid.uuid4().hex[:6]
"""Suffix of every instance name here: other test runs on this machine advertise on loopback
too, and the browser sees their adverts; ours are told apart by name."""


def n(name: str) -> str:
    return f"{name}-{RUN}"


def advert(
    name: str,
    port: int = 7313,
    txt: dict[str, str] | None = None,
    addresses: list[str] | None = None,
) -> AsyncServiceInfo:
    name = n(name)
    props = {"proto": "1", "host": name, "auth": "0", "board": "Raspberry Pi 5"}
    if txt is not None:
        props = txt
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(a) for a in (addresses or ["127.0.0.1"])],
        port=port,
        properties=props,
        server=f"{name}.local.",
    )


async def register(zc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
    # Test names are unique: skip the 1 s of conflict probing a real collector does.
    await zc.async_register_service(info, cooperating_responders=True)


@pytest_asyncio.fixture
async def publisher() -> AsyncIterator[AsyncZeroconf]:
    zc = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    try:
        yield zc
    finally:
        await zc.async_unregister_all_services()
        await zc.async_close()


class Seen:
    """What the browser reported, with a way to wait for a condition on it."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.changed = asyncio.Event()
        self.removed: list[str] = []

    def __call__(self, key: str, device: Device | None) -> None:
        if device is None:
            self.devices.pop(key, None)
            self.removed.append(key)
        else:
            self.devices[key] = device
        self.changed.set()

    async def until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not cond():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def by_label(self, label: str) -> Device | None:
        return next((d for d in self.devices.values() if d.label == n(label)), None)

    def have(self, *labels: str) -> bool:
        return all(self.by_label(label) is not None for label in labels)


async def test_devices_appear_and_disappear_live(publisher: AsyncZeroconf) -> None:
    seen = Seen()
    async with MdnsBrowser(seen, interfaces=LOOPBACK) as browser:
        pi = advert("pi-kitchen", 7001)
        jetson = advert("jetson", 7002, {"proto": "1", "host": "orin", "auth": "1"})
        await asyncio.gather(register(publisher, pi), register(publisher, jetson))
        await seen.until(lambda: seen.have("pi-kitchen", "jetson"))
        dev = seen.by_label("pi-kitchen")
        assert dev is not None
        assert dev.state == "found", dev.error
        assert dev.target == TcpTarget("127.0.0.1", 7001, name=n("pi-kitchen"))
        assert (dev.hostname, dev.board, dev.auth_required, dev.protocol) == (
            n("pi-kitchen"),
            "Raspberry Pi 5",
            False,
            1,
        )
        orin = seen.by_label("jetson")
        assert orin is not None and orin.auth_required is True and orin.board == ""
        assert browser.devices == seen.devices

        await publisher.async_unregister_service(pi)
        await seen.until(lambda: seen.by_label("pi-kitchen") is None)
        assert f"mdns:{n('pi-kitchen')}.{SERVICE_TYPE}" in seen.removed
        assert seen.by_label("jetson") is not None


MALFORMED = {
    "no-auth": ({"proto": "1", "host": "x"}, 7313, "TXT record lacks 'auth'"),
    "no-keys": ({"board": "Pi"}, 7313, "TXT record lacks 'proto', 'host', 'auth'"),
    "bad-proto": ({"proto": "one", "host": "x", "auth": "0"}, 7313, "protocol version 'one'"),
    "bad-auth": ({"proto": "1", "host": "x", "auth": "maybe"}, 7313, "auth is 'maybe'"),
    "port-zero": ({"proto": "1", "host": "x", "auth": "0"}, 0, "port 0 is not usable"),
    "future": ({"proto": "9", "host": "x", "auth": "0"}, 7313, "speaks protocol 9"),
}


async def test_malformed_adverts_are_one_line_on_that_device(publisher: AsyncZeroconf) -> None:
    seen = Seen()
    async with MdnsBrowser(seen, interfaces=LOOPBACK):
        infos = [advert(n, port, txt) for n, (txt, port, _) in MALFORMED.items()]
        await asyncio.gather(*(register(publisher, i) for i in [*infos, advert("good", 7003)]))
        await seen.until(lambda: seen.have(*MALFORMED, "good"))
        for name, (_, _, expected) in MALFORMED.items():
            broken = seen.by_label(name)
            assert broken is not None
            assert broken.state == "error"
            assert broken.target is None
            assert expected in broken.error, (name, broken.error)
            assert "\n" not in broken.error
        good = seen.by_label("good")
        assert good is not None and good.state == "found" and good.target is not None


async def test_an_advert_nobody_answers_for_says_so(publisher: AsyncZeroconf) -> None:
    """A bare PTR announcement for an instance whose SRV/TXT never come (its host is gone)."""
    seen = Seen()
    async with MdnsBrowser(seen, interfaces=LOOPBACK, resolve_timeout=0.5):
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        ptr = DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 120, f"{n('ghost')}.{SERVICE_TYPE}")
        out.add_answer_at_time(ptr, 0)
        await publisher.zeroconf.async_wait_for_start()
        publisher.zeroconf.async_send(out)
        await register(publisher, advert("alive", 7005))
        await seen.until(lambda: seen.have("ghost", "alive"))
        ghost, alive = seen.by_label("ghost"), seen.by_label("alive")
        assert ghost is not None and alive is not None
        assert ghost.state == "error"
        assert ghost.error == "advert could not be resolved: no address and port within 0.5 s"
        assert alive.state == "found"


async def test_a_re_announced_device_keeps_its_state(
    publisher: AsyncZeroconf, tmp_path: Path
) -> None:
    """An online device whose advert changes (a new board name) stays online, with the new fact."""
    collector = Collector(tmp_path / "collector").start()
    try:
        states: list[str] = []
        name = n("bench")

        def changed(key: str, device: Device | None) -> None:
            if device is not None and device.label == name:
                states.append(device.state)

        probe = ProbeSettings(timeout=3, listen=0.5)
        async with Discovery(
            mdns_interfaces=LOOPBACK, probe=probe, on_change=changed, recheck=0
        ) as discovery:
            info = advert("bench", collector.port)
            await register(publisher, info)
            key = f"mdns:{name}.{SERVICE_TYPE}"
            for _ in range(200):
                if discovery.devices.get(key) and discovery.devices[key].state == "online":
                    break
                await asyncio.sleep(0.05)
            assert discovery.devices[key].state == "online"
            before = len(states)
            txt = {"proto": "1", "host": name, "auth": "0", "board": "Pi 4"}
            await publisher.async_update_service(advert("bench", collector.port, txt))
            for _ in range(200):
                if discovery.devices[key].board == "Pi 4" and not discovery.pending:
                    break
                await asyncio.sleep(0.05)
            assert discovery.devices[key].board == "Pi 4"
            assert discovery.devices[key].state == "online"
            assert "found" not in states[before:]
    finally:
        collector.stop()
