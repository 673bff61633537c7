"""Moving between devices and editing them, as a user does at 80x24: real collectors.

Devices screen → a dashboard → Escape → the devices screen → the same dashboard again (its
stream kept) → a second device's → ``d`` back to the first; the open ones marked; two marked
devices compared live; a device whose token is missing fixed with ``e`` and saved.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import Metrics, RunStart, StreamEncoder
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.discovery import TcpTarget, load_devices_file
from edgescope_tui.discovery.probe import ProbeSettings
from edgescope_tui.screens.compare import CompareScreen
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.screens.devices import AddDeviceScreen, DevicesScreen
from edgescope_tui.screens.sources import SourcesScreen
from edgescope_tui.widgets.chart import Chart
from edgescope_tui.widgets.timeline import ReplayBar
from sshd.collector import Collector
from test_discovery_screen import SNAPSHOT_DEVICES, marks, row_text, select
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Static

SIZE = (80, 24)
T0 = 1_795_800_000_000_000


def produce(c: Collector, name: str, steps: int = 50) -> None:
    """A run with a loss curve, written to the collector's ingest socket before the TUI looks."""
    enc = StreamEncoder()
    enc.add(RunStart(0, f"{name}-0000000000", name, "pi5", 77, t_us=T0))
    xs = tuple(range(steps))
    enc.add(
        Metrics(0, "loss", xs, tuple(T0 + x * 10_000 for x in xs), tuple(1 / (1 + x) for x in xs))
    )
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        while True:  # the collector listens on TCP a moment before its ingest socket is there
            try:
                s.connect(str(c.ingest))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, "no ingest socket"
                time.sleep(0.05)
        s.sendall(enc.take())


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Collector, Collector]]:
    a = Collector(tmp_path / "a", interval=0.5)
    b = Collector(tmp_path / "b", interval=0.5)
    try:
        a.start()
        b.start()
        produce(a, "run-alpha")
        produce(b, "run-beta")
        yield a, b
    finally:
        a.stop()
        b.stop()


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out waiting"
        await pilot.pause(0.05)


def dashboard(app: EdgescopeApp) -> DashboardScreen:
    assert isinstance(app.screen, DashboardScreen)
    return app.screen


