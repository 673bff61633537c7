"""The PyTorch demo job, and the SDK with real torch tensors (skipped where torch is missing)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from edgescope_tracing import Metrics, RunEnd
from sdkutil import of, read
from test_demo import _edgescope, check_demo_trace

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is not installed (pip install torch): the PyTorch demo job and the SDK's "
    "0-d tensor checks need it",
)

import edgescope  # noqa: E402
from edgescope.demo import job as _demo_job  # noqa: E402
from edgescope.demo import torch_job as _demo_torch  # noqa: E402

DURATION = 6.0
LEAK_MB = 64.0
"""Above the allocator's own churn (some 15 MB at the CPU-heavy phase, as RSS sees it)."""


@pytest.fixture
def one_thread() -> Iterator[None]:
    """As the job's main() sets it; this process's own setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(_demo_torch.THREADS)
    yield
    torch.set_num_threads(before)


def test_the_torch_job_is_the_numpy_job_in_torch(one_thread: None) -> None:
    # same data, initial weights and batches: the first steps' losses agree to rounding
    got: dict[str, list[float]] = {"numpy": [], "torch": []}
    _demo_job.train(0.5, lambda v, s: got["numpy"].append(v.get("loss", 0.0)), lambda t: None)
    rows: list[dict[str, object]] = []
    marks: list[str] = []
    result = _demo_torch.train(1.5, lambda v, s: rows.append(dict(v)), marks.append, leak_mb=8)
    # the steps a loaded machine gets through in 1.5 s: at least two, up to five compared
    trained = [r for r in rows if "loss" in r][:5]
    assert len(trained) >= 2, rows
    got["torch"] = [float(r["loss"].item()) for r in trained]  # type: ignore[attr-defined]
    n = len(trained)
    assert got["torch"] == pytest.approx(got["numpy"][:n], rel=1e-9)

    # it logs the same names, with loss, grad_norm and accuracy as torch's 0-d tensors
    assert [m.split(":")[0] for m in marks] == [f"phase {p.name}" for p in _demo_job.PHASES]
    assert list(rows[0]) == ["loss", "lr", "step_time", "grad_norm", "held_mb", "accuracy"]
    assert set(rows[1]) == {"loss", "lr", "step_time", "grad_norm", "held_mb"}  # no GPU here
    for key in ("loss", "grad_norm", "accuracy"):
        value = rows[0][key]
        assert isinstance(value, torch.Tensor) and value.shape == () and not value.requires_grad
    *steps, last = rows
    assert list(last) == ["accuracy"]  # the held-out accuracy at the end
    assert all(isinstance(r[k], float) for r in steps for k in ("lr", "step_time", "held_mb"))
    lrs = sorted({r["lr"] for r in steps})  # type: ignore[type-var]
    assert lrs == [_demo_job.BASE_LR, 15 * _demo_job.BASE_LR]
    assert 4 < result.peak_held_mb <= 8 and steps[-1]["held_mb"] == 0
    assert result.steps == len(steps) > 100


def test_demo_runs_the_torch_job_when_torch_is_installed(tmp_path: Path) -> None:
    out = tmp_path / "demo.est"
    # no --framework: auto picks PyTorch, and the first line says so
    proc: subprocess.CompletedProcess[str] = _edgescope(
        "demo", "--duration", str(DURATION), "--leak-mb", str(LEAK_MB), "-o", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "edgescope demo: the training job is a PyTorch MLP "
        "(torch is installed; --framework numpy for the NumPy one)"
    )
    assert f"demo job (PyTorch {torch.__version__} on cpu): " in proc.stderr
    start = check_demo_trace(proc, out, LEAK_MB)
    assert "torch" in start.tags
    assert start.config["framework"] == f"PyTorch {torch.__version__}"
    assert start.config["device"] == "cpu"


def test_log_reads_real_0d_tensors_exactly(sdk: Path) -> None:
    w = torch.tensor([0.25, 0.5], dtype=torch.float64, requires_grad=True)
    with edgescope.init(name="torch") as run:
        edgescope.log(
            {
                "f32": torch.tensor(0.1),
                "f64": torch.tensor(0.1, dtype=torch.float64),
                "i64": torch.tensor(-7),
                "u8": torch.tensor(200, dtype=torch.uint8),
                "b": torch.tensor(True),
                "grad": (w * w).sum(),  # requires_grad, with a grad_fn
                "leaf": torch.tensor(1.5, requires_grad=True),
                "f16": torch.tensor(0.1, dtype=torch.float16),
            },
            step=torch.tensor(3),
        )
    recs = read(run.path)  # type: ignore[arg-type]
    got = {m.key: (m.steps, m.values) for m in of(recs, Metrics)}
    assert got == {
        "f32": ((3,), (float(np.float32(0.1)),)),
        "f64": ((3,), (0.1,)),
        "i64": ((3,), (-7.0,)),
        "u8": ((3,), (200.0,)),
        "b": ((3,), (1.0,)),
        "grad": ((3,), (0.3125,)),
        "leaf": ((3,), (1.5,)),
        "f16": ((3,), (float(np.float16(0.1)),)),
    }
    assert w.grad is None  # reading a value did not run autograd
    assert of(recs, RunEnd)[0].exit_code == 0


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (torch.tensor([0.5]), "(1,)"),
        (torch.zeros(2, 3), "(2, 3)"),
        (torch.tensor([]), "(0,)"),
        (torch.tensor([[1.0]], requires_grad=True), "(1, 1)"),
    ],
)
def test_log_refuses_tensors_that_are_not_0d_at_the_call(
    sdk: Path, value: object, shape: str
) -> None:
    # as for numpy arrays: a ValueError naming the key and the shape, and nothing recorded
    with edgescope.init(name="bad") as run:
        edgescope.log({"loss": 0.25}, step=0)
        with pytest.raises(ValueError, match=r"the value of 'loss' is an array of shape") as info:
            edgescope.log({"loss": value, "lr": 0.1}, step=1)
        assert f"shape {shape}; log takes scalars" in str(info.value)
        edgescope.log({"loss": 0.125}, step=2)
    recs = read(run.path)  # type: ignore[arg-type]
    assert [(m.key, m.steps, m.values) for m in of(recs, Metrics)] == [
        ("loss", (0, 2), (0.25, 0.125))
    ]
