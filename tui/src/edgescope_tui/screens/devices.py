"""The devices screen: every device found or configured, its state, and a way into its runs.

Rows come from :class:`~edgescope_tui.discovery.watch.Discovery` (mDNS adverts, ``--ssh`` and
address targets, the devices file) and change live: a device that appears, goes away, fails
or recovers changes its own row only. The line under the table says what is wrong with the
selected device and what to do about it. Enter opens the device's live run dashboard through
``EdgescopeApp.open_source``; ``x`` starts the collector over SSH where it is installed but not
running; ``a`` adds an address or SSH target; ``r`` checks every device again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from ..discovery import (
    DEVICE_COLUMNS,
    Device,
    Origin,
    SshTarget,
    Target,
    TargetError,
    default_devices_file,
    device_row,
    load_devices_file,
    parse_ssh_target,
    parse_tcp_target,
    read_token_file,
    ssh_config_hosts,
)
from ..discovery.probe import ProbeSettings
from ..discovery.watch import Discovery

if TYPE_CHECKING:
    from ..app import EdgescopeApp
    from ..ssh import SshSettings

__all__ = [
    "AddDeviceScreen",
    "DevicesScreen",
    "cli_targets",
    "device_cells",
    "parse_any_target",
]

COLUMNS = DEVICE_COLUMNS
_STATE_STYLE = {
    "online": "bold green",
    "found": "dim",
    "checking": "yellow",
    "no-collector": "yellow",
    "unreachable": "red",
    "error": "bold red",
}


def device_cells(d: Device) -> tuple[str | Text, ...]:
    """The row of one device (:func:`~edgescope_tui.discovery.device_row`), styled: its state
    coloured, a throttled device's badge."""
    cells: list[str | Text] = list(device_row(d))
    cells[2] = Text(d.state, style=_STATE_STYLE.get(d.state, ""))
    if d.throttled:
        cells[6] = Text("THROTTLED " + ", ".join(d.throttled), style="bold black on yellow")
    else:
        cells[6] = Text(str(cells[6]), style="green")
    return tuple(cells)


def detail_line(d: Device) -> Text:
    """What the line under the table says about the selected device."""
    if d.state == "online":
        runs = ", ".join(d.runs) if d.runs else "no run active"
        where = f"{d.hostname}" + (f" ({d.board})" if d.board else "")
        return Text.assemble((f"{d.label}: ", "bold"), f"online on {where}; {runs}")
    if d.state in ("found", "checking"):
        return Text(f"{d.label}: {d.hint or 'checking...'}", style="yellow")
    text = Text(d.error or d.state, style="red" if d.state != "no-collector" else "yellow")
    if d.can_start_collector:
        text.append("  press x to start it", style="bold")
    elif d.hint and d.hint not in d.error:
        text.append(f"  ({d.hint})")
    return text


def parse_any_target(text: str, token_file: str = "") -> Target:
    """``HOST:PORT`` (a collector on the network) or ``[ssh://]user@host[:port]`` (SSH)."""
    text = text.strip()
    if text.startswith("ssh://") or "@" in text:
        t = parse_ssh_target(text)
        if token_file:
            t = SshTarget(t.host, t.user, t.port, t.collector_port, t.name, token_file)
        return t
    token = read_token_file(token_file, text) if token_file else None
    return parse_tcp_target(text, default_port=None, token=token)


def cli_targets(
    ssh: Sequence[str] = (), addresses: Sequence[str] = ()
) -> list[tuple[Target, Origin]]:
    """``--ssh`` and ``--address`` values as targets; TargetError (one sentence) if one is bad."""
    out: list[tuple[Target, Origin]] = [(parse_ssh_target(t), "ssh") for t in ssh]
    out.extend((parse_tcp_target(a, default_port=None), "address") for a in addresses)
    return out


