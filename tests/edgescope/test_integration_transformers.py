"""The Hugging Face callback with the real Trainer: a one-layer GPT-2 built from a config
(16-dim embeddings, nothing downloaded) trains a few steps on random tokens; the trace is read
back and compared with the Trainer's own ``state.log_history``. Skipped only where Transformers
(or the accelerate it needs for the Trainer) is not installed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import Event, RunEnd, RunStart
from sdkutil import of, read, trace_files, values

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
transformers = pytest.importorskip(
    "transformers",
    reason="Hugging Face Transformers is not installed (pip install 'edgescope[transformers]')",
)
pytest.importorskip(
    "accelerate",
    reason="accelerate, which the Trainer needs, is not installed "
    "(pip install 'edgescope[transformers]')",
)
import torch  # noqa: E402  (Transformers' Trainer needs it)

from edgescope.integrations.transformers import EdgescopeCallback  # noqa: E402

pytestmark = [
    # the Trainer's notices about its own defaults and torch's APIs: theirs, not ours
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _trainer(tmp: Path, callback: Any, epochs: int = 2) -> Any:
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    tokens = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": t, "labels": t} for t in tokens]
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=1e-3,
        logging_steps=1,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data[:16], callbacks=[callback]
    )


def test_a_trainer_run_is_recorded_as_the_trainer_logged_it(
    sdk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    callback = EdgescopeCallback(name="gpt2-tiny", config={"data": "random tokens"})
    trainer = _trainer(sdk, callback)
    trainer.train()
    assert callback.run is not None and callback.run.finished

    (path,) = trace_files(sdk)
    records = read(path)
    (start,) = of(records, RunStart)
    assert start.name == "gpt2-tiny" and "transformers" in start.tags
    cfg = start.config
    assert cfg["learning_rate"] == 1e-3 and cfg["per_device_train_batch_size"] == 8
    assert cfg["num_train_epochs"] == 2 and cfg["data"] == "random tokens"
    assert cfg["model_config"]["n_embd"] == 16 and cfg["model_config"]["n_layer"] == 1

    # every number the Trainer logged, at its global step: its own log_history is the reference
    history = trainer.state.log_history
    keys = {k for h in history for k in h if k != "step"}
    assert {"loss", "learning_rate", "grad_norm", "eval_loss", "train_loss"} <= keys
    for key in keys:
        theirs = [(h["step"], float(h[key])) for h in history if key in h]
        ours = values(records, key)
        assert len(ours) == len(theirs), key
        for (s1, v1), (s2, v2) in zip(ours, theirs, strict=True):
            assert s1 == s2 and math.isclose(v1, v2, rel_tol=1e-6), (key, s1, v1, s2, v2)
    assert [s for s, _ in values(records, "loss")] == list(range(1, 9))  # 4 steps an epoch

    marks = [e.message for e in of(records, Event) if e.kind == "mark"]
    assert marks == ["epoch 1 done", "epoch 2 done", "training done"]
    (end,) = of(records, RunEnd)
    assert end.exit_code == 0 and end.dropped == 0
    assert "edgescope: recording run 'gpt2-tiny'" in capfd.readouterr().err


def test_a_value_that_is_not_a_number_is_said_and_evaluation_after_training_is_kept(
    sdk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    callback = EdgescopeCallback(name="later")
    trainer = _trainer(sdk, callback, epochs=1)
    trainer.train()
    trainer.log({"note": "a string", "extra": 2.5})  # through on_log, like any log
    trainer.log({"note": "again"})
    metrics = trainer.evaluate()
    callback.run.finish()  # type: ignore[union-attr]
    err = capfd.readouterr().err
    assert err.count("not recording 'note', which is not a number") == 1

    first, second = (read(p) for p in sorted(trace_files(sdk), key=os.path.getmtime))
    assert of(first, RunEnd)[0].exit_code == 0  # finished at the end of training
    # what came after training is a run of its own, with the same configuration
    assert of(second, RunStart)[0].config == of(first, RunStart)[0].config
    assert values(second, "extra") == [(4, 2.5)]
    assert values(second, "eval_loss") == [(4, pytest.approx(metrics["eval_loss"], rel=1e-6))]
    assert values(second, "note") == []


def test_a_run_of_ones_own_gets_the_arguments_as_a_config_event(sdk: Path) -> None:
    import edgescope

    run = edgescope.init(name="mine", config={"seed": 1})
    callback = EdgescopeCallback(run=run)
    _trainer(sdk, callback, epochs=1).train()
    assert not run.finished
    run.finish()
    records = read(trace_files(sdk)[0])
    assert of(records, RunStart)[0].config == {"seed": 1}
    (event,) = [e for e in of(records, Event) if e.kind == "config"]
    assert event.detail["learning_rate"] == 1e-3
    assert event.detail["model_config"]["n_embd"] == 16
    assert len(values(records, "loss")) == 4
