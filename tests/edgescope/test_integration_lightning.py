"""The Lightning logger with the real Lightning: a tiny module on random tensors, read back.

Lightning's own ``CSVLogger`` runs beside ours in the same ``fit`` and is the reference for
what the Trainer logged (values and steps). Skipped only where Lightning is not installed.
"""

from __future__ import annotations

import csv
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import Event, RunEnd, RunStart
from sdkutil import of, read, sdk_env, trace_files, values

pl = pytest.importorskip(
    "lightning.pytorch",
    reason="PyTorch Lightning is not installed (pip install 'edgescope[lightning]')",
)
from lightning.fabric.loggers.logger import _DummyExperiment  # noqa: E402
from lightning.fabric.utilities.rank_zero import rank_zero_only  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from tiny_lightning import Tiny, loader, trainer  # noqa: E402

from edgescope.integrations.lightning import EdgescopeLogger  # noqa: E402
from edgescope.sdk._run import _default_name  # noqa: E402

pytestmark = [
    # Lightning's own deprecation notices about torch's pytree API, and its hints to use more
    # workers on a tiny CPU loader: theirs, not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]


def _csv(path: Path, key: str) -> list[tuple[int, float]]:
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_fit_and_validate_go_into_one_run_with_the_hyperparameters(sdk: Path) -> None:
    logger = EdgescopeLogger(name="tiny", config={"data": "random"})
    assert logger.version is None and logger.name == "tiny"
    reference = CSVLogger(sdk / "csv", name="ref")
    tr = trainer([logger, reference], max_epochs=2)
    tr.fit(Tiny(lr=0.05, hidden=8), loader(), loader())
    tr.validate(Tiny(lr=0.05, hidden=8), loader())  # the same hyperparameters: no event
    version = logger.version
    assert isinstance(version, str)
    logger.finish()

    (path,) = trace_files(sdk)
    records = read(path)
    (start,) = of(records, RunStart)
    assert start.run_id == version and start.name == "tiny"
    assert start.config == {"data": "random", "lr": 0.05, "hidden": 8}
    assert "lightning" in start.tags

    # every value at the step Lightning gave, as its own CSV logger wrote them
    csv_path = Path(reference.log_dir) / "metrics.csv"
    for key in ("train_loss", "val_loss", "epoch"):
        ours = values(records, key)
        theirs = _csv(csv_path, key)
        assert len(ours) == len(theirs) > 0, key
        for (s1, v1), (s2, v2) in zip(ours, theirs, strict=True):
            assert s1 == s2 and math.isclose(v1, v2, rel_tol=1e-6), (key, s1, v1, s2, v2)
    assert [s for s, _ in values(records, "train_loss")] == list(range(16))  # 8 batches, 2 epochs

    events = of(records, Event)
    assert [e.message for e in events if e.kind == "mark"] == ["lightning: success"] * 2
    assert not [e for e in events if e.kind == "config"]
    (end,) = of(records, RunEnd)
    assert end.dropped == 0 and end.exit_code == 0  # the last Trainer call succeeded


def test_hyperparameters_after_the_start_become_a_config_event(sdk: Path) -> None:
    logger = EdgescopeLogger()
    logger.experiment.mark("before fit")  # starts the run: no hyperparameters yet
    trainer(logger, max_steps=2).fit(Tiny(lr=0.2, hidden=4), loader())
    logger.finish()
    records = read(trace_files(sdk)[0])
    (start,) = of(records, RunStart)
    assert start.config == {} and start.name == _default_name()  # the SDK's: the script's
    (event,) = [e for e in of(records, Event) if e.kind == "config"]
    assert event.detail == {"lr": 0.2, "hidden": 4}
    assert next(e.message for e in of(records, Event) if e.kind == "mark") == "before fit"


def test_a_run_of_ones_own_is_recorded_into_and_left_open(sdk: Path) -> None:
    import edgescope

    run = edgescope.init(name="mine", config={"seed": 1})
    logger = EdgescopeLogger(run=run)
    trainer(logger, max_steps=3).fit(Tiny(), loader())
    logger.finish()  # not ours to finish
    assert not run.finished
    run.log({"after": 1.0})
    run.finish()
    records = read(trace_files(sdk)[0])
    assert of(records, RunStart)[0].config == {"seed": 1}
    assert [s for s, _ in values(records, "train_loss")] == [0, 1, 2]
    (event,) = [e for e in of(records, Event) if e.kind == "config"]
    assert event.detail == {"lr": 0.05, "hidden": 8}
    with pytest.raises(TypeError, match=r"edgescope\.Run"):
        EdgescopeLogger(run="mine")  # type: ignore[arg-type]


def test_a_fit_that_raises_is_marked_failed(sdk: Path) -> None:
    class Boom(Tiny):
        def training_step(self, batch: Any, i: int) -> Any:
            if i == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, i)

    logger = EdgescopeLogger(name="boom")
    with pytest.raises(RuntimeError, match="boom"):
        trainer(logger, max_epochs=1).fit(Boom(), loader())
    first = logger.version
    logger.finish()
    # after its run finished, the logger records into a new one (same name and config)
    trainer(logger, max_steps=1).fit(Tiny(), loader())
    assert logger.version not in (None, first)
    logger.finish()
    one, two = (read(p) for p in sorted(trace_files(sdk), key=os.path.getmtime))
    assert [s for s, _ in values(one, "train_loss")] == [0, 1]
    assert [e.message for e in of(one, Event) if e.kind == "mark"] == ["lightning: failed"]
    assert of(one, RunEnd)[0].exit_code == 1 and of(two, RunEnd)[0].exit_code == 0
    assert of(two, RunStart)[0].run_id == logger.version
    assert of(two, RunStart)[0].config == of(one, RunStart)[0].config == {"lr": 0.05, "hidden": 8}
    assert [s for s, _ in values(two, "train_loss")] == [0]


def test_ranks_above_zero_record_nothing(sdk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = EdgescopeLogger(name="rank1")
    assert isinstance(logger.experiment, _DummyExperiment)
    logger.log_hyperparams({"lr": 1.0})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert logger.version is None
    assert trace_files(sdk) == []


def test_a_pickled_logger_leaves_its_run_behind(sdk: Path) -> None:
    logger = EdgescopeLogger(name="here")
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy.version is None and logger.version is not None
    logger.finish()


@pytest.mark.slow
def test_under_ddp_only_rank_zero_records(tmp_path: Path) -> None:
    """Two real processes (``ddp_spawn``, gloo on CPU) train; one run holds rank zero's values."""
    (tmp_path / "tiny.py").write_text((Path(__file__).parent / "tiny_lightning.py").read_text())
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            """
            import torch
            from tiny import Tiny, loader, trainer
            from edgescope.integrations.lightning import EdgescopeLogger

            if __name__ == "__main__":
                torch.set_num_threads(1)
                logger = EdgescopeLogger(name="ddp")
                trainer(logger, max_epochs=1, devices=2, strategy="ddp_spawn").fit(Tiny(), loader())
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "job.py"],
        cwd=tmp_path,
        env=sdk_env(tmp_path, PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = trace_files(tmp_path)  # rank one started no run
    records = read(path)
    # 64 samples, batches of 8, split between two ranks: rank zero trains 4 steps
    assert [s for s, _ in values(records, "train_loss")] == [0, 1, 2, 3]
    assert of(records, RunStart)[0].config == {"lr": 0.05, "hidden": 8}
    assert proc.stderr.count("edgescope: recording run") == 1
