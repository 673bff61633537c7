"""Every hint names a key or a flag that exists where it is shown.

The TUI's hints (``press e to give its token file``, ``(r: next)``, ``(m/M)``) are read from
the source of each screen and checked against the keys bound there; the collector's "requires
a token (--token-file)" is checked against every command that can print it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import edgescope_tui
import pytest
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.compare import CompareScreen
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.screens.devices import DevicesScreen
from textual.binding import Binding

from edgescope.cli import build_parser

SRC = Path(edgescope_tui.__file__).parent
HINT = re.compile(r"press (\w)\b|\((\w)(?:/(\w))?(?::[^)]*)?\)|\b(\w) compares")
"""``press x``, ``(r: next)``, ``(m/M)``, `` (o)``, ``c compares``."""


def keys(*classes: Any) -> set[str]:
    out: set[str] = set()
    for cls in classes:
        for b in cls.BINDINGS:
            if isinstance(b, Binding):
                out.update(k.strip() for k in b.key.split(","))
    return out


def hinted(path: Path) -> set[str]:
    """The keys the string literals of a module name as hints."""
    found: set[str] = set()
    for literal in re.findall(r'"(?:[^"\\\n]|\\.)*"', path.read_text()):
        for m in HINT.finditer(literal):
            if m.group(2) and not re.search(r"\s\(", literal[: m.start() + 1]):
                continue  # 'gap(s)': a plural, not a key
            found.update(g for g in m.groups() if g)
    return found


@pytest.mark.parametrize(
    ("module", "screens"),
    [
        ("screens/devices.py", (DevicesScreen,)),
        ("screens/dashboard.py", (DashboardScreen,)),
        ("screens/compare.py", (CompareScreen,)),
        ("app.py", (DashboardScreen,)),  # its notices show over a dashboard
    ],
)
def test_hinted_keys_are_bound_there(module: str, screens: tuple[Any, ...]) -> None:
    named = hinted(SRC / module)
    assert named  # the hints were found at all
    assert named <= keys(*screens, EdgescopeApp), named - keys(*screens, EdgescopeApp)


@pytest.mark.parametrize("command", ["ls", "tail", "tui"])
def test_the_token_hint_is_a_flag_of_each_command_that_connects(command: str) -> None:
    target = {"tail": ["127.0.0.1:7313"]}.get(command, [])
    args = build_parser().parse_args([command, *target, "--token-file", "t"])
    assert args.token_file == "t"


def test_tui_token_file_that_cannot_be_used_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgescope.cli import main

    assert main(["tui", "--token-file", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err == f"edgescope: --token-file: token file {tmp_path / 'nope'} does not exist\n"
