"""Go to a time or a step: a one-line prompt over the dashboard."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class JumpScreen(ModalScreen[str | None]):
    """Asks where to go: ``12.5`` or ``1:02.5`` (time since the start), ``s600`` (a step)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    JumpScreen {
        align: center middle;
    }
    JumpScreen > Vertical {
        width: 60;
        height: auto;
        padding: 1 2;
        border: round $accent;
        background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Go to a time since the start (12.5, 1:02.5) or a step (s600):")
            yield Input(placeholder="12.5  or  s600", id="jump-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