def bar(app: EdgescopeApp) -> str:
    return dashboard(app).query_one("#replay", ReplayBar).render().plain  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_devices_dashboards_back_and_forth_and_compare(
    two: tuple[Collector, Collector], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    a, b = two
    targets = [
        (TcpTarget("127.0.0.1", a.port, name="alpha"), "config"),
        (TcpTarget("127.0.0.1", b.port, name="beta"), "config"),
    ]
    screen = DevicesScreen(
        targets,  # type: ignore[arg-type]
        mdns=False,
        probe=ProbeSettings(timeout=3, listen=0.5),
        recheck=0,
    )
    app = EdgescopeApp(home=lambda: screen)
    async with app.run_test(size=SIZE) as pilot:
        app.animation_level = "none"
        for label in ("alpha", "beta"):
            await until(pilot, lambda label=label: row_text(screen, label)[2:3] == ["online"])
        assert marks(screen, "alpha") == ""

        # Enter: alpha's dashboard, its run from the start, loading only until the head: LIVE.
        select(screen, "alpha")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        alpha = dashboard(app).feed
        await until(pilot, lambda: "● LIVE" in bar(app))
        assert "loading" not in bar(app)
        loss = alpha.state.metrics[(0, "loss")]
        assert loss.x[0] == 0 and loss.last_x == 49

        # Escape: back on the devices screen, alpha marked open; Enter shows the same stream.
        await pilot.press("escape")
        assert app.screen is screen
        await until(pilot, lambda: marks(screen, "alpha") == "▶")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert dashboard(app).feed is alpha and app.feeds == [alpha]

        # Back, and a second device: both open at once.
        await pilot.press("backspace")
        assert app.screen is screen
        select(screen, "beta")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        beta = dashboard(app).feed
        assert beta is not alpha and [f.label for f in app.feeds] == ["alpha", "beta"]
        await until(
            pilot, lambda: "run-beta" in str(dashboard(app).query_one("#run-header").render())
        )
        depth = len(app.screen_stack)

        # d: the next open device's dashboard in place of this one; Escape still goes home.
        await pilot.press("d")
        await until(
            pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.feed is alpha
        )
        assert len(app.screen_stack) == depth

        def showing(feed: object) -> bool:
            return isinstance(app.screen, DashboardScreen) and app.screen.feed is feed

        # The list of open sources (s) does the same: Enter on beta, in place of alpha.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SourcesScreen))
        app.screen.query_one(DataTable).move_cursor(row=1)
        await pilot.press("enter")
        await until(pilot, lambda: showing(beta))
        assert len(app.screen_stack) == depth
        await pilot.press("D")
        await until(pilot, lambda: showing(alpha))
        await pilot.press("escape")
        assert app.screen is screen
        await until(pilot, lambda: marks(screen, "beta") == "▶")
        assert marks(screen, "alpha") == "▶"

        # Mark both with space, compare them with c: the two streams already open, live.
        select(screen, "alpha")
        await pilot.press("space")
        select(screen, "beta")
        await pilot.press("space")
        assert marks(screen, "alpha") == "▶✓" and marks(screen, "beta") == "▶✓"
        assert "2 marked: c compares them live" in str(
            screen.query_one("#devices-title", Static).render()
        )
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        compare = app.screen
        assert isinstance(compare, CompareScreen) and compare.feeds == [alpha, beta]

        def labels() -> list[str]:
            spec = compare.query_one("#compare-chart", Chart).spec
            return [ln.label for ln in spec.lines] if spec is not None else []

        await until(pilot, lambda: labels() == ["alpha:run-alpha", "beta:run-beta"])
        # Fed live: a new step on beta reaches the compare chart.
        produce(b, "run-beta-2", steps=5)
        await until(pilot, lambda: "beta:run-beta-2" in labels())
        await pilot.press("escape")
        assert app.screen is screen


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[Collector, Path]]:
    token = tmp_path / "collector.token"
    token.write_text("correct horse battery staple\n")
    token.chmod(0o600)
    c = Collector(tmp_path / "c", interval=0.5, extra=("--token-file", str(token)))
    try:
        yield c.start(), token
    finally:
        c.stop()


