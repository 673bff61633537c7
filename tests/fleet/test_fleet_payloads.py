"""The fleet's topics and payloads (edgescope_tracing.fleet): round trips, and hostile bytes on
every topic never raise anything but FleetPayloadError, in the archiver or the TUI's model."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from edgescope_tracing import (
    Event,
    GpuSample,
    Metrics,
    ProcessSample,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    ThermalSample,
    ThermalZone,
    TraceReader,
)
from edgescope_tracing.fleet import (
    Batch,
    Birth,
    Death,
    FleetPayloadError,
    SummaryFold,
    decode_batch,
    decode_birth,
    decode_death,
    decode_runs,
    decode_summary,
    device_topic,
    encode_batch,
    encode_birth,
    encode_death,
    encode_runs,
    encode_summary,
    is_online,
    parse_broker_url,
    parse_topic,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plantedfiles import finishes

from edgescope.cli.archive import Archiver

T = 1_796_000_000_000_000


def records() -> list:  # type: ignore[type-arg]
    frame = StackFrame("train_step", "train.py", 12)
    return [
        RunStart(0, "ab12", "mlp", "pi", 42, {"lr": 0.1}, ("x",), {"board": "Pi 4"}, T, 10),
        Metrics(0, "loss", (1, 2, 3), (T, T + 5, T + 9), (0.5, 0.25, math.nan), seq=11),
        Metrics(0, "step_ms", (3,), (T + 9,), (12.5,), seq=12),
        ThermalSample(
            (ThermalZone("cpu-thermal", 71.5),), throttle={"pi.throttled": 0x4}, t_us=T + 10, seq=14
        ),
        GpuSample(0, "Orin", temp_c=60.0, clock_event_reasons=0x40, t_us=T + 11, seq=15),
        ProcessSample(0, 42, rss=100, rss_peak=300, cgroup_limit=1000, t_us=T + 12, seq=16),
        StackSamples(0, "python", 10_000, (((frame,), 3),), T + 13, 17),
        Event("anomaly", "loss spike", 0, 1, {"z": 9.0}, T + 14, 18),
        RunEnd(0, 0, 0, T + 15, 19),
    ]


def test_batch_round_trip_keeps_records_and_seq() -> None:
    recs = records()
    batch = Batch(3, 10, 20, tuple(recs), gap=(2, 8))
    back = decode_batch(encode_batch(batch))
    assert (back.bd_seq, back.first, back.next, back.gap) == (3, 10, 20, (2, 8))
    assert [r.seq for r in back.records] == [r.seq for r in recs]
    for a, b in zip(back.records, recs, strict=True):
        if isinstance(a, Metrics):
            assert a.steps == b.steps and a.key == b.key
            assert all(x == y or (math.isnan(x) and math.isnan(y))
                       for x, y in zip(a.values, b.values, strict=True))  # fmt: skip
        else:
            assert a == b


def test_birth_death_summary_runs_round_trip_and_presence() -> None:
    b = Birth("pi-01", 7, T, {"host": "pi", "gpus": []})
    assert decode_birth(encode_birth(b)) == b
    d = Death("pi-01", 7)
    assert decode_death(encode_death(d)) == d
    assert is_online(b, None) and is_online(b, Death("pi-01", 6)) and not is_online(b, d)
    assert not is_online(None, None)
    fold = SummaryFold()
    for r in records()[:-1]:
        fold.feed(r)
    v = decode_summary(encode_summary("pi-01", 7, fold.values(T + 20)))
    assert v["run"] == "mlp" and v["step"] == 3 and v["step_time_s"] == pytest.approx(0.0125)
    assert v["hottest_c"] == 71.5 and v["throttled"] is True
    assert v["mem_peak"] == 300 and v["mem_limit"] == 1000 and v["warning"] == "loss spike"
    assert math.isnan(v["loss"])  # type: ignore[arg-type]
    device, runs = decode_runs(encode_runs("pi-01", 7, [records()[0]]))
    assert device == "pi-01" and runs == [records()[0]]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h", "not a broker URL"),
        ("mqtt://u:secret@h", "password in the URL"),
        ("mqtt://", "names no host"),
        ("mqtt://h:99999", "not a broker URL"),
        ("mqtt://h/x", "no path"),
    ],
)
def test_bad_broker_urls_are_one_sentence(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_broker_url(url)


def test_broker_urls_and_topics() -> None:
    assert str(parse_broker_url("mqtts://arch@broker")) == "mqtts://arch@broker:8883"
    assert parse_broker_url("mqtt://[::1]:1884").port == 1884
    assert parse_topic(device_topic("pi-01", "data")) == ("pi-01", "data")
    for bad in ("edgescope/v1/+/data", "edgescope/v1/a/b/data", "edgescope/v2/a/data", "x"):
        assert parse_topic(bad) is None
    with pytest.raises(ValueError):
        device_topic("a/b", "data")


hostile = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=6), c, max_size=6),
    max_leaves=30,
)  # fmt: skip


def shaped() -> st.SearchStrategy[bytes]:
    """Maps that look like the payloads (the right keys, values of any kind), and raw bytes."""
    keys = st.sampled_from(["v", "bd_seq", "first", "next", "recs", "gap", "device", "facts",
                            "t_us", "runs", "loss", "run", "step", "clean", "seq"])  # fmt: skip
    wire = st.lists(st.integers(0, 13) | hostile, min_size=1, max_size=12)
    value = hostile | st.just(1) | st.lists(wire, max_size=4)
    maps = st.dictionaries(keys, value, max_size=8).map(lambda m: {**m, "v": m.get("v", 1)})
    return maps.map(lambda m: msgpack.packb(m, use_bin_type=True)) | st.binary(max_size=200)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=shaped(), leaf=st.sampled_from(["birth", "death", "data", "summary", "runs"]))
def test_hostile_payloads_only_raise_fleet_payload_error(payload: bytes, leaf: str) -> None:
    for decode in (decode_batch, decode_birth, decode_death, decode_summary, decode_runs):
        with contextlib.suppress(FleetPayloadError):
            decode(payload)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_real_batches_never_crash_the_archiver_or_the_fleet_model(
    data: st.DataObject, tmp_path: Path
) -> None:
    from edgescope_tui.fleet import FleetModel

    good = bytearray(encode_batch(Batch(1, 10, 20, tuple(records()))))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] = data.draw(st.integers(0, 255))
    payload = bytes(good[: data.draw(st.integers(0, len(good)))])
    arch = Archiver(tmp_path / "a")
    topic = data.draw(st.sampled_from(["edgescope/v1/d/data", "edgescope/v1/d/summary",
                                       "edgescope/v1/+/data", "other"]))  # fmt: skip
    arch.handle(topic, payload, now=T / 1e6)
    model = FleetModel()
    model.update(topic.replace("data", "birth"), payload)
    model.update(topic, payload)
    arch.close()


def test_archiver_writes_gaps_skips_repeats_and_resumes(tmp_path: Path) -> None:
    recs = records()
    now = T / 1e6
    arch = Archiver(tmp_path)
    arch.handle("edgescope/v1/d/data", encode_batch(Batch(1, 10, 14, tuple(recs[:3]))), now)
    arch.handle("edgescope/v1/d/data", encode_batch(Batch(1, 10, 14, tuple(recs[:3]))), now)
    assert arch.devices["d"].duplicates == 1  # sent again: skipped
    arch.checkpoint()
    arch.close()
    # A restart: the archive goes on in the same file, a jump of seq is a gap.
    arch = Archiver(tmp_path)
    arch.handle("edgescope/v1/d/data", encode_batch(Batch(1, 16, 20, tuple(recs[5:]))), now)
    arch.handle("edgescope/v1/d/data", b"\x93garbage", now)
    arch.close()
    files = sorted((tmp_path / "d").glob("*.est"))
    assert len(files) == 1, files
    got = list(TraceReader(files[0]))
    kinds = [type(r).__name__ for r in got if type(r).__name__ != "Keyframe"]
    assert kinds == [
        "RunStart", "Metrics", "Metrics", "Event",
        "ProcessSample", "StackSamples", "Event", "RunEnd",
    ]  # fmt: skip
    gap = next(r for r in got if isinstance(r, Event) and r.kind == "gap")
    assert gap.detail["from_seq"] == 14 and gap.detail["to_seq"] == 15
    assert "broker did not deliver" in gap.detail["reason"]
    assert arch.malformed == 1


def test_archiver_resume_never_writes_through_a_link_nor_waits_on_a_fifo(tmp_path: Path) -> None:
    # Each was so before: resume's cut went through a link in the trace's place (a victim cut
    # to the checkpoint's length), the cursor's temporary was written through a link put there,
    # and a FIFO in the cursor's place hung the archiver in read_bytes().
    recs = records()
    now = T / 1e6
    d = tmp_path / "d"
    arch = Archiver(tmp_path)
    arch.handle("edgescope/v1/d/data", encode_batch(Batch(1, 10, 14, tuple(recs[:3]))), now)
    arch.checkpoint()
    arch.close()
    (trace,) = d.glob("*.est")
    cut, written = tmp_path / "cut", tmp_path / "written"
    for victim in (cut, written):
        victim.write_bytes(b"v" * 100_000)
    trace.unlink()
    trace.symlink_to(cut)
    (d / ".d.cursor.tmp").symlink_to(written)
    arch = Archiver(tmp_path)
    arch.handle("edgescope/v1/d/data", encode_batch(Batch(1, 14, 16, tuple(recs[3:5]))), now)
    arch.checkpoint()
    arch.close()
    assert cut.read_bytes() == written.read_bytes() == b"v" * 100_000
    assert trace.is_symlink() and not (d / ".d.cursor").is_symlink()
    part = d / trace.name.replace(".est", ".1.est")  # a new file, with the open run restated
    assert [type(r).__name__ for r in TraceReader(part) if type(r).__name__ != "Keyframe"] == [
        "RunStart", "ThermalSample", "GpuSample",
    ]  # fmt: skip

    cursor = d / ".d.cursor"
    cursor.unlink()
    os.mkfifo(cursor)

    def restart() -> None:
        a = Archiver(tmp_path)
        a.handle("edgescope/v1/d/data", encode_batch(Batch(1, 16, 18, tuple(recs[5:7]))), now)
        a.checkpoint()
        a.close()

    finishes(restart, cursor, "the archiver, with a FIFO in the cursor's place,")
    assert cursor.is_file()  # the checkpoint put a cursor in the FIFO's place
    assert (d / trace.name.replace(".est", ".2.est")).is_file()


@pytest.mark.parametrize(
    ("argv", "says", "code"),
    [
        (["-m", "edgescope_collector", "--mqtt", "http://h"], "not a broker URL", 2),
        (["-m", "edgescope_collector", "--mqtt", "mqtt://u:pw@h"], "password in the URL", 2),
        (["-m", "edgescope_collector", "--mqtt", "mqtt://h", "--device", "a/b"], "device name", 2),
        (["-m", "edgescope_collector", "--mqtt-ca", "ca.pem"], "needs --mqtt", 2),
        (["-m", "edgescope", "archive", "--mqtt", "mqtt://h:0x", "-o", "."], "broker URL", 2),
        (["-m", "edgescope", "ls", "--mqtt", "mqtt://127.0.0.1:1"], "cannot read the fleet", 1),
        (["-m", "edgescope", "tui", "--mqtt", "mqtt://h", "--mqtt-ca", "x"], "for TLS", 2),
    ],
)
def test_bad_fleet_arguments_are_one_line(argv: list[str], says: str, code: int) -> None:
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
