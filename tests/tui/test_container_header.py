"""The TUI header names the container a run is in and why it ended (issue #14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgescope_tracing import Metrics, ProcessSample, Record, RunEnd, RunStart, TraceWriter
from edgescope_tui import views
from edgescope_tui.app import EdgescopeApp
from edgescope_tui.screens.dashboard import DashboardScreen
from edgescope_tui.sources import FileSource
from edgescope_tui.state import RunState, fold_all

DOCKER = (
    "/system.slice/docker-4f2a1b3c9d0e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope"
)
CAUSE = "killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"


def records(cgroup: str) -> list[Record]:
    out: list[Record] = [RunStart(0, "aa", "train", "jetson", 42, t_us=1_000_000)]
    for k in range(10):
        t = 1_000_000 + k * 100_000
        out.append(Metrics(0, "loss", (k,), (t,), (1.0 / (k + 1),)))
        out.append(ProcessSample(0, 42, rss=1 << 28, cgroup_current=1 << 28, t_us=t, cgroup=cgroup))
    out.append(RunEnd(0, None, 0, 2_100_000, cause=CAUSE))
    return out


def test_the_place_of_a_run_is_its_container_else_its_cgroup() -> None:
    s = fold_all(records(DOCKER))
    assert views.run_place(s, 0) == "Docker container 4f2a1b3c9d0e"
    assert s.runs[0].cause == CAUSE
    child = ProcessSample(0, 43, rss=1, t_us=3_000_000, cgroup="/system.slice/other.scope")
    assert (
        views.run_place(fold_all([*records(DOCKER), child]), 0) == "Docker container 4f2a1b3c9d0e"
    )
    s = fold_all(records("/system.slice/train.service"))
    assert views.run_place(s, 0) == "cgroup /system.slice/train.service"
    assert views.run_place(fold_all(records("/")), 0) is None
    assert views.run_place(RunState(), 0) is None


@pytest.mark.asyncio
async def test_the_header_says_where_the_run_ran_and_why_it_ended(tmp_path: Path) -> None:
    p = tmp_path / "oom.trace"
    with TraceWriter(p, fsync="never") as w:
        for r in records(DOCKER):
            w.append(r)
    app = EdgescopeApp([FileSource(p)])
    async with app.run_test(size=(160, 36)) as pilot:
        for _ in range(400):
            if all(f.complete for f in app.feeds):
                break
            await pilot.pause(0.01)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        header = str(screen.query_one("#run-header").render())
        assert "train on jetson · in Docker container 4f2a1b3c9d0e · failed · " in header
        assert CAUSE in header


def test_without_samples_the_sdk_s_own_word_places_the_run() -> None:
    start = RunStart(0, "aa", "train", "pi", 42, device={"cgroup": f"/docker/{'ab' * 32}"})
    assert views.run_place(fold_all([start]), 0) == "Docker container abababababab"
