"""The Events view shows a crash's stored traceback, escaped (issue #11, post-mortem)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgescope_tracing import Event, Metrics, RunEnd, RunStart, TraceWriter
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources import FileSource
from edgescope_tui.widgets.events import EventsView

TB = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 9, in <module>\n'
    "    step(batch)\n"
    "RuntimeError: CUDA out of memory\x1b]52;c;eA==\x07"
)


@pytest.mark.asyncio
async def test_the_traceback_of_an_exception_is_in_its_row(tmp_path: Path) -> None:
    p = tmp_path / "crash.trace"
    with TraceWriter(p, fsync="never") as w:
        w.append(RunStart(0, "aa", "crash", "pi", 1, t_us=1_000_000))
        w.append(Metrics(0, "loss", (0, 1), (1_000_000, 2_000_000), (1.0, 0.5)))
        w.append(Event("mark", "plain \x1b[2J", run=0, t_us=2_100_000))
        w.append(
            Event(
                "exception",
                "RuntimeError: CUDA out of memory",
                run=0,
                severity=2,
                detail={"type": "builtins.RuntimeError", "traceback": TB},
                t_us=2_500_000,
            )
        )
        w.append(RunEnd(0, 1, t_us=2_600_000))
    app = EdgescopeApp([FileSource(p)])
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if isinstance(app.screen, DashboardScreen) and app.screen.feed.complete:
                break
        d = app.screen
        assert isinstance(d, DashboardScreen)
        await pilot.press("end", "5")
        await pilot.pause()
        table = d.query_one("#events-list", EventsView)
        rows = table.rows_shown
        assert [r.kind for r in rows] == ["mark", "exception"]
        assert rows[1].traceback == TB
        cell = str(table.get_row_at(1)[3])
        assert cell.startswith("RuntimeError: CUDA out of memory\nTraceback (most recent")
        assert cell.endswith("RuntimeError: CUDA out of memory\\x1b]52;c;eA==\\x07")
        assert str(table.get_row_at(0)[3]) == "plain \\x1b[2J"
        assert table.rows[table.coordinate_to_cell_key((1, 0)).row_key].height == 5
