"""Format 1.2: keyframes in parts and bounded run starts (issue #11 item 1).

Any number of active runs with ordinary configs fits the format: a keyframe that does not fit
one frame is split into parts that each do, a reader joining at the keyframe still gets every
run's identity and config, and a config too large for the format is cut with a marker and a
warning instead of stopping the stream.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import msgpack
import pytest
from edgescope_tracing import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    MAX_PAYLOAD,
    Event,
    Keyframe,
    Metrics,
    RunEnd,
    RunStart,
    StreamDecoder,
    StreamEncoder,
    TraceReader,
    TraceWriter,
)
from edgescope_tracing._codec import KEYFRAME_PART, Decoder
from edgescope_tracing._fit import CONFIG_LIMIT, TRUNCATED_KEY, TRUNCATED_TEXT
from edgescope_tracing._frames import FRAME_HEAD_SIZE, HEADER_SIZE
from edgescope_tracing.summary import summarize_file


def config(i: int, size: int) -> dict[str, object]:
    """A training-arguments dump of about ``size`` bytes encoded."""
    out: dict[str, object] = {"run": i}
    k = 0
    while len(msgpack.packb(out)) < size:
        out[f"arg_{k:03d}"] = f"value {i}-{k} " + "x" * 40
        k += 1
    return out


def runs(n: int, size: int, first: int = 0) -> list[RunStart]:
    return [
        RunStart(first + i, f"{first + i:032x}", f"run {first + i}", "pi", 100 + i, config(i, size))
        for i in range(n)
    ]


def restated(started: list[RunStart], keyframe_bytes: int = 4096) -> StreamEncoder:
    """An encoder that started the runs and then wrote events until a keyframe restated them."""
    enc = StreamEncoder(keyframe_bytes=keyframe_bytes)
    for r in started:
        last_run = enc.add(r)
    i = 0
    while enc.index[-1].seq <= last_run or i < 50:
        if enc.index[-1].seq <= last_run:
            i = 0
        enc.add(Event("log", f"line {i} " + "y" * 80, run=i % len(started), t_us=i))
        i += 1
    return enc


def frames(data: bytes) -> list[tuple[int, list[list[object]]]]:
    """``(offset, records)`` of each frame of a stream with a header."""
    out = []
    pos = HEADER_SIZE
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos + 2)
        assert length <= MAX_PAYLOAD
        body = data[pos + FRAME_HEAD_SIZE : pos + FRAME_HEAD_SIZE + length]
        out.append((pos, msgpack.unpackb(body, raw=False, strict_map_key=False)))
        pos += FRAME_HEAD_SIZE + length
    return out


def test_the_writer_says_1_2_or_later() -> None:
    assert (FORMAT_MAJOR, FORMAT_MINOR) >= (1, 2)


@pytest.mark.parametrize(
    ("n", "size", "split"),
    [
        (20, 6_500, True),
        (3, 25_000, True),
        (60, 6_500, True),
        (1, 39_000, False),
        (5, 6_500, False),
    ],
)
def test_a_keyframe_that_does_not_fit_a_frame_comes_in_parts(
    n: int, size: int, split: bool
) -> None:
    started = runs(n, size)
    enc = restated(started)
    stream = enc.take()
    assert len(enc.index) >= 2
    last = enc.index[-1]
    # Every frame fits (frames() checks each length); the parts follow their keyframe.
    by_offset = dict(frames(stream))
    head = by_offset[last.offset][0]
    assert head[0] == 1 and head[1] == last.seq
    parts = [w for _, f in frames(stream) for w in f if w[0] == KEYFRAME_PART and w[1] == last.seq]
    if not split:
        assert len(head) == 6 and parts == []  # one part: the 1.1 record, no parts field
    else:
        assert head[6] == 1 + len(parts) >= 2
    # A reader joining at the keyframe gets every run, whole, and nothing is unresolved.
    dec = StreamDecoder(header=False, offset=last.offset)
    tail = dec.feed(stream[last.offset :]) + dec.close()
    assert dec.damage == [] and dec.decoder.unresolved == 0
    kf = tail[0]
    assert isinstance(kf, Keyframe) and kf.seq == last.seq
    assert [(r.run, r.run_id, r.name, r.config) for r in kf.runs] == [
        (r.run, r.run_id, r.name, r.config) for r in started
    ]
    assert [r.seq for r in kf.runs] == [r.seq for r in enc.encoder.runs.values()]
    assert sum(isinstance(r, Keyframe) for r in tail) == 1
    assert [r.message for r in tail if isinstance(r, Event)][-1] == "line 49 " + "y" * 80


def test_a_big_keyframe_does_not_make_every_record_a_keyframe() -> None:
    enc = StreamEncoder(keyframe_bytes=1024)
    for r in runs(30, 6_500):
        enc.add(r)
    before = len(enc.index)
    for i in range(2_000):
        enc.add(Event("log", f"line {i}", t_us=i))
    # A keyframe restates ~200 KB; the 2,000 events take ~30 KB: at most one more keyframe.
    assert len(enc.index) <= before + 1
    # Keyframes are at most about half the stream, however small the interval asked for.
    assert sum(len(r.config) for r in enc.encoder.runs.values()) and len(enc.take()) < 3 * 200_000


def test_files_with_keyframes_in_parts_seek_and_summarize(tmp_path: Path) -> None:
    path = tmp_path / "many.est"
    started = runs(20, 6_500) + runs(3, 25_000, first=20)
    with TraceWriter(path, keyframe_bytes=2048) as w:
        for r in started:
            w.append(r)
        for step in range(60_000):
            w.append(Metrics(step % 23, "loss", (step,), (step,), (1.0 / (step + 1),), t_us=step))
        for r in started:
            w.append(RunEnd(r.run, exit_code=0, t_us=5_000))
    with TraceReader(path) as reader:
        entries = reader.index()
        assert reader.indexed and len(entries) >= 2
        # Seeking into the middle starts at a keyframe in parts: all 23 runs come back.
        got = list(reader.seek(step=50_000))
        assert reader.damage == [] and reader.unresolved == 0
        kf = got[0]
        assert isinstance(kf, Keyframe) and len(kf.runs) == 23
        assert [r.config for r in kf.runs] == [r.config for r in started]
        summary = summarize_file(reader)
    assert [(r.id, r.config, r.exit_code) for r in summary.runs] == [
        (r.run_id, r.config, 0) for r in started
    ]
    assert summary.metrics["loss"].count == 60_000


def test_the_tui_fold_sees_every_run_from_a_keyframe_in_parts() -> None:
    fold_all = pytest.importorskip("edgescope_tui.state").fold_all
    started = runs(20, 6_500)
    enc = restated(started)
    stream = enc.take()
    last = enc.index[-1]
    dec = StreamDecoder(header=False, offset=last.offset)
    state = fold_all(dec.feed(stream[last.offset :]) + dec.close())
    assert sorted(state.runs) == list(range(20))
    assert [state.runs[r.run].config for r in started] == [r.config for r in started]


def test_a_config_too_large_for_the_format_is_cut_with_a_marker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = config(7, 120_000)
    path = tmp_path / "big.est"
    with caplog.at_level(logging.WARNING, logger="edgescope.tracing"), TraceWriter(path) as w:
        w.append(RunStart(0, "ab" * 16, "n" * 5_000, "pi", 1, big, tags=("t" * 3000,) * 5))
        w.append(Metrics(0, "loss", (1,), (1,), (0.5,), t_us=1))
        w.append(RunEnd(0, exit_code=0, t_us=2))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert "run 0" in warned[0] and "config" in warned[0] and TRUNCATED_KEY in warned[0]
    with TraceReader(path) as reader:
        recs = list(reader)
        assert reader.damage == []
    rs = next(r for r in recs if isinstance(r, RunStart))
    marker = rs.config[TRUNCATED_KEY]
    assert marker["bytes"] == len(msgpack.packb(big)) and marker["keys"] == len(big)
    kept = {k: v for k, v in rs.config.items() if k != TRUNCATED_KEY}
    assert marker["kept"] == len(kept) and kept == {k: big[k] for k in kept}
    assert len(msgpack.packb(rs.config)) <= CONFIG_LIMIT
    assert rs.name.endswith(TRUNCATED_TEXT) and len(rs.name.encode()) <= 1024
    assert len(rs.tags) == 3 and all(t.endswith(TRUNCATED_TEXT) for t in rs.tags)
    assert any(isinstance(r, Metrics) for r in recs) and isinstance(recs[-1], RunEnd)


def test_a_run_id_too_long_is_refused_alone() -> None:
    enc = StreamEncoder()
    with pytest.raises(ValueError, match="run id"):
        enc.add(RunStart(0, "a" * 300, "n", "h", 1))
    enc.add(Event("log", "after"))
    dec = StreamDecoder()
    got = dec.feed(enc.take()) + dec.close()
    assert [r.runs for r in got if isinstance(r, Keyframe)] == [(), ()]
    assert dec.damage == []


def test_a_lost_part_gives_the_keyframe_with_the_runs_that_came() -> None:
    enc = restated(runs(20, 6_500))
    stream = bytearray(enc.take())
    last = enc.index[-1]
    clean = StreamDecoder(header=False, offset=last.offset)
    expected = clean.feed(bytes(stream[last.offset :])) + clean.close()
    parts = [off for off, f in frames(bytes(stream)) if f[0][0] == KEYFRAME_PART]
    part_frame = next(off for off in parts if off > last.offset)
    stream[part_frame + FRAME_HEAD_SIZE + 3] ^= 0xFF  # a bad checksum: that part is lost
    dec = StreamDecoder(header=False, offset=last.offset)
    tail = dec.feed(bytes(stream[last.offset :])) + dec.close()
    assert len(dec.damage) == 1
    kf = tail[0]
    assert isinstance(kf, Keyframe) and 0 < len(kf.runs) < 20
    assert dec.decoder.unresolved == 1
    # Everything after the keyframe is there, as from the undamaged stream.
    assert tail[1:] == expected[1:]


def test_a_1_1_reader_reads_the_first_part_and_skips_the_rest() -> None:
    enc = StreamEncoder()
    started = runs(20, 6_500)
    for r in started:
        enc.add(r)
    enc.add(Event("log", "x"))  # the first keyframe was empty; restate the runs at another
    enc.keyframe_bytes = 1
    enc.add(Event("log", "y"))
    data = enc.take()
    old = Decoder()
    del old._dispatch[KEYFRAME_PART]  # what a 1.1 decoder knows
    # A 1.1 decoder reads the keyframe's first six fields and does not know kind 13.
    got = [old.decode(w[:6] if w[0] == 1 else w) for _, f in frames(data) for w in f]
    kfs = [r for r in got if isinstance(r, Keyframe)]
    assert len(kfs) == 2 and 0 < len(kfs[1].runs) < 20
    assert old.unknown_kinds >= 1
    assert [r.message for r in got if isinstance(r, Event)] == ["x", "y"]


def test_an_event_too_large_for_a_frame_is_cut_not_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A traceback of some thousand frames, or a detector's big detail, still gets through."""
    tb = "".join(
        f'  File "train.py", line {i}, in step\n    loss = model(x)\n' for i in range(3000)
    )
    detail = {"traceback": tb, "frames": list(range(20_000)), "small": 1}
    enc = StreamEncoder()
    with caplog.at_level(logging.WARNING, logger="edgescope.tracing"):
        for i in range(3):
            enc.add(Event("crash" * 400, tb, run=0, severity=2, detail=detail, t_us=i))
    assert enc.encoder.truncated_events == 3
    assert len(caplog.records) == 2  # the 1st and 2nd: a flood is said, not repeated
    assert "message" in caplog.messages[0] and "detail" in caplog.messages[0]
    dec = StreamDecoder()
    got = [r for r in dec.feed(enc.take()) + dec.close() if isinstance(r, Event)]
    assert dec.damage == [] and len(got) == 3
    ev = got[0]
    assert ev.message.endswith(TRUNCATED_TEXT) and tb.startswith(ev.message[: -len(TRUNCATED_TEXT)])
    assert ev.kind.endswith(TRUNCATED_TEXT) and ev.severity == 2
    assert ev.detail["small"] == 1 and ev.detail[TRUNCATED_KEY]["keys"] == 3
    assert "frames" not in ev.detail or "traceback" not in ev.detail


def test_stack_samples_with_too_many_new_frames_are_split_without_a_gap() -> None:
    from edgescope_tracing import StackFrame, StackSamples

    stacks = tuple(
        ((StackFrame(f"function_{i}_" + "f" * 60, f"/src/module_{i}.py", i),), 1)
        for i in range(3000)
    )
    enc = StreamEncoder()
    enc.add(Event("log", "before", t_us=1))
    last = enc.add(StackSamples(0, "python", 1000, stacks, t_us=2))
    enc.add(Event("log", "after", t_us=3))
    dec = StreamDecoder()
    got = dec.feed(enc.take()) + dec.close()
    assert dec.damage == [] and dec.decoder.unresolved == 0
    seqs = [r.seq for r in got]
    assert seqs == list(range(len(seqs))), "numbered on, without a gap"
    samples = [s for r in got if isinstance(r, StackSamples) for s in r.samples]
    assert samples == list(stacks) and last < seqs[-1]