class AddDeviceScreen(ModalScreen[Target | None]):
    """Ask for a target: an address with an optional token file, or an SSH login."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    AddDeviceScreen { align: center middle; }
    AddDeviceScreen > Vertical {
        width: 72; height: auto; padding: 1 2; border: thick $accent; background: $surface;
    }
    AddDeviceScreen #add-error { color: $error; height: auto; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Add a device: HOST:PORT, or user@host / ssh://user@host[:port]")
            yield Input(placeholder="192.168.1.20:7313 or pi@raspberrypi.local", id="add-target")
            yield Label("Token file (only for collectors that want one)")
            yield Input(placeholder="~/.config/edgescope/pi.token", id="add-token")
            yield Static("", id="add-error")

    @on(Input.Submitted)
    def submit(self) -> None:
        target_text = self.query_one("#add-target", Input).value
        token_file = self.query_one("#add-token", Input).value.strip()
        try:
            target = parse_any_target(target_text, token_file)
        except TargetError as e:
            self.query_one("#add-error", Static).update(str(e))
            return
        self.dismiss(target)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DevicesScreen(Screen[None]):
    """Every device with its state; Enter opens its live dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("x", "start_collector", "Start collector"),
        Binding("a", "add", "Add device"),
        Binding("r", "recheck", "Check again"),
    ]

    DEFAULT_CSS = """
    DevicesScreen #devices-title { height: 1; padding: 0 1; background: $boost; }
    DevicesScreen #devices-table { height: 1fr; }
    DevicesScreen #device-detail { height: 2; padding: 0 1; }
    """

    class DeviceChanged(Message):
        """A device appeared, changed or (``device`` None) went away."""

        def __init__(self, key: str, device: Device | None) -> None:
            super().__init__()
            self.key = key
            self.device = device

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, DevicesScreen.DeviceChanged) and message.key == self.key

    def __init__(
        self,
        targets: Sequence[tuple[Target, Origin]] = (),
        *,
        mdns: bool = True,
        mdns_interfaces: Sequence[str] | None = None,
        probe: ProbeSettings | None = None,
        recheck: float = 10.0,
    ) -> None:
        super().__init__()
        self.probe = probe or ProbeSettings()
        self.discovery = Discovery(
            targets,
            mdns=mdns,
            mdns_interfaces=mdns_interfaces,
            probe=self.probe,
            on_change=self._on_change,
            recheck=recheck,
        )

    @classmethod
    def from_config(
        cls, targets: Sequence[tuple[Target, Origin]] = (), *, ssh_config: bool = False
    ) -> DevicesScreen:
        """``targets`` (from the command line), the devices file (and, if asked or set there,
        ``~/.ssh/config``), plus mDNS.

        A devices file that can't be read is said on the screen; the rest still works.
        """
        targets = list(targets)
        problem = ""
        try:
            devices = load_devices_file()
            targets.extend((t, "config") for t in devices.targets)
            if ssh_config or devices.ssh_config_hosts:
                targets.extend((t, "ssh-config") for t in ssh_config_hosts())
        except TargetError as e:
            problem = str(e)
        screen = cls(targets)
        screen.config_problem = problem
        return screen

    config_problem = ""
    """A problem with the devices file, shown in the title line."""

    @property
    def ssh_settings(self) -> SshSettings | None:
        return self.probe.ssh

    @property
    def edgescope(self) -> EdgescopeApp:
        from ..app import EdgescopeApp

        assert isinstance(self.app, EdgescopeApp)
        return self.app

    def compose(self) -> ComposeResult:
        title = f"[b]devices[/b] · mDNS, SSH and {default_devices_file()}"
        if self.config_problem:
            title = f"[b]devices[/b] · [red]{self.config_problem}[/red]"
        yield Static(title, id="devices-title")
        yield DataTable(id="devices-table", cursor_type="row")
        yield Static("", id="device-detail")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        for key, device in self.discovery.devices.items():
            self._show(key, device)
        await self.discovery.start()
        if self.discovery.mdns_error:
            title = f"[b]devices[/b] · [yellow]{self.discovery.mdns_error}[/yellow]"
            self.query_one("#devices-title", Static).update(title)
        self._update_detail()

    async def on_unmount(self) -> None:
        await self.discovery.close()

    # --- discovery's side ---------------------------------------------------------------

    def _on_change(self, key: str, device: Device | None) -> None:
        # Called by discovery on this loop; the table changes when the message is handled.
        self.post_message(self.DeviceChanged(key, device))

    def on_devices_screen_device_changed(self, message: DeviceChanged) -> None:
        try:
            self._show(message.key, message.device)
            self._update_detail()
        except NoMatches:  # a change that arrives while the screen is taken down
            return

    def _show(self, key: str, device: Device | None) -> None:
        table = self.query_one(DataTable)
        present = key in table.rows
        if device is None:
            if present:
                table.remove_row(key)
            return
        cells = device_cells(device)
        if not present:
            table.add_row(*cells, key=key)
            return
        for column, value in zip(COLUMNS, cells, strict=True):
            table.update_cell(key, column, value, update_width=True)  # cells size to content

    def selected(self) -> Device | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except LookupError:
            return None
        return self.discovery.devices.get(key) if key is not None else None

    def _update_detail(self) -> None:
        device = self.selected()
        detail = self.query_one("#device-detail", Static)
        if device is None:
            detail.update("no device yet: browsing mDNS; press a to add one by address or SSH")
        else:
            detail.update(detail_line(device))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._update_detail()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        # The table has the focus and takes Enter for itself: it selects, we open.
        self.action_open()

    # --- actions ------------------------------------------------------------------------

    def action_open(self) -> None:
        device = self.selected()
        if device is None:
            return
        if device.target is None:
            self.notify(device.error or "this device has no address", severity="error")
            return
        if device.state == "no-collector":
            hint = "press x to start it" if device.can_start_collector else device.hint
            self.notify(f"no collector runs on {device.label}: {hint}", severity="warning")
            return
        feed = self.edgescope.feed_for(device.target.label)
        if feed is not None:  # opened before: its stream went on meanwhile
            self.edgescope.show_feed(feed)
            return
        from ..sources.live import live_source

        source = live_source(
            device.target, token=self.probe.token, ssh_settings=self.probe.ssh, from_start=True
        )
        self.edgescope.open_source(source)

    def action_start_collector(self) -> None:
        device = self.selected()
        if device is None:
            return
        if not device.can_start_collector:
            if device.state == "no-collector":
                self.notify(f"edgescope is not installed there: {device.hint}", severity="warning")
            else:
                self.notify("only a device with the collector installed and stopped can start it")
            return
        self.discovery.start_collector(device.key)

    def action_recheck(self) -> None:
        for key in list(self.discovery.devices):
            self.discovery.check(key)

    def action_add(self) -> None:
        def added(target: Target | None) -> None:
            if target is not None:
                self.discovery.add(target, "ssh" if isinstance(target, SshTarget) else "address")

        self.app.push_screen(AddDeviceScreen(), added)
