"""``w`` on the dashboard: save the run on show, or the window of it on show, as a file.

A small dialog: the format (an edgescope trace, CSV, JSON lines), what to save (the whole run,
or the window the charts show) and the path. Enter saves, Escape cancels; the dashboard does
the writing (:mod:`edgescope_tui.save`) and says where it went, or why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, RadioButton, RadioSet, Static

from ..save import FORMATS, Format, default_name

__all__ = ["SaveScreen", "SaveChoice"]

FORMAT_LABELS = {"est": "edgescope trace (.est)", "csv": "CSV", "jsonl": "JSON lines"}


@dataclass(frozen=True, slots=True)
class SaveChoice:
    """What the dialog was left with."""

    fmt: Format
    window: bool
    """Only the window on show, not the whole run."""
    path: str


class SaveScreen(ModalScreen[SaveChoice | None]):
    """Format, extent and path of a run to save."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    SaveScreen {
        align: center middle;
    }
    SaveScreen > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    SaveScreen RadioSet, SaveScreen RadioSet:focus {
        width: 100%;
        border: none;
        height: auto;
    }
    SaveScreen Input, SaveScreen Input:focus {
        border: none;
        height: 1;
        padding: 0;
    }
    """

    def __init__(self, run_name: str, run: int, window: str | None) -> None:
        """``window``: the window on show in words (None when the charts show all of it)."""
        super().__init__()
        self.run_name = run_name
        self.run = run
        self.window = window
        self.fmt: Format = "est"
        self.only_window = False

    def _default(self) -> str:
        return default_name(self.run_name, self.run, self.fmt, self.only_window)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]save run {self.run}[/b] · Enter saves · Esc cancels")
            with RadioSet(id="save-format"):
                for fmt in FORMATS:
                    yield RadioButton(FORMAT_LABELS[fmt], value=fmt == "est", name=fmt)
            with RadioSet(id="save-extent"):
                yield RadioButton("the whole run", value=True, name="run")
                if self.window is not None:
                    yield RadioButton(f"the window {self.window}", name="window")
            yield Static("[dim]path (relative to where edgescope was started):[/dim]")
            yield Input(self._default(), id="save-path")

    def on_mount(self) -> None:
        self.query_one("#save-path", Input).focus()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        path = self.query_one("#save-path", Input)
        was_default = path.value == self._default()
        name = event.pressed.name or ""
        if event.radio_set.id == "save-format" and name in FORMATS:
            self.fmt = FORMATS[FORMATS.index(name)]
        elif event.radio_set.id == "save-extent":
            self.only_window = name == "window"
        if was_default:  # the name follows the choices until it is edited
            path.value = self._default()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self.notify("give a path to save to", severity="error")
            return
        self.dismiss(SaveChoice(self.fmt, self.only_window, text))

    def action_cancel(self) -> None:
        self.dismiss(None)
