"""An SDK in a container's own pid namespace (issue #14): it says its pid there (1, 2, ...);
the collector samples the process it is on the collector's side, found by the socket's peer
credentials. Run with ``unshare --pid`` as a container runtime would; skipped where that needs
privileges this machine does not give."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from edgescope_tracing import ProcessSample, RunStart
from sdkutil import PYTHON, of, read, script, sdk_env

JOB = """
import os, time, edgescope
with edgescope.init(name="in-container", flush_interval=0.1):
    print("pid in its namespace", os.getpid(), flush=True)
    for i in range(100):
        edgescope.log({"loss": 1.0 / (i + 1)}, step=i)
        time.sleep(0.01)
"""


def test_an_sdk_in_its_own_pid_namespace_is_sampled_as_the_process_it_is_here(
    tmp_path: Path,
) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to give the job its own pid namespace")
    probe = subprocess.run([unshare, "--pid", "--fork", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {probe.stderr.strip()}")
    job = script(tmp_path, JOB)
    out = tmp_path / "ns.est"
    cmd = [unshare, "--pid", "--fork", PYTHON, str(job)]
    r = subprocess.run(
        [PYTHON, "-m", "edgescope", "record", "-o", str(out), "--interval", "0.1", "--", *cmd],
        env=sdk_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    inside = int(r.stdout.split()[-1])
    recs = read(out)
    sdk = next(s for s in of(recs, RunStart) if s.name == "in-container")
    record = next(s for s in of(recs, RunStart) if "record" in s.tags)
    assert inside <= 2 and sdk.pid != inside  # the collector's view, not the namespace's
    # The job is the child of unshare, sampled among the command's processes (a process is
    # sampled once, for the first run that has it): the same pid.
    under_record = {p.pid for p in of(recs, ProcessSample) if p.run == record.run and p.rss}
    assert sdk.pid in under_record
