"""Pilot tests of the devices screen: real collector, real sshd, real mDNS adverts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from edgescope_tracing.extras import COLLECTOR_INSTALL
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.discovery import SERVICE_TYPE, Device, SshTarget, TcpTarget
from edgescope_tui.discovery.probe import ProbeSettings
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.screens.devices import AddDeviceScreen, DevicesScreen
from edgescope_tui.ssh import SshSettings
from rich.cells import cell_len
from sshd import Sshd, free_port
from sshd.collector import Collector
from sshd.fixtures import sshd_with_edgescope_fixture  # noqa: F401 (registers the fixture)
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

SIZE = (120, 30)
FLAKY = f"flaky-{uuid.uuid4().hex[:6]}"
"""An advert name no other run on this machine uses (they advertise on loopback too)."""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    try:
        yield c.start()
    finally:
        c.stop()


@pytest_asyncio.fixture
async def publisher() -> AsyncIterator[AsyncZeroconf]:
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        yield zc
    finally:
        await zc.async_unregister_all_services()
        await zc.async_close()


def advert(name: str, port: int, txt: dict[str, str]) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties=txt,
        server=f"{name}.local.",
    )


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out waiting"
        await pilot.pause(0.05)


def devices_screen(app: EdgescopeApp) -> DevicesScreen:
    screen = app.screen
    assert isinstance(screen, DevicesScreen)
    return screen


def state(app: EdgescopeApp, label: str) -> str:
    s = devices_screen(app)
    d = next((d for d in s.discovery.devices.values() if d.label == label), None)
    return d.state if d is not None else "absent"


def row_text(screen: DevicesScreen, label: str) -> list[str]:
    """The cells of the device's row from its ``device`` column on (the screen's own first
    column, open and marked, is :func:`marks`)."""
    table = screen.query_one(DataTable)
    for key in table.rows:
        cells = [str(c) for c in table.get_row(key)]
        if cells[1] == label:
            return cells[1:]
    return []


def marks(screen: DevicesScreen, label: str) -> str:
    """``▶`` where the device's stream is open, ``✓`` where it is marked for compare."""
    table = screen.query_one(DataTable)
    for key in table.rows:
        cells = [str(c) for c in table.get_row(key)]
        if cells[1] == label:
            return cells[0].strip()
    raise AssertionError(f"no row {label!r}")


def select(screen: DevicesScreen, label: str) -> None:
    table = screen.query_one(DataTable)
    for i, key in enumerate(table.rows):
        if str(table.get_row(key)[1]) == label:
            table.move_cursor(row=i)
            return
    raise AssertionError(f"no row {label!r}")


