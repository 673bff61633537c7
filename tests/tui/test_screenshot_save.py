"""The TUI's one save, a screenshot, never follows a symbolic link (issue #11 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgescope_tracing import RunStart, TraceWriter
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.sources import FileSource


@pytest.mark.asyncio
async def test_a_screenshot_is_saved_and_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    with TraceWriter(trace, fsync="never") as w:
        w.append(RunStart(0, "ab", "r", "h", 1, t_us=1))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "planted.svg").symlink_to(victim)
    app = EdgescopeApp([FileSource(trace)])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        saved = app.deliver_screenshot("shot.svg", str(tmp_path))
        assert saved == str(tmp_path / "shot.svg")
        assert (tmp_path / "shot.svg").read_text().startswith("<svg")
        assert app.deliver_screenshot("planted.svg", str(tmp_path)) is None
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("is a symbolic link" in m for m in notes), notes
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "planted.svg").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "planted.svg",
        "shot.svg",
        "t.trace",
        "victim",
    ]