@pytest.mark.asyncio
async def test_a_missing_token_is_fixed_with_e_and_saved(
    guarded: tuple[Collector, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    c, token = guarded
    f = tmp_path / "devices.toml"
    address = f"127.0.0.1:{c.port}"
    f.write_text(
        f'# lab\n[[device]]\nname = "secure"\naddress = "{address}"\n\n'
        f'[[device]]\nname = "secure-2"\naddress = "{address}"\n'
    )
    targets = [(t, "config") for t in load_devices_file(f).targets]
    screen = DevicesScreen(
        targets,  # type: ignore[arg-type]
        mdns=False,
        probe=ProbeSettings(timeout=3, listen=0.5),
        recheck=0,
        devices_file=f,
    )
    app = EdgescopeApp(home=lambda: screen)
    async with app.run_test(size=SIZE) as pilot:
        # Both entries for the address are listed; the second says it is a duplicate.
        await until(pilot, lambda: row_text(screen, "secure-2")[2:3] == ["error"])
        await until(pilot, lambda: row_text(screen, "secure")[2:3] == ["error"])
        select(screen, "secure-2")
        await pilot.pause()
        detail = str(screen.query_one("#device-detail", Static).render())
        assert "the same address as secure" in detail
        # The hint names a key that exists here, not a flag of another command.
        select(screen, "secure")
        await pilot.pause()
        detail = str(screen.query_one("#device-detail", Static).render())
        assert (
            f"{address} requires a token" in detail and "press e to give its token file" in detail
        )
        assert "--token-file" not in detail

        await pilot.press("e")
        form = app.screen
        assert isinstance(form, AddDeviceScreen)
        assert form.query_one("#add-target", Input).value == address
        assert form.query_one("#add-name", Input).value == "secure"
        assert form.query_one("#add-save", Checkbox).value is True  # it came from the file
        form.query_one("#add-token", Input).value = str(token)
        form.query_one("#add-target", Input).focus()
        await pilot.press("enter")
        assert app.screen is screen
        await until(pilot, lambda: row_text(screen, "secure")[2:3] == ["online"])
        assert row_text(screen, "secure-2")[2:3] == ["error"]  # the other entry as it was

        # Saved in place: the entry has its token file, the rest of the file as it was.
        text = f.read_text()
        assert text.startswith("# lab\n[[device]]\n") and text.count("[[device]]") == 2
        secure, second = load_devices_file(f).targets
        assert isinstance(secure, TcpTarget) and secure.token_file == str(token)
        assert second == TcpTarget("127.0.0.1", c.port, name="secure-2")

        # And it opens now.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await until(pilot, lambda: "● LIVE" in bar(app))


@pytest.mark.asyncio
async def test_a_device_added_then_edited_is_one_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``a`` with save adds an entry; ``e`` on it, and ``a`` of the same address with a token
    file, rewrite that entry: one row, one entry, never a second copy."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    f = tmp_path / "devices.toml"
    secret = tmp_path / "lab.token"
    secret.write_text("0123456789abcdef0123\n")
    secret.chmod(0o600)
    screen = DevicesScreen(
        mdns=False, probe=ProbeSettings(timeout=2, listen=0.2), recheck=0, devices_file=f
    )
    app = EdgescopeApp(home=lambda: screen)
    address = "127.0.0.1:1"  # nothing listens there: the device is listed, unreachable

    async def form(fields: dict[str, str], save: bool | None = None) -> None:
        dialog = app.screen
        assert isinstance(dialog, AddDeviceScreen)
        for name, value in fields.items():
            dialog.query_one(f"#add-{name}", Input).value = value
        if save is not None:
            dialog.query_one("#add-save", Checkbox).value = save
        dialog.query_one("#add-target", Input).focus()
        await pilot.press("enter")
        assert app.screen is screen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        assert app.screen.query_one("#add-save", Checkbox).value is False  # asked, not assumed
        await form({"target": address}, save=True)
        await until(pilot, lambda: row_text(screen, address)[2:3] == ["unreachable"])
        assert load_devices_file(f).targets == (TcpTarget("127.0.0.1", 1),)

        # Opened (its stream retrying), then edited: the stream of the old settings is closed.
        select(screen, address)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        stale = dashboard(app).feed
        await pilot.press("escape")
        await until(pilot, lambda: marks(screen, address) == "▶")
        await pilot.press("e")
        assert app.screen.query_one("#add-save", Checkbox).value is True  # it is in the file now
        await form({"name": "lab"})
        await until(pilot, lambda: row_text(screen, "lab")[2:3] == ["unreachable"])
        assert load_devices_file(f).targets == (TcpTarget("127.0.0.1", 1, name="lab"),)
        assert app.feeds == [] and marks(screen, "lab") == ""
        await until(pilot, lambda: stale.complete)

        await pilot.press("a")
        await form({"target": address, "name": "lab", "token": str(secret)}, save=True)
        await until(pilot, lambda: row_text(screen, "lab")[2:3] == ["unreachable"])
        assert len(screen.discovery.devices) == 1
        [entry] = load_devices_file(f).targets
        assert isinstance(entry, TcpTarget) and entry.token_file == str(secret)
        assert entry.token == "0123456789abcdef0123"
        assert f.read_text().count("[[device]]") == 1


@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_edit_dialog_snapshot(
    snap_compare: Any, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``e`` on a device from the devices file, one other device marked: the form filled in,
    saving ticked; it fits 80x24 and 60x20."""
    monkeypatch.setattr(time, "time", lambda: 1_795_800_900.0)
    devices_file = Path("/home/me/.config/edgescope/devices.toml")
    app = EdgescopeApp(home=lambda: DevicesScreen(mdns=False, recheck=0, devices_file=devices_file))

    async def show(pilot: Pilot[Any]) -> None:
        screen = app.screen
        assert isinstance(screen, DevicesScreen)
        for d in SNAPSHOT_DEVICES:
            screen.discovery.devices[d.key] = d
            screen.post_message(DevicesScreen.DeviceChanged(d.key, d))
        await pilot.pause()
        select(screen, "pi-kitchen")
        await pilot.press("space")
        select(screen, "jetson")
        await pilot.press("e")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=show)