@pytest.mark.asyncio
async def test_devices_live_and_open_a_dashboard(
    collector: Collector, publisher: AsyncZeroconf
) -> None:
    nothing = free_port()
    targets = [
        (TcpTarget("127.0.0.1", collector.port, name="bench"), "config"),
        (TcpTarget("127.0.0.1", nothing), "address"),
    ]
    app = EdgescopeApp(
        home=lambda: DevicesScreen(
            targets,  # type: ignore[arg-type]
            mdns_interfaces=["127.0.0.1"],
            probe=ProbeSettings(timeout=3, listen=1),
            recheck=0,
        )
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: state(app, "bench") == "online")
        await until(pilot, lambda: state(app, f"127.0.0.1:{nothing}") == "unreachable")
        screen = devices_screen(app)
        # The table follows the model through a message: wait for what the user sees.
        await until(pilot, lambda: row_text(screen, "bench")[1:3] == ["config", "online"])
        bench = row_text(screen, "bench")
        # Cells that grew when the device came online widened their columns: nothing is cut.
        await pilot.pause()
        table = screen.query_one(DataTable)
        for column, cell in zip(list(table.columns.values())[1:], bench, strict=True):
            assert column.content_width >= cell_len(cell), (column.label, cell)
        assert bench[5].endswith("GiB")
        assert bench[6] in ("ok",) or bench[6].startswith("THROTTLED")

        # A device appears over mDNS while the screen is up, broken; the others carry on.
        await publisher.async_register_service(
            advert(FLAKY, 7313, {"proto": "1", "host": "x"}), cooperating_responders=True
        )
        await until(pilot, lambda: state(app, FLAKY) == "error")
        select(screen, FLAKY)
        await pilot.pause()
        detail = str(screen.query_one("#device-detail", Static).render())
        assert detail == "malformed advert: TXT record lacks 'auth'"
        select(screen, f"127.0.0.1:{nothing}")
        await pilot.pause()
        detail = str(screen.query_one("#device-detail", Static).render())
        assert "connection refused" in detail
        assert state(app, "bench") == "online"

        # ... and goes away again.
        await publisher.async_unregister_all_services()
        await until(pilot, lambda: state(app, FLAKY) == "absent")
        await until(pilot, lambda: row_text(screen, FLAKY) == [])

        # Enter on a device opens its live dashboard through the App.
        select(screen, "bench")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert [f.label for f in app.feeds] == ["bench"]
        await until(pilot, lambda: app.feeds[0].state.stream.records > 5)

        # Escape goes back to the devices, the device still listed and its stream still read;
        # Enter on it again shows that stream (no second connection), Backspace leaves again.
        feed = app.feeds[0]
        await pilot.press("escape")
        assert app.screen is screen
        assert state(app, "bench") == "online"
        seen = feed.records
        await until(pilot, lambda: feed.records > seen)
        select(screen, "bench")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert app.screen.feed is feed and app.feeds == [feed]  # type: ignore[attr-defined]
        await pilot.press("backspace")
        assert app.screen is screen


@pytest.mark.asyncio
async def test_add_a_device_by_address(collector: Collector) -> None:
    app = EdgescopeApp(
        home=lambda: DevicesScreen(mdns=False, probe=ProbeSettings(timeout=3, listen=1), recheck=0)
    )
    async with app.run_test(size=SIZE) as pilot:
        screen = devices_screen(app)
        assert "press a to add one" in str(screen.query_one("#device-detail", Static).render())
        await pilot.press("a")
        assert isinstance(app.screen, AddDeviceScreen)
        app.screen.query_one("#add-target", Input).value = "not a target"
        await pilot.press("enter")
        err = str(app.screen.query_one("#add-error", Static).render())
        assert err == "'not a target': give the collector's address as HOST:PORT"
        app.screen.query_one("#add-target", Input).value = f"127.0.0.1:{collector.port}"
        await pilot.press("enter")
        assert app.screen is screen
        await until(pilot, lambda: state(app, f"127.0.0.1:{collector.port}") == "online")
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_start_the_collector_from_the_screen(
    sshd_with_edgescope: Sshd, tmp_path: Path
) -> None:
    server = sshd_with_edgescope
    empty = tmp_path / "ssh_config"
    empty.touch()
    port = free_port()
    base = tmp_path / "device"
    args = ("--data-dir", str(base / "data"), "--ingest", str(base / "in.sock"), "--no-mdns")
    settings = SshSettings(
        known_hosts=str(server.known_hosts),
        identities=(str(server.user_key),),
        agent=False,
        config=str(empty),
    )
    target = SshTarget("127.0.0.1", "root", server.port, collector_port=port)
    probe = ProbeSettings(ssh=settings, timeout=3, listen=1, collector_args=args)
    app = EdgescopeApp(
        home=lambda: DevicesScreen([(target, "ssh")], mdns=False, probe=probe, recheck=0)
    )
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: state(app, target.label) == "no-collector")
            screen = devices_screen(app)
            detail = str(screen.query_one("#device-detail", Static).render())
            assert "no collector is listening" in detail and "press x to start it" in detail
            await pilot.press("x")
            await until(pilot, lambda: state(app, target.label) == "online", timeout=30)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
            await until(pilot, lambda: app.feeds[0].state.stream.records > 3)
    finally:
        _stop_collector_on(port)


