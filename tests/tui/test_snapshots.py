"""SVG snapshots of the UI on the real H200 run, at two terminal sizes, with a frozen clock.

Update them after a deliberate change with ``pytest tests/tui/test_snapshots.py
--snapshot-update`` and look at the SVGs before committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from device_trace import T0, write_device_trace
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.sources import FileSource
from h200_trace import write_h200_trace
from textual.pilot import Pilot

SIZES = [(100, 30), (160, 48)]
FROZEN = 1_795_800_900.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing on screen may depend on the wall clock: freeze it so a leak would show."""
    monkeypatch.setattr(time, "time", lambda: FROZEN)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("snap")
    return (
        write_h200_trace(d / "h200.trace", steps=2000),
        write_h200_trace(d / "h200-first-1000.trace", steps=1000),
    )


def loaded(*keys: str) -> Callable[[Pilot[Any]], Any]:
    """Wait until every source is read, then press ``keys``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, EdgescopeApp)
        for _ in range(500):
            if app.feeds and all(f.complete for f in app.feeds):
                break
            await pilot.pause(0.01)
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard(snap_compare: Any, traces: tuple[Path, Path], size: tuple[int, int]) -> None:
    app = EdgescopeApp([FileSource(traces[0])])
    assert snap_compare(app, terminal_size=size, run_before=loaded())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_at_step_600(
    snap_compare: Any, traces: tuple[Path, Path], size: tuple[int, int]
) -> None:
    app = EdgescopeApp([FileSource(traces[0])])
    assert snap_compare(app, terminal_size=size, run_before=loaded("g", *"s600", "enter"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare(snap_compare: Any, traces: tuple[Path, Path], size: tuple[int, int]) -> None:
    app = EdgescopeApp([FileSource(traces[0]), FileSource(traces[1])])
    assert snap_compare(app, terminal_size=size, run_before=loaded("m"))


def test_system_tab(snap_compare: Any, traces: tuple[Path, Path]) -> None:
    app = EdgescopeApp([FileSource(traces[0])])
    assert snap_compare(app, terminal_size=(120, 36), run_before=loaded("3"))


def test_events_tab(snap_compare: Any, traces: tuple[Path, Path]) -> None:
    app = EdgescopeApp([FileSource(traces[0])])
    assert snap_compare(app, terminal_size=(120, 36), run_before=loaded("5"))


def test_help_over_the_dashboard_at_80x24(snap_compare: Any, traces: tuple[Path, Path]) -> None:
    app = EdgescopeApp([FileSource(traces[0])])
    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded("question_mark"))


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pi")
    return write_device_trace(d / "pi.est", d)


def at(t_us: int, *keys: str) -> Callable[[Pilot[Any]], Any]:
    """Loaded, the cursor at ``t_us``, then ``keys``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await loaded()(pilot)
        screen = pilot.app.screen
        screen.go_to(t_us)  # type: ignore[attr-defined]
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause()

    return run_before


# The dashboard's own tabs and keys at 80x24, on a minute of a run on the recorded Pi.
PI_VIEWS = {
    "overview_smoothed_and_zoomed": at(T0 + 40_000_000, "e", "e", "z"),
    "processes_tree": at(T0 + 40_000_000, "6", "t"),
    "run_tab": loaded("7"),
    "metrics_filtered": loaded("2", "slash", *"acc"),
    "events_after_a_jump": at(T0 + 30_000_000, "5"),
    "save_dialog": at(T0 + 30_000_000, "w"),
}


@pytest.mark.parametrize("view", list(PI_VIEWS))
def test_pi_dashboard_at_80x24(snap_compare: Any, pi: Path, view: str) -> None:
    app = EdgescopeApp([FileSource(pi)])
    assert snap_compare(app, terminal_size=(80, 24), run_before=PI_VIEWS[view])
