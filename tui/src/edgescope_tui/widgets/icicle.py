"""An icicle of a stack tree: the root on top, callees below, widths by sample count.

:func:`draw_icicle` is pure (tree and size in, text out) and tested without an App.
"""

from __future__ import annotations

from edgescope_tracing.text import escape
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..state import StackNode

__all__ = ["Icicle", "draw_icicle"]

COLORS = ("#875f00", "#af5f00", "#875f5f", "#5f5f87", "#5f875f", "#87875f")


def draw_icicle(root: StackNode, width: int, height: int) -> Text:
    """One row per depth; each node a box as wide as its share of the root's samples."""
    out = Text(no_wrap=True, overflow="crop")
    if root.count == 0 or width < 4:
        out.append("no stack samples in this window", style="dim")
        return out
    level: list[tuple[StackNode, int, int]] = [(root, 0, width)]
    for depth in range(height):
        if not level:
            break
        row: list[tuple[str, str | None]] = [(" ", None)] * width
        nxt: list[tuple[StackNode, int, int]] = []
        for i, (node, x, w) in enumerate(level):
            if w <= 0:
                continue
            label = f"{escape(node.name)} {100 * node.count / root.count:.0f}%"
            text = label[:w].ljust(w) if w > 2 else "▏" * w
            color = COLORS[(depth + i) % len(COLORS)]
            for k, ch in enumerate(text):
                row[x + k] = (ch, color)
            cx = x
            for child in node.children:
                cw = int(w * child.count / node.count) if node.count else 0
                if cw > 0:
                    nxt.append((child, cx, cw))
                cx += cw
        for ch, bg in row:
            out.append(ch, style=Style(bgcolor=bg, color="#ffffff" if bg else None))
        if depth < height - 1:
            out.append("\n")
        level = nxt
    return out


class Icicle(Widget):
    """The merged call tree of the stack samples in a window, as an icicle."""

    DEFAULT_CSS = """
    Icicle {
        height: 1fr;
        min-height: 4;
    }
    """

    stack: reactive[StackNode | None] = reactive(None, always_update=True)
    """The tree to draw."""

    def render(self) -> Text:
        if self.stack is None:
            return Text("no stack samples", style="dim")
        return draw_icicle(self.stack, self.content_size.width, self.content_size.height)