def _stop_collector_on(port: int) -> None:
    """End the collector the test started over SSH (found by its listening port)."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
            os.kill(conn.pid, signal.SIGTERM)


def test_devices_screen_from_the_devices_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``edgescope tui`` opens without files: the devices file's entries, or its problem."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    f = tmp_path / "edgescope" / "devices.toml"
    f.parent.mkdir()
    f.write_text('[[device]]\nname = "pi"\nssh = "pi@10.0.0.9"\n')
    screen = DevicesScreen.from_config()
    assert [d.label for d in screen.discovery.devices.values()] == ["pi"]
    assert screen.config_problem == ""
    f.write_text('[[device]]\nname = "pi"\n')
    screen = DevicesScreen.from_config()
    assert screen.discovery.devices == {}
    assert "device 'pi': give exactly one of ssh" in screen.config_problem


GiB = 2**30
SNAPSHOT_DEVICES = [
    Device(
        "mdns:pi-kitchen",
        "pi-kitchen",
        "mdns",
        TcpTarget("192.168.1.20", 7313),
        state="online",
        hostname="pi-kitchen",
        board="Raspberry Pi 5 Model B Rev 1.0",
        runs=("resnet-tiny",),
        temp_c=71.2,
        mem_used=int(2.9 * GiB),
        mem_total=int(3.8 * GiB),
        throttled=("pi under_voltage",),
    ),
    Device(
        "tcp:10.0.0.7:7313",
        "jetson",
        "config",
        TcpTarget("10.0.0.7", 7313),
        state="online",
        hostname="orin",
        temp_c=48.0,
        mem_used=5 * GiB,
        mem_total=15 * GiB,
    ),
    Device(
        "ssh:root@10.0.0.9::7313",
        "ssh://root@10.0.0.9",
        "ssh",
        SshTarget("10.0.0.9", "root"),
        state="no-collector",
        error="ssh://root@10.0.0.9: no collector on port 7313, and edgescope is not installed "
        f"there; install it on the device with: {COLLECTOR_INSTALL}",
        hint=COLLECTOR_INSTALL,
    ),
    Device(
        "tcp:10.0.0.5:7313",
        "10.0.0.5:7313",
        "address",
        TcpTarget("10.0.0.5", 7313),
        state="unreachable",
        error="cannot connect to 10.0.0.5:7313: connection refused (is the collector running "
        "there?)",
    ),
    Device(
        "mdns:broken",
        "broken",
        "mdns",
        None,
        state="error",
        error="malformed advert: TXT record lacks 'auth'",
    ),
]


@pytest.mark.parametrize("size", [(100, 24), (160, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_devices_screen_snapshot(
    snap_compare: Any, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every state on screen, the no-collector row selected; fixed devices, frozen clock."""
    monkeypatch.setattr(time, "time", lambda: 1_795_800_900.0)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/me/.config")
    app = EdgescopeApp(home=lambda: DevicesScreen(mdns=False, recheck=0))

    async def show(pilot: Pilot[Any]) -> None:
        screen = devices_screen(pilot.app)  # type: ignore[arg-type]
        for d in SNAPSHOT_DEVICES:
            screen.discovery.devices[d.key] = d
            screen.post_message(DevicesScreen.DeviceChanged(d.key, d))
        await pilot.pause()
        select(screen, "ssh://root@10.0.0.9")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=show)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--ssh", "pi@host:0"], "port '0' is not a number from 1 to 65535"),
        (["--address", "host"], "give the collector's address as HOST:PORT"),
    ],
)
def test_tui_targets_are_checked_before_the_ui_starts(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgescope.cli import main

    assert main(["tui", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgescope: ") and error in err and err.count("\n") == 1


def test_command_line_targets_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgescope_tui.screens.devices import cli_targets

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    targets = cli_targets(["pi@10.0.0.9"], ["10.0.0.5:7313"])
    screen = DevicesScreen.from_config(targets)
    assert [(d.label, d.origin) for d in screen.discovery.devices.values()] == [
        ("ssh://pi@10.0.0.9", "ssh"),
        ("10.0.0.5:7313", "address"),
    ]
