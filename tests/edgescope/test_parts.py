"""A device-only or laptop-only install refuses the other side's commands in one line, exit 3.

Each command runs in a fresh interpreter where the other side's part cannot be imported (a
meta-path finder refuses it, as if it were not installed), through the real ``main()``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from withoutparts import EDGESCOPE_MAIN, run_without

from edgescope.cli import NEEDS, build_parser
from edgescope.cli._extras import PARTS
from edgescope.errors import NotInstalled

ROOT = Path(__file__).resolve().parents[2]
DEVICE_LACKS = ("edgescope_tui", "textual", "asyncssh", "cryptography")
LAPTOP_LACKS = ("edgescope_collector",)


def _run(blocked: tuple[str, ...], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_without(blocked, EDGESCOPE_MAIN, argv, cwd)


def _assert_refused(proc: subprocess.CompletedProcess[str], part: str) -> None:
    assert proc.returncode == NotInstalled.exit_code == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert PARTS[part].install in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["ls", "--json"],
        ["tui"],
        ["replay", "run.est"],
        ["replay", "run.est", "--follow"],
        ["tail", "ssh://pi@raspberrypi.local"],  # tail itself works everywhere; ssh:// not
    ],
)
def test_device_install_refuses_the_ui_commands(argv: list[str], tmp_path: Path) -> None:
    _assert_refused(_run(DEVICE_LACKS, argv, tmp_path), "tui")


@pytest.mark.parametrize(
    "argv",
    [
        ["collector"],
        ["collector", "--data-dir", "X"],  # an option only the collector knows
        ["record", "-o", "run.est", "--", "true"],
        ["doctor"],
        ["demo", "--headless"],
    ],
)
def test_laptop_install_refuses_the_device_commands(argv: list[str], tmp_path: Path) -> None:
    proc = _run(LAPTOP_LACKS, argv, tmp_path)
    _assert_refused(proc, "collector")
    assert not (tmp_path / "X").exists() and not (tmp_path / "run.est").exists()


def test_device_install_still_inspects_and_exports(tmp_path: Path) -> None:
    example = ROOT / "examples" / "h200-mlp-training.est"
    proc = _run(DEVICE_LACKS, ["inspect", str(example), "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "h200.csv"
    proc = _run(LAPTOP_LACKS, ["export", str(example), "--format", "csv", "-o", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_unknown_arguments_are_still_refused_where_the_part_is_installed(tmp_path: Path) -> None:
    proc = _run((), ["inspect", "x.est", "--no-such-flag"], tmp_path)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_every_needed_part_is_a_known_part_and_a_real_command() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert set(NEEDS) <= commands
    assert set(NEEDS.values()) <= set(PARTS)


def test_error_lines_are_escaped(tmp_path: Path) -> None:
    """A file name is user input: it reaches the terminal as text, never as an escape."""
    name = "run\x1b]0;owned\x07\u202e.est"
    proc = _run((), ["inspect", str(tmp_path / name)], tmp_path)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
    assert "\\x1b]0;owned\\x07\\u202e.est: no such file" in proc.stderr
    assert proc.stderr.count("\n") == 1
