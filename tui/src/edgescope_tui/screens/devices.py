"""The devices screen: every device found or configured, its state, and a way into its runs.

Rows come from :class:`~edgescope_tui.discovery.watch.Discovery` (mDNS adverts, ``--ssh`` and
address targets, the devices file) and change live: a device that appears, goes away, fails
or recovers changes its own row only. The line under the table says what is wrong with the
selected device and what to do about it. Enter opens the device's live run dashboard through
``EdgescopeApp.open_source`` (several can be open at once: the ``open`` column says which, and
``d`` on a dashboard goes to the next); space marks devices and ``c`` compares the marked
devices' runs live, and ``f`` shows their Flower rounds live (every device's where none is
marked); ``x`` starts the collector over SSH where it is installed but not
running; ``a`` adds an address or SSH target; ``e`` edits the selected device (its address,
name, token file) and can save it to the devices file; ``r`` checks every device again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgescope_tracing.text import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Checkbox, DataTable, Footer, Input, Label, Static

from ..discovery import (
    DEFAULT_COLLECTOR_PORT,
    DEVICE_COLUMNS,
    Device,
    Origin,
    SshTarget,
    Target,
    TargetError,
    TcpTarget,
    default_devices_file,
    device_row,
    load_devices_file,
    parse_ssh_target,
    parse_tcp_target,
    read_token_file,
    save_device,
    ssh_config_hosts,
)
from ..discovery.probe import ProbeSettings
from ..discovery.watch import Discovery

if TYPE_CHECKING:
    from ..app import EdgescopeApp
    from ..feed import Feed
    from ..ssh import SshSettings

__all__ = [
    "AddDeviceScreen",
    "DeviceEdit",
    "DevicesScreen",
    "cli_targets",
    "device_cells",
    "parse_any_target",
]

COLUMNS = ("open", *DEVICE_COLUMNS)
"""The screen's own first column, then the devices table's: ``▶`` a device whose stream is
open (its dashboard a ``d`` away), ``✓`` marked for compare."""
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
    text = _state_line(d)
    if d.duplicate_of:
        text.append(f"  (the same address as {d.duplicate_of}; e edits it)", style="yellow")
    return text


def _state_line(d: Device) -> Text:
    # Names, runs, errors: from an mDNS advert or a collector, so escaped (issue #11 item 11).
    label = escape(d.label)
    if d.state == "online":
        runs = ", ".join(d.runs) if d.runs else "no run active"
        where = f"{d.hostname}" + (f" ({d.board})" if d.board else "")
        return Text.assemble((f"{label}: ", "bold"), escape(f"online on {where}; {runs}"))
    if d.state in ("found", "checking"):
        return Text(f"{label}: {escape(d.hint or 'checking...')}", style="yellow")
    error = escape(d.error.replace(" (--token-file)", ""))  # here, e is the way: said below
    text = Text(error or d.state, style="red" if d.state != "no-collector" else "yellow")
    if d.can_start_collector:
        text.append("  press x to start it", style="bold")
    elif d.hint and d.hint not in d.error:
        text.append(f"  ({escape(d.hint)})")
    elif "token" in d.error:
        text.append("  press e to give its token file", style="bold")
    return text


def parse_any_target(text: str, token_file: str = "", name: str = "") -> Target:
    """``HOST:PORT`` (a collector on the network) or ``[ssh://]user@host[:port]`` (SSH), with
    a token file and a name where given."""
    text = text.strip()
    token_file = token_file.strip()
    label = name.strip() or None
    if text.startswith("ssh://") or "@" in text:
        t = parse_ssh_target(text, name=label)
        return SshTarget(t.host, t.user, t.port, t.collector_port, t.name, token_file or None)
    token = read_token_file(token_file, text) if token_file else None
    tcp = parse_tcp_target(text, default_port=None, token=token, name=label)
    return TcpTarget(tcp.host, tcp.port, tcp.token, tcp.name, token_file or None)


def target_text(t: Target) -> str:
    """A target as the address field of the add and edit forms takes it back."""
    if isinstance(t, TcpTarget):
        return t.address
    host = f"[{t.host}]" if ":" in t.host else t.host
    user = f"{t.user}@" if t.user else ""
    port = f":{t.port}" if t.port is not None else ""
    cport = f"/{t.collector_port}" if t.collector_port != DEFAULT_COLLECTOR_PORT else ""
    return f"ssh://{user}{host}{port}{cport}"


def cli_targets(
    ssh: Sequence[str] = (), addresses: Sequence[str] = ()
) -> list[tuple[Target, Origin]]:
    """``--ssh`` and ``--address`` values as targets; TargetError (one sentence) if one is bad."""
    out: list[tuple[Target, Origin]] = [(parse_ssh_target(t), "ssh") for t in ssh]
    out.extend((parse_tcp_target(a, default_port=None), "address") for a in addresses)
    return out


@dataclass(frozen=True, slots=True)
class DeviceEdit:
    """What the add or edit form gave: the target, and whether to save it to the devices file."""

    target: Target
    save: bool = False


class AddDeviceScreen(ModalScreen[DeviceEdit | None]):
    """Ask for a target: an address with an optional token file, or an SSH login, and a name.

    With ``editing``, the form starts from that target (the devices screen's ``e``); with a
    ``devices_file``, a checkbox saves the result there.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    AddDeviceScreen { align: center middle; }
    AddDeviceScreen > Vertical {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        padding: 0 1; border: thick $accent; background: $surface;
    }
    AddDeviceScreen Input { margin: 0; }
    AddDeviceScreen #add-error { color: $error; height: auto; }
    """

    def __init__(
        self,
        editing: Target | None = None,
        *,
        devices_file: Path | None = None,
        save: bool = False,
    ) -> None:
        super().__init__()
        self.editing = editing
        self.devices_file = devices_file
        self.save = save

    def compose(self) -> ComposeResult:
        t = self.editing
        with Vertical() as box:
            box.border_subtitle = "Enter applies · Esc cancels"
            what = f"Edit {t.label}" if t is not None else "Add a device"
            yield Label(f"{what}: HOST:PORT, or user@host / ssh://user@host[:port]")
            yield Input(
                target_text(t) if t is not None else "",
                placeholder="192.168.1.20:7313 or pi@raspberrypi.local",
                id="add-target",
            )
            yield Label("Name (optional)")
            yield Input((t.name or "") if t is not None else "", placeholder="pi", id="add-name")
            yield Label("Token file (only for collectors that want one)")
            yield Input(
                (t.token_file or "") if t is not None else "",
                placeholder="~/.config/edgescope/pi.token",
                id="add-token",
            )
            if self.devices_file is not None:
                yield Checkbox(f"Save to {self.devices_file}", self.save, id="add-save")
            yield Static("", id="add-error")

    @on(Input.Submitted)
    def submit(self) -> None:
        target_text_ = self.query_one("#add-target", Input).value
        name = self.query_one("#add-name", Input).value
        token_file = self.query_one("#add-token", Input).value
        try:
            target = parse_any_target(target_text_, token_file, name)
        except TargetError as e:
            self.query_one("#add-error", Static).update(Text(str(e)))
            return
        save = False
        if self.devices_file is not None:
            save = self.query_one("#add-save", Checkbox).value
        self.dismiss(DeviceEdit(target, save))

    def action_cancel(self) -> None:
        self.dismiss(None)


class DevicesScreen(Screen[None]):
    """Every device with its state; Enter opens its live dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("e", "edit", "Edit"),
        Binding("a", "add", "Add"),
        # said on the device's line where it applies ("press x to start it")
        Binding("x", "start_collector", "Start collector", show=False),
        Binding("r", "recheck", "Check again"),
        Binding("f", "rounds", "Rounds", show=False),
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
        devices_file: Path | None = None,
    ) -> None:
        """``devices_file``: where ``e`` can save a device (None: nowhere)."""
        super().__init__()
        self.devices_file = devices_file
        self.marked: set[str] = set()
        """Keys of the devices marked (space) for compare."""
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
        cls,
        targets: Sequence[tuple[Target, Origin]] = (),
        *,
        ssh_config: bool = False,
        token: bytes | None = None,
    ) -> DevicesScreen:
        """``targets`` (from the command line), the devices file (and, if asked or set there,
        ``~/.ssh/config``), plus mDNS; ``token`` for collectors that want one and whose entry
        names no token file (``edgescope tui --token-file``). ``e`` saves to that file.

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
        screen = cls(targets, probe=ProbeSettings(token=token), devices_file=default_devices_file())
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

    def _title(self) -> Text:
        """The line above the table: where devices come from (or what is wrong there), and
        how many are marked."""
        title = Text.assemble(("devices", "bold"), " · ")
        if self.marked:  # first: a long devices-file path would cut it off at 80 columns
            title.append(f"{len(self.marked)} marked: c compares them live", style="bold cyan")
            title.append(" · ")
        if self.config_problem:
            title.append(self.config_problem, style="red")
        elif self.discovery.mdns_error:
            title.append(self.discovery.mdns_error, style="yellow")
        else:
            title.append(f"mDNS, SSH and {self.devices_file or default_devices_file()}")
        return title

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="devices-title")
        yield DataTable(id="devices-table", cursor_type="row")
        yield Static("", id="device-detail")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name in COLUMNS:
            table.add_column("" if name == "open" else name, key=name)
        for key, device in self.discovery.devices.items():
            self._show(key, device)
        await self.discovery.start()
        self.query_one("#devices-title", Static).update(self._title())
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
            if message.device is None and message.key in self.marked:
                self.marked.discard(message.key)
                self.query_one("#devices-title", Static).update(self._title())
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
        cells = (self._open_cell(device), *device_cells(device))
        if not present:
            table.add_row(*cells, key=key)
            return
        for column, value in zip(COLUMNS, cells, strict=True):
            table.update_cell(key, column, value, update_width=True)  # cells size to content

    def _open_cell(self, device: Device) -> Text:
        opened = "▶" if self._feed(device) is not None else " "
        marked = "✓" if device.key in self.marked else " "
        return Text(opened + marked, style="bold cyan")

    def _feed(self, device: Device) -> Feed | None:
        """The open feed that reads this device, if there is one."""
        if device.target is None:
            return None
        return self.edgescope.feed_for(device.target.label)

    def _refresh_marks(self) -> None:
        table = self.query_one(DataTable)
        for key, device in self.discovery.devices.items():
            if key in table.rows:
                table.update_cell(key, "open", self._open_cell(device), update_width=True)

    def on_screen_resume(self) -> None:
        # Back from a dashboard or the compare screen: which devices are open changed.
        try:
            self._refresh_marks()
        except NoMatches:
            return

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
        self.edgescope.show_feed(self._open_feed(device))

    def _open_feed(self, device: Device) -> Feed:
        """The device's feed: the open one (its stream went on meanwhile), or a new one,
        read from the start of its current runs."""
        assert device.target is not None
        feed = self.edgescope.feed_for(device.target.label)
        if feed is not None:
            return feed
        from ..sources.live import live_source

        t = device.target
        own = t.token if isinstance(t, TcpTarget) else t.token_file
        token = None if own else self.probe.token  # the device's own token wins
        source = live_source(t, token=token, ssh_settings=self.probe.ssh, from_start=True)
        return self.edgescope.open_source(source, show=False)

    def action_mark(self) -> None:
        """Space: mark the selected device for compare, or unmark it."""
        device = self.selected()
        if device is None:
            return
        self.marked ^= {device.key}
        self._refresh_marks()
        self.query_one("#devices-title", Static).update(self._title())

    def action_compare(self) -> None:
        """``c``: the marked devices' runs on the compare screen, live (their dashboards'
        streams, or new ones)."""
        devices = [d for k, d in self.discovery.devices.items() if k in self.marked]
        usable = [d for d in devices if d.target is not None and d.state != "no-collector"]
        if not usable:
            self.notify("mark devices with space first, then c compares their runs")
            return
        skipped = [d.label for d in devices if d not in usable]
        if skipped:
            self.notify(f"not compared (no collector there): {', '.join(skipped)}")
        from .compare import CompareScreen

        feeds = [self._open_feed(d) for d in usable]
        self.app.push_screen(CompareScreen(feeds))

    def action_rounds(self) -> None:
        """``f``: the Flower rounds of the marked devices (of every device with a collector
        where none is marked), live (screens/rounds.py)."""
        devices = [
            d for k, d in self.discovery.devices.items() if not self.marked or k in self.marked
        ]
        usable = [d for d in devices if d.target is not None and d.state != "no-collector"]
        for d in usable:
            self._open_feed(d)
        from .rounds import RoundsScreen

        self.app.push_screen(RoundsScreen(lambda: list(self.edgescope.feeds)))

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
        def added(edit: DeviceEdit | None) -> None:
            if edit is None:
                return
            t = edit.target
            known = self.discovery.devices.get(t.key)  # the same address: that device, anew
            device = self.discovery.add(t, "ssh" if isinstance(t, SshTarget) else "address")
            if edit.save:
                in_file = known is not None and known.origin == "config"
                old = known.target if known is not None and in_file else None
                if self._save(t, old):
                    self.discovery.saved(device.key)

        self.app.push_screen(AddDeviceScreen(devices_file=self.devices_file), added)

    def action_edit(self) -> None:
        """``e``: change the selected device's address, name or token file; optionally save
        it to the devices file (its own entry there, or a new one)."""
        device = self.selected()
        if device is None:
            return
        if device.target is None:
            self.notify(device.error or "this device has no address to edit", severity="error")
            return
        old = device.target

        def edited(edit: DeviceEdit | None) -> None:
            if edit is None:
                return
            self.marked.discard(device.key)
            stale = self._feed(device)
            if stale is not None:  # read with the old address or token: the next is new
                self.edgescope.close_feed(stale)
            now = self.discovery.edit(device.key, edit.target)
            if edit.save and self._save(edit.target, old if device.origin == "config" else None):
                self.discovery.saved(now.key)

        form = AddDeviceScreen(old, devices_file=self.devices_file, save=device.origin == "config")
        self.app.push_screen(form, edited)

    def _save(self, target: Target, old: Target | None) -> bool:
        """Write ``target`` to the devices file (in place of ``old``'s entry); says how it went."""
        assert self.devices_file is not None
        try:
            n = save_device(self.devices_file, target, old)
        except TargetError as e:
            self.notify(str(e), title="Not saved", severity="error", markup=False)
            return False
        self.notify(
            f"{target.label}: device {n} of {self.devices_file}", title="Saved", markup=False
        )
        return True
