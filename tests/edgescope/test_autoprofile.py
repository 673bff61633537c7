"""``record --profile python`` on programs that never call ``edgescope.init()``.

Real ``record`` runs of real child Pythons: the bootstrap on CMD's ``PYTHONPATH`` starts a
profiled run in each; where none can, the trace holds an event that says why, and ``inspect``
shows it on its ``stacks`` line.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgescope_tracing import Event, RunStart, StackSamples
from sdkutil import PYTHON, of, read, script, sdk_env

PLAIN = """
import time

def train_step():
    end = time.thread_time() + 0.005
    while time.thread_time() < end:
        pass

t = time.monotonic()
while time.monotonic() - t < 0.8:
    train_step()
"""


def record(tmp: Path, *cmd: str, env: dict[str, str] | None = None) -> list[object]:
    out = tmp / "trace.est"
    r = subprocess.run(
        [PYTHON, "-m", "edgescope", "record", "-o", str(out), "--profile", "python", "--", *cmd],
        env=env or sdk_env(tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return list(read(out))


def inspect(tmp: Path) -> str:
    return subprocess.run(
        [PYTHON, "-m", "edgescope", "inspect", str(tmp / "trace.est")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_a_script_that_never_imports_edgescope_is_profiled(tmp_path: Path) -> None:
    job = script(tmp_path, PLAIN, "plain.py")
    recs = record(tmp_path, PYTHON, str(job))
    runs = {r.name: r for r in of(recs, RunStart)}  # type: ignore[arg-type]
    assert "plain.py" in runs and "autoprofile" in runs["plain.py"].tags
    stacks = of(recs, StackSamples)  # type: ignore[arg-type]
    leaf = [st[-1] for s in stacks for st, _ in s.samples]
    assert any(f.function == "train_step" and f.file == str(job) for f in leaf), leaf
    assert {s.backend for s in stacks} == {"python"}
    assert not [e for e in of(recs, Event) if "no_stacks" in e.detail]  # type: ignore[arg-type]


def test_the_sitecustomize_it_shadows_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    marker = tmp_path / "marker"
    (theirs / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    env = sdk_env(tmp_path, PYTHONPATH=str(theirs))
    recs = record(tmp_path, PYTHON, str(script(tmp_path, PLAIN, "plain.py")), env=env)
    assert marker.read_text() == "ran"
    assert of(recs, StackSamples)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cmd,why",
    [
        (["true"], "CMD started no Python that loaded the sampler (it runs no Python"),
        ([PYTHON, "-I", "-c", "pass"], "or one that ignores PYTHONPATH: -E, -I)"),
    ],
    ids=["not-python", "isolated-python"],
)
def test_no_stacks_is_an_event_and_inspect_says_why(
    tmp_path: Path, cmd: list[str], why: str
) -> None:
    recs = record(tmp_path, *cmd)
    assert not of(recs, StackSamples)  # type: ignore[arg-type]
    (event,) = [e for e in of(recs, Event) if "no_stacks" in e.detail]  # type: ignore[arg-type]
    assert event.severity == 1 and why in event.message
    assert event.message.startswith("--profile python: no Python stacks were recorded: ")
    lines = [ln for ln in inspect(tmp_path).splitlines() if ln.startswith("  stacks")]
    assert lines == [f"  stacks  {event.message}"]


def test_a_python_without_edgescope_is_named(tmp_path: Path) -> None:
    other = next(
        (
            p
            for p in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3")
            if p
            and Path(p).exists()
            and subprocess.run([p, "-c", "import edgescope"], capture_output=True).returncode
        ),
        None,
    )
    if other is None:
        pytest.skip("every python3 here can import edgescope: no Python without it to run")
    recs = record(tmp_path, other, "-c", "pass")
    (event,) = [e for e in of(recs, Event) if "no_stacks" in e.detail]  # type: ignore[arg-type]
    assert " could not start the sampler (ModuleNotFoundError: No module named 'edgescope')" in (
        event.message
    )


def test_record_perf_says_python_names_need_3_12(tmp_path: Path) -> None:
    from edgescope_collector.stacks import backend_problem

    problem = backend_problem("perf")
    if problem is not None:
        pytest.skip(f"perf cannot run here: {problem}")
    out = tmp_path / "trace.est"
    job = script(tmp_path, PLAIN, "plain.py")
    argv = ["record", "-o", str(out), "--profile", "perf", "--", PYTHON, str(job)]
    subprocess.run(
        [PYTHON, "-m", "edgescope", *argv],
        env=sdk_env(tmp_path),
        capture_output=True,
        timeout=60,
        check=True,
    )
    recs = read(out)
    notes = [e for e in of(recs, Event) if "stacks_note" in e.detail]  # type: ignore[arg-type]
    assert len(notes) == 1
    if sys.version_info < (3, 12):
        assert "perf can name Python functions only from Python 3.12 on" in notes[0].message
    stacks_lines = [ln for ln in inspect(tmp_path).splitlines() if ln.startswith("  stacks")]
    assert f"  stacks  {notes[0].detail['stacks_note']}" in stacks_lines


def _python_312() -> str | None:
    """A Python 3.12 or later that runs here (on PATH, or one of pyenv's), or None."""
    found = [shutil.which(f"python3.{minor}") for minor in range(12, 20)]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3.1?")))
    for p in found:
        if p and subprocess.run([p, "-c", "pass"], capture_output=True).returncode == 0:
            return p
    return None


def test_record_perf_names_python_functions_from_3_12(tmp_path: Path) -> None:
    from edgescope_collector.stacks import backend_problem

    problem = backend_problem("perf")
    if problem is not None:
        pytest.skip(f"perf cannot run here: {problem}")
    python = _python_312()
    if python is None:
        pytest.skip("no Python 3.12 or later here (perf names Python functions from 3.12)")
    out = tmp_path / "trace.est"
    job = script(tmp_path, PLAIN, "plain.py")
    argv = ["record", "-o", str(out), "--profile", "perf", "--", python, str(job)]
    subprocess.run(
        [PYTHON, "-m", "edgescope", *argv],
        env=sdk_env(tmp_path),
        capture_output=True,
        timeout=60,
        check=True,
    )
    recs = read(out)
    stacks = of(recs, StackSamples)  # type: ignore[arg-type]
    total = sum(n for s in stacks for _, n in s.samples)
    named = sum(
        n
        for s in stacks
        for st, n in s.samples
        if any(f.function.startswith("py::train_step:") for f in st)
    )
    # train_step is all the script does: nearly every sample is in it, named
    assert total and named >= total / 2, (named, total)
    notes = [e for e in of(recs, Event) if "stacks_note" in e.detail]  # type: ignore[arg-type]
    assert [e.message for e in notes] == [
        "--profile perf: perf stacks name Python functions (py::...): CMD's Python is "
        + subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    ]
