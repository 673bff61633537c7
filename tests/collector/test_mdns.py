"""The mDNS advert, seen by a real python-zeroconf browser on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from edgescope_collector.mdns import SERVICE_TYPE, Advertiser, board_model
from test_daemon import Collector
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf


class Browser:
    """Watches ``_edgescope._tcp.local.`` on loopback; the handler only records (no I/O)."""

    def __init__(self) -> None:
        self.zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.events: list[tuple[str, ServiceStateChange]] = []
        self.browser = AsyncServiceBrowser(
            self.zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        self.events.append((name, state_change))

    async def wait_for(self, name: str, change: ServiceStateChange, timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (name, change) not in self.events:
            if loop.time() > deadline:
                raise AssertionError(f"no {change.name} for {name}; saw {self.events}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.browser.async_cancel()
        await self.zc.async_close()


@pytest.mark.asyncio
async def test_advert_appears_with_txt_and_is_withdrawn() -> None:
    browser = Browser()
    ad = Advertiser(
        listen_host="127.0.0.1",
        port=7399,
        hostname="pi-kitchen",
        board="Raspberry Pi 5 Model B Rev 1.0",
        auth=True,
        instance="edgescope-test-advert",
    )
    try:
        await ad.start()
        await browser.wait_for(ad.name, ServiceStateChange.Added)
        info = await browser.zc.async_get_service_info(SERVICE_TYPE, ad.name, 3000)
        assert info is not None
        assert info.port == 7399
        assert info.parsed_addresses() == ["127.0.0.1"]
        assert info.properties == {
            b"proto": b"1",
            b"host": b"pi-kitchen",
            b"board": b"Raspberry Pi 5 Model B Rev 1.0",
            b"auth": b"1",
        }
        await ad.close()
        await browser.wait_for(ad.name, ServiceStateChange.Removed)
    finally:
        await ad.close()
        await browser.close()


@pytest.mark.asyncio
async def test_collector_process_advertises_and_withdraws_on_sigterm(tmp_path: Path) -> None:
    browser = Browser()
    c = Collector(tmp_path, "--mdns")
    try:
        await asyncio.to_thread(c.start)
        # Other collectors may advertise on this machine too: ours is the one on our port.
        name, info = await _advert_on_port(browser, c.port)
        assert info.properties[b"auth"] == b"0"
        assert info.properties[b"proto"] == b"1"
        assert await asyncio.to_thread(c.stop) == 0
        await browser.wait_for(name, ServiceStateChange.Removed)
        assert "withdrew the mDNS advert" in c.stderr()
    finally:
        await asyncio.to_thread(c.stop)
        await browser.close()


async def _advert_on_port(browser: Browser, port: int) -> tuple[str, AsyncServiceInfo]:
    checked: set[str] = set()
    for _ in range(100):
        for name, change in list(browser.events):
            if change is not ServiceStateChange.Added or name in checked:
                continue
            checked.add(name)
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(browser.zc.zeroconf, 3000) and info.port == port:
                return name, info
        await asyncio.sleep(0.1)
    raise AssertionError(f"no advert for port {port}; saw {browser.events}")


def test_board_model_from_device_tree_then_dmi(tmp_path: Path) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    assert board_model(proc, sys_) == ""
    dmi = sys_ / "class" / "dmi" / "id" / "product_name"
    dmi.parent.mkdir(parents=True)
    dmi.write_text("ThinkPad X1 Carbon Gen 9\n")
    assert board_model(proc, sys_) == "ThinkPad X1 Carbon Gen 9"
    dt = proc / "device-tree" / "model"
    dt.parent.mkdir(parents=True)
    dt.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert board_model(proc, sys_) == "NVIDIA Jetson AGX Orin Developer Kit"
