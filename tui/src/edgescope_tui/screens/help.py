"""``?`` or F1: the keys and mouse actions of the screen under it, over that screen.

The keys are read from the bindings that are in force there (the screen's own, then the App's),
so the list cannot drift from what the keys do; what the mouse does is said per screen.
Escape, ``?``, F1 or ``q`` closes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.markup import escape
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

__all__ = ["HelpScreen", "key_rows"]

MOUSE: dict[str, tuple[str, ...]] = {
    "DashboardScreen": (
        "click or drag on the timeline: move the cursor there",
        "click a tab: show it",
        "click an event (Events tab): go to it",
        "click a chart: go to that step or time; drag across it: zoom into that range",
        "click a column heading (Processes tab): sort by it, again: reverse",
    ),
    "CompareScreen": (),
    "DevicesScreen": ("click a device: select it; click again: open it",),
    "SourcesScreen": ("click a source: select it; click again: open it",),
}
"""What the mouse does on each screen, by the screen's class name."""


def _key_label(key: str) -> str:
    names = {
        "escape": "Esc",
        "backspace": "Backspace",
        "left_square_bracket": "[",
        "right_square_bracket": "]",
        "comma": ",",
        "full_stop": ".",
        "minus": "-",
        "plus": "+",
        "equals_sign": "=",
        "question_mark": "?",
        "space": "Space",
        "enter": "Enter",
        "slash": "/",
    }
    parts = key.split("+")
    return "+".join(names.get(p, p.capitalize() if len(p) > 1 else p) for p in parts)


def key_rows(
    screen: Screen[Any], *, can_leave: bool = True, off: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """``(keys, what they do)`` for the bindings active on ``screen``: those of the widget in
    focus there (ours, not Textual's cursor keys), the screen's, the App's; one row per action
    (with all its keys), in the order they were declared; ``can_leave``: whether Escape goes
    back from there, ``off``: actions that do nothing there (the App's ``check_action``, asked
    before the help covers the screen)."""
    rows: dict[tuple[int, str], tuple[list[str], str]] = {}
    app = screen.app
    # the keys of the list in focus first (the process table's sort keys, a filter's Escape),
    # those our widgets declare: not Textual's own cursor keys
    own: list[BindingType] = []
    focused = screen.focused
    for cls in type(focused).__mro__ if focused is not None else ():
        if cls.__module__.startswith("edgescope_tui."):
            own += list(cls.__dict__.get("BINDINGS", ()))
    sources: list[list[BindingType]] = [own, list(type(screen).BINDINGS), list(type(app).BINDINGS)]
    for level, bindings in enumerate(sources):
        for b in bindings:
            if not isinstance(b, Binding) or not b.description:
                continue
            if (b.action == "leave" and not can_leave) or b.action in off:
                continue
            keys = [_key_label(k.strip()) for k in b.key.split(",")]
            # another key for the same action of the same widget: one row for both (a widget's
            # "jump" is not the screen's)
            key = (level, b.action)
            if key in rows:
                rows[key][0].extend(k for k in keys if k not in rows[key][0])
                continue
            rows[key] = (keys, b.description)
    return [(" / ".join(keys), what) for keys, what in rows.values()]


class HelpScreen(ModalScreen[None]):
    """The keys and mouse actions of the screen it was opened over."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,f1,q", "close", "Close"),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 90%;
        padding: 0 1;
        border: round $accent;
        background: $surface;
    }
    """

    def __init__(
        self, under: Screen[Any], *, can_leave: bool = True, off: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.under = under
        """The screen whose keys are listed."""
        self.can_leave = can_leave
        self.off = off
        """Actions that do nothing on that screen now: not listed."""
        self.rows: list[tuple[str, str]] = []
        """What it lists: ``(keys, what they do)``."""

    def compose(self) -> ComposeResult:
        name = type(self.under).__name__
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        self.rows = key_rows(self.under, can_leave=self.can_leave, off=self.off)
        for keys, what in self.rows:
            table.add_row(escape(keys), escape(what))
        mouse = MOUSE.get(name, ())
        with VerticalScroll():
            title = name.removesuffix("Screen").lower()
            yield Static(f"[b]keys on the {title} screen[/b] · Esc closes", id="help-title")
            yield Static(table, id="help-keys")
            if mouse:
                yield Static("\n[b]mouse[/b]\n" + "\n".join(escape(m) for m in mouse))

    def action_close(self) -> None:
        self.dismiss(None)
