"""The SDK's surface, in this process: what log() accepts and refuses, files, marks, runs."""

from __future__ import annotations

import argparse
import collections
import enum
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from edgescope_tracing import Event, Metrics, RunEnd, RunStart
from sdkutil import of, read, trace_files, values

import edgescope
from edgescope.sdk import _run as _sdk


def test_public_surface_is_what_we_meant() -> None:
    assert edgescope.__all__ == ["Run", "__version__", "finish", "init", "log", "mark"]
    for name in edgescope.__all__:
        assert hasattr(edgescope, name)


def test_a_run_in_a_file_holds_what_was_logged(
    sdk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = edgescope.init(name="unit", config={"lr": 3e-4, "layers": [4, 8]}, tags=["a", "b"])
    err = capsys.readouterr().err
    assert run.path is not None and run.collector is None
    assert re.fullmatch(r"edgescope: recording run 'unit' to \S+unit-\d{8}-\d{6}-\w{8}\.est\n", err)
    assert str(Path(err.split(" to ")[1].strip()).resolve()) == str(run.path.resolve())
    for i in range(100):
        edgescope.log({"loss": 1.0 / (i + 1), "lr": 3e-4}, step=i)
    edgescope.mark("warm-up done")
    edgescope.log({"acc": 1})  # step 100: after the last one
    edgescope.finish()
    assert run.finished
    recs = read(run.path)
    start = of(recs, RunStart)[0]
    assert (start.name, start.pid, start.run) == ("unit", os.getpid(), 0)
    assert start.config == {"lr": 3e-4, "layers": [4, 8]} and start.tags == ("a", "b")
    assert start.run_id == run.run_id and start.device["python"]
    assert values(recs, "loss") == [(i, 1.0 / (i + 1)) for i in range(100)]
    assert values(recs, "acc") == [(100, 1.0)]
    marks = [e for e in of(recs, Event) if e.kind == "mark"]
    assert [m.message for m in marks] == ["warm-up done"]
    assert of(recs, RunEnd) == [RunEnd(0, None, 0, of(recs, RunEnd)[0].t_us, recs[-1].seq)]
    times = [t for m in of(recs, Metrics) for t in m.times_us]
    assert start.t_us <= min(times) and max(times) <= of(recs, RunEnd)[0].t_us


def test_numpy_scalars_and_0d_arrays_are_stored_exactly(sdk: Path) -> None:
    with edgescope.init(name="np") as run:
        edgescope.log(
            {
                "f32": np.float32(0.1),
                "f64": np.float64(0.1),
                "i64": np.int64(-7),
                "u8": np.uint8(200),
                "b": np.bool_(True),
                "a0": np.array(2.5),
                "big": 2**53,
                "t": True,
            },
            step=np.int64(3),
        )
    recs = read(run.path)  # type: ignore[arg-type]
    got = {m.key: (m.steps, m.values) for m in of(recs, Metrics)}
    assert got["f32"] == ((3,), (float(np.float32(0.1)),))
    assert got["f64"] == ((3,), (0.1,))
    assert got["i64"] == ((3,), (-7.0,))
    assert got["u8"] == ((3,), (200.0,))
    assert got["b"] == ((3,), (1.0,))
    assert got["a0"] == ((3,), (2.5,))
    assert got["big"] == ((3,), (float(2**53),))
    assert got["t"] == ((3,), (1.0,))
    assert of(recs, RunEnd)[0].exit_code == 0


def test_non_finite_values_are_kept(sdk: Path) -> None:
    with edgescope.init(name="nan") as run:
        edgescope.log({"loss": float("nan")}, step=0)
        edgescope.log({"loss": np.float32("inf")}, step=1)
    got = values(read(run.path), "loss")  # type: ignore[arg-type]
    assert math.isnan(got[0][1]) and got[1] == (1, math.inf)


@pytest.mark.parametrize(
    ("metrics", "step", "error", "words"),
    [
        ({"loss": "0.5"}, None, TypeError, "value of 'loss' is a str"),
        ({"loss": None}, None, TypeError, "value of 'loss' is a NoneType"),
        ({"loss": [1.0]}, None, TypeError, "value of 'loss' is a list"),
        ({"loss": 1 + 2j}, None, TypeError, "value of 'loss' is a complex"),
        ({"loss": np.zeros(3)}, None, ValueError, "array of shape (3,)"),
        ({"loss": 2**53 + 1}, None, ValueError, "cannot hold exactly"),
        ({3: 1.0}, None, TypeError, "metric names must be strings, got int 3"),
        ({"": 1.0}, None, ValueError, "metric name is empty"),
        ({"x" * 201: 1.0}, None, ValueError, "201 characters"),
        ([("loss", 1.0)], None, TypeError, "metrics must be a dict"),
        (0.5, None, TypeError, "metrics must be a dict"),
        ({"loss": 1.0}, -1, ValueError, "step must be 0 or more"),
        ({"loss": 1.0}, 1.5, TypeError, "step must be an integer, got float"),
        ({"loss": 1.0}, "3", TypeError, "step must be an integer, got str"),
        ({"loss": 1.0}, True, TypeError, "step must be an integer, got bool"),
        ({"loss": 1.0}, 2**62, ValueError, "too large"),
    ],
)
def test_bad_arguments_fail_at_the_call(
    sdk: Path, metrics: object, step: object, error: type[Exception], words: str
) -> None:
    run = edgescope.init(name="bad")
    edgescope.log({"loss": 0.25}, step=0)
    with pytest.raises(error) as info:
        edgescope.log(metrics, step=step)  # type: ignore[arg-type]
    assert words in str(info.value)
    edgescope.log({"loss": 0.5})  # the run goes on, the bad call left no trace
    edgescope.finish()
    assert values(read(run.path), "loss") == [(0, 0.25), (1, 0.5)]  # type: ignore[arg-type]


def test_too_many_metric_names_is_a_value_error(sdk: Path) -> None:
    edgescope.init(name="names")
    edgescope.log({f"m{i}": 1.0 for i in range(10_000)})
    with pytest.raises(ValueError, match="at most 10000 distinct names"):
        edgescope.log({"one-more": 1.0})


def test_the_logged_dict_is_copied(sdk: Path) -> None:
    with edgescope.init(name="copy") as run:
        d = {"loss": 1.0}
        edgescope.log(d, step=0)
        d["loss"] = 2.0
        edgescope.log(collections.OrderedDict(d), step=1)
        d["loss"] = 3.0
    assert values(read(run.path), "loss") == [(0, 1.0), (1, 2.0)]  # type: ignore[arg-type]


def test_without_a_run_log_and_mark_say_so(sdk: Path) -> None:
    with pytest.raises(RuntimeError, match=r"call edgescope.init\(\) first"):
        edgescope.log({"loss": 1.0})
    with pytest.raises(RuntimeError, match=r"call edgescope.init\(\) first"):
        edgescope.mark("x")
    run = edgescope.init(name="done")
    run.finish()
    with pytest.raises(RuntimeError, match="no run is active"):
        edgescope.log({"loss": 1.0})
    with pytest.raises(RuntimeError, match="has finished"):
        run.log({"loss": 1.0})
    run.finish()  # idempotent
    edgescope.finish()  # no run: no-op


def test_init_checks_its_arguments(sdk: Path) -> None:
    with pytest.raises(TypeError, match="config must be a dict"):
        edgescope.init(config=[1, 2])
    with pytest.raises(TypeError, match="tags must be a list of strings"):
        edgescope.init(tags="abc")
    with pytest.raises(TypeError, match="tags must be strings"):
        edgescope.init(tags=["a", 1])
    with pytest.raises(TypeError, match="name must be a string"):
        edgescope.init(name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flush_interval"):
        edgescope.init(flush_interval=0)
    with pytest.raises(ValueError, match="buffer_size"):
        edgescope.init(buffer_size=1)
    with pytest.raises(ValueError, match="profile_hz"):
        edgescope.init(profile=True, profile_hz=0)
    assert not trace_files(sdk), "a refused init leaves no file behind"


def test_config_from_argparse_numpy_and_paths(sdk: Path) -> None:
    ns = argparse.Namespace(lr=np.float32(0.5), out=Path("/tmp/x"), n=np.int64(3), big=2**70)
    with edgescope.init(name="cfg", config=ns) as run:
        pass
    start = of(read(run.path), RunStart)[0]  # type: ignore[arg-type]
    assert start.config == {"lr": 0.5, "out": "/tmp/x", "n": 3, "big": str(2**70)}


def test_context_manager_records_exceptions_and_exit_codes(sdk: Path) -> None:
    with pytest.raises(ZeroDivisionError), edgescope.init(name="boom") as run:
        edgescope.log({"loss": 1.0})
        1 / 0  # noqa: B018
    recs = read(run.path)  # type: ignore[arg-type]
    assert of(recs, RunEnd)[0].exit_code == 1
    ev = [e for e in of(recs, Event) if e.kind == "exception"]
    assert len(ev) == 1 and ev[0].severity == 2
    assert ev[0].message == "ZeroDivisionError: division by zero"
    assert "1 / 0" in ev[0].detail["traceback"]

    with pytest.raises(SystemExit), edgescope.init(name="exit3") as run:
        raise SystemExit(3)
    assert of(read(run.path), RunEnd)[0].exit_code == 3  # type: ignore[arg-type]


def test_a_second_init_finishes_the_first(sdk: Path) -> None:
    a = edgescope.init(name="a")
    edgescope.log({"x": 1.0})
    b = edgescope.init(name="b")
    edgescope.log({"x": 2.0})
    edgescope.finish()
    assert a.finished and b.finished and a.path != b.path
    assert values(read(a.path), "x") == [(0, 1.0)]  # type: ignore[arg-type]
    assert values(read(b.path), "x") == [(0, 2.0)]  # type: ignore[arg-type]


def test_a_full_buffer_makes_the_caller_ship_and_keeps_everything(sdk: Path) -> None:
    run = edgescope.init(name="full", buffer_size=16)
    n = 20_000
    for i in range(n):
        edgescope.log({"loss": float(i), "lr": 0.1}, step=i)
    assert run.dropped == 0
    edgescope.finish()
    recs = read(run.path)  # type: ignore[arg-type]
    end = of(recs, RunEnd)[0]
    assert end.dropped == 0
    assert values(recs, "loss") == [(i, float(i)) for i in range(n)]
    assert values(recs, "lr") == [(i, 0.1) for i in range(n)]


def test_an_unwritable_directory_costs_the_run_not_the_training(
    sdk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = sdk / "file"
    blocker.write_text("")
    run = edgescope.init(name="nowhere", dir=blocker / "runs")
    assert "this run is not recorded" in capsys.readouterr().err
    for i in range(10):
        edgescope.log({"loss": 1.0}, step=i)
    edgescope.mark("m")
    edgescope.finish()
    assert run.path is None and run.dropped == 11


def test_run_object_methods_match_the_module_functions(sdk: Path) -> None:
    run = edgescope.init(name="obj")
    run.log({"loss": 0.5}, step=5)
    run.mark("here")
    run.finish(0)
    recs = read(run.path)  # type: ignore[arg-type]
    assert values(recs, "loss") == [(5, 0.5)]
    assert [e.message for e in of(recs, Event)] == ["here"]
    assert of(recs, RunEnd)[0].exit_code == 0
    with pytest.raises(TypeError, match="exit_code"):
        edgescope.init(name="x").finish("ok")  # type: ignore[arg-type]


def test_mark_checks_its_text(sdk: Path) -> None:
    edgescope.init(name="marks")
    with pytest.raises(TypeError, match="text must be a string"):
        edgescope.mark(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 4096"):
        edgescope.mark("x" * 5000)


def test_flush_interval_from_the_environment(
    sdk: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGESCOPE_FLUSH_INTERVAL", "0.25")
    run = edgescope.init(name="env")
    assert run._shipper.flush_interval == 0.25
    capfd.readouterr()
    # A bad setting outside the script must not stop the training: warn, use the default.
    for bad in ("abc", "nan", "-1", "1e9"):
        monkeypatch.setenv("EDGESCOPE_FLUSH_INTERVAL", bad)
        run = edgescope.init(name="env2")
        assert run._shipper.flush_interval == _sdk.DEFAULT_FLUSH_INTERVAL
        err = capfd.readouterr().err
        assert f"EDGESCOPE_FLUSH_INTERVAL={bad!r} is not a number from 0.01 to 60; using 0.5" in err
        edgescope.log({"x": 1.0})
        edgescope.finish()
        assert values(read(run.path), "x") == [(0, 1.0)]  # type: ignore[arg-type]


def test_values_around_marks_in_one_batch_all_arrive(sdk: Path) -> None:
    with edgescope.init(name="marks-between", flush_interval=5) as run:
        for phase in range(4):
            for i in range(100):
                edgescope.log({"loss": float(phase * 100 + i), "lr": 0.1}, step=phase * 100 + i)
            edgescope.mark(f"phase {phase} done")
    recs = read(run.path)  # type: ignore[arg-type]
    assert values(recs, "loss") == [(i, float(i)) for i in range(400)]
    assert len(values(recs, "lr")) == 400
    assert [e.message for e in of(recs, Event)] == [f"phase {p} done" for p in range(4)]


class _Level(enum.IntEnum):
    HIGH = 3


def test_one_value_calls_check_every_value_like_any_other(sdk: Path) -> None:
    # log() takes a float under the name of the last one-value call without copying the
    # dict; every other value, and every other name, must still go through the full checks.
    with edgescope.init(name="one") as run:
        edgescope.log({"loss": 0.5}, step=0)
        edgescope.log({"loss": np.float64(0.25)}, step=1)  # a float subclass
        edgescope.log({"loss": True}, step=2)
        edgescope.log({"loss": 3}, step=3)
        edgescope.log({"loss": _Level.HIGH}, step=4)  # an int subclass
        edgescope.log({"loss": float("nan")}, step=5)
        edgescope.log({"loss": np.array(1.5)}, step=6)
        with pytest.raises(TypeError, match="value of 'loss' is a str"):
            edgescope.log({"loss": "0.5"}, step=7)
        with pytest.raises(ValueError, match="cannot hold exactly"):
            edgescope.log({"loss": 2**53 + 1})
        with pytest.raises(ValueError, match="metric name is empty"):
            edgescope.log({"": 0.5})
        with pytest.raises(TypeError, match="metric names must be strings"):
            edgescope.log({None: 0.5})
        edgescope.log({"acc": 0.75})  # another name: the step after the last one, 7
        edgescope.log({"loss": 0.125})  # back to the first: 8
        edgescope.log({"loss": 0.5, "acc": 1.0}, step=9)
        edgescope.log({"loss": 1})  # the name reused with an int: 10
        d = {"loss": 2.0}
        edgescope.log(d, step=11)
        d["loss"] = 4.0  # the caller's dict reused: the call kept 2.0
    recs = read(run.path)  # type: ignore[arg-type]
    loss = values(recs, "loss")
    assert [s for s, _ in loss] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert math.isnan(loss[5][1])
    del loss[5]
    assert [v for _, v in loss] == [0.5, 0.25, 1.0, 3.0, 3.0, 1.5, 0.125, 0.5, 1.0, 2.0]
    assert all(type(v) is float for m in of(recs, Metrics) for v in m.values)
    assert values(recs, "acc") == [(7, 0.75), (9, 1.0)]


def test_a_step_after_the_largest_is_refused(sdk: Path) -> None:
    edgescope.init(name="last-step")
    edgescope.log({"loss": 1.0}, step=2**62 - 1)
    with pytest.raises(ValueError, match="too large"):
        edgescope.log({"loss": 1.0})
    with pytest.raises(ValueError, match="too large"):
        edgescope.log({"loss": 1.0, "lr": 0.1})


def test_a_full_buffer_keeps_one_value_calls_and_marks_in_order(sdk: Path) -> None:
    run = edgescope.init(name="full-one", buffer_size=16)
    n = 20_000
    for i in range(n):
        edgescope.log({"loss": float(i)}, step=i)
        if i % 1000 == 999:
            edgescope.mark(f"after {i}")
    edgescope.finish()
    recs = read(run.path)  # type: ignore[arg-type]
    assert of(recs, RunEnd)[0].dropped == 0
    assert values(recs, "loss") == [(i, float(i)) for i in range(n)]
    marks = [e for e in of(recs, Event) if e.kind == "mark"]
    assert [m.message for m in marks] == [f"after {i}" for i in range(999, n, 1000)]
    # Each mark comes after the values logged before it.
    seen = 0
    for r in recs:
        if isinstance(r, Metrics):
            seen += len(r.values)
        elif isinstance(r, Event) and r.kind == "mark":
            assert seen >= int(r.message.split()[1]) + 1
