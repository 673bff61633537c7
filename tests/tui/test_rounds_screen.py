"""The Rounds view (``f``): the federated rounds of the open trace files, as ``edgescope rounds``
tells them (the traces are ``tests/tracing/roundsgen.py``'s)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from edgescope_tracing import RunStart, TraceWriter
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.rounds import RoundsScreen
from edgescope_tui.sources import FileSource
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracing"))
from roundsgen import NODES, write_flower_traces


async def _rounds(pilot: Pilot[None]) -> RoundsScreen:
    app = pilot.app
    assert isinstance(app, EdgescopeApp)
    for _ in range(400):
        if all(f.complete for f in app.feeds):
            break
        await pilot.pause(0.01)
    await pilot.press("f")
    screen = app.screen
    assert isinstance(screen, RoundsScreen)
    for _ in range(400):
        if screen.reports or "no Flower rounds" in screen.message_text:
            break
        await pilot.pause(0.01)
    await pilot.pause()
    return screen


@pytest.mark.asyncio
async def test_f_opens_the_rounds_of_the_open_traces(tmp_path: Path) -> None:
    paths = write_flower_traces(tmp_path)
    app = EdgescopeApp([FileSource(p) for p in paths])
    async with app.run_test(size=(140, 36)) as pilot:
        screen = await _rounds(pilot)
        table = screen.query_one("#rounds-table", DataTable)
        assert [str(c.label) for c in table.columns.values()] == [
            "round", "p0", "p1", "p2", "waited", "straggler",
        ]  # fmt: skip
        rows = [[str(v) for v in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[1] == ["2", "1.00 / 0.10", "1.00 / 0.10", "3.00 / 0.10 *", "4.00 s", "p2"]
        assert rows[2][3] == "timed out"
        head = str(screen.query_one("#rounds-head", Static).render())
        assert "Flower run 42: 3 rounds, 3 clients" in head
        assert f"p2: node {NODES[2]} (partition 2)" in head
        # the highlighted round's critical path and its straggler's cause
        await pilot.press("down")
        await pilot.pause()
        detail = str(screen.query_one("#rounds-detail", Static).render())
        assert "round 2" in detail
        assert "waited 4.00 s for node 303 (partition 2)" in detail
        assert "3.0x the round's median (3.00 s vs 1.00 s) while cpu0 throttled at 90.0" in detail
        await pilot.press("down")
        await pilot.pause()
        detail = str(screen.query_one("#rounds-detail", Static).render())
        assert "node 303 (partition 2) timed out: no reply within 30 s" in detail
        await pilot.press("escape")
        assert not isinstance(app.screen, RoundsScreen)


@pytest.mark.asyncio
async def test_traces_without_rounds_say_so(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "plain.est") as w:
        w.append(RunStart(0, "a" * 32, "plain", "h", 1, t_us=1))
    app = EdgescopeApp([FileSource(tmp_path / "plain.est")])
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _rounds(pilot)
        for _ in range(200):
            if "no Flower rounds" in screen.message_text:
                break
            await pilot.pause(0.01)
        assert "no Flower rounds in these sources (the client Mod" in screen.message_text
