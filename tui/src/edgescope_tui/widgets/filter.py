"""A one-line filter: what a list shows is what matches the text typed here.

``/`` on the dashboard shows it over the tab's list (metrics, processes); typing filters at
once, Enter goes back to the list with the filter kept (shown above it), Escape clears it and
goes back. :class:`FilterBar.Filtered` carries the text.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input

__all__ = ["FilterBar"]


class FilterBar(Input):
    """Filter text for the list under it; hidden while empty and not being typed in."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear the filter"),
    ]

    DEFAULT_CSS = """
    FilterBar, FilterBar:focus {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
    }
    FilterBar.shown, FilterBar.shown:focus {
        display: block;
    }
    """

    class Filtered(Message):
        """The filter's text is now ``text`` (empty: no filter)."""

        def __init__(self, bar: FilterBar, text: str) -> None:
            super().__init__()
            self.bar = bar
            self.text = text

    def __init__(self, placeholder: str, *, then: str, id: str | None = None) -> None:
        """``then``: the selector of the list to focus when typing is done."""
        super().__init__(placeholder=placeholder, id=id)
        self.then = then

    def _back(self) -> None:
        self.screen.query_one(self.then).focus()

    def open(self) -> None:
        """Show it and type into it."""
        self.add_class("shown")
        self.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Filtered(self, event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value:
            self.remove_class("shown")
        self._back()

    def action_clear_filter(self) -> None:
        self.value = ""
        self.remove_class("shown")
        self._back()
