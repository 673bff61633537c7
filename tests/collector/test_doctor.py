"""``edgescope doctor``: what works here and why the rest doesn't, for people and scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from edgescope_collector.stacks import backend_problem

from edgescope.cli import main

if TYPE_CHECKING:
    from conftest import Board


def test_json_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    samplers = {s["name"]: s for s in d["samplers"]}
    assert list(samplers)[:2] == ["system", "process"]
    assert set(samplers) == {"system", "process", "thermal", "power", "jetson_gpu", "nvml"}
    assert samplers["system"]["ok"] and samplers["system"]["records"] == 1
    # The doctor's own process stands in for a run.
    assert samplers["process"]["ok"] and samplers["process"]["records"] >= 1
    for s in samplers.values():
        assert s["ok"] or (isinstance(s["error"], str) and s["error"])
    backends = {b["name"]: b for b in d["stack_backends"]}
    assert list(backends) == ["python", "perf", "bpftrace"]
    assert backends["python"]["ok"]
    for name in ("perf", "bpftrace"):
        b = backends[name]
        assert b["problem"] == backend_problem(name)
        assert b["ok"] is (b["problem"] is None)
        if b["ok"]:
            assert name in b["version"]
    assert any("cgroup" in n for n in d["notes"])
    assert d["roots"] == {"procfs": "/proc", "sysfs": "/sys"}


def test_human_report_for_a_recorded_jetson(
    board: Callable[[str], Board], capsys: pytest.CaptureFixture[str]
) -> None:
    b = board("jetson-orin")
    code = main(
        ["doctor", "--procfs", str(b.roots.procfs), "--sysfs", str(b.roots.sysfs), "--no-stacks"]
    )
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("NVIDIA Jetson Orin Nano Developer Kit)")
    assert any(
        ln.startswith("  ok   thermal     thermal_zones, cooling_devices, cpufreq,") for ln in lines
    )
    assert any(ln.startswith("  ok   jetson_gpu  1 records (") for ln in lines)
    assert any(ln.startswith(("  --   nvml        ", "  ok   nvml        ")) for ln in lines)
    assert "  x86_thermal_throttle  no thermal_throttle counters under " in out
    assert "stack backends" not in out
    assert "cgroup v1 memory controller" in out


def test_a_board_with_nothing_says_why(
    board: Callable[[str], Board], capsys: pytest.CaptureFixture[str]
) -> None:
    b = board("rpi4")
    b.remove("sys/class")
    b.remove("sys/devices")
    b.remove("proc/pressure")
    assert (
        main(
            [
                "doctor",
                "--json",
                "--no-stacks",
                "--procfs",
                str(b.roots.procfs),
                "--sysfs",
                str(b.roots.sysfs),
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    thermal = next(s for s in d["samplers"] if s["name"] == "thermal")
    assert not thermal["ok"] and "none of its sources" in thermal["error"]
    assert d["skipped"]["thermal_zones"].startswith("no thermal zones under ")
    assert "no PSI files" in d["skipped"]["psi"]
    assert d["stack_backends"] == []


def test_bad_root_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--sysfs", "/no/such/sys"]) == 2
    err = capsys.readouterr().err
    assert err == "edgescope: --sysfs /no/such/sys: no such directory\n"


def test_runs_as_a_command_and_imports_stay_lean() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgescope", "doctor", "--no-stacks"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("edgescope doctor: ") and out.stderr == ""
    probe = (
        "import sys, edgescope.cli.doctor, edgescope_collector.samplers;"
        "print(sorted(m for m in ('psutil', 'edgescope_collector.doctor', 'pynvml')"
        " if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]"
