"""``edgescope_tracing.framing``: the byte level in public (what the collector's store, server
and publisher use): a file a crash left open is scanned and closed so that it reads as one
closed cleanly; damage in the middle is passed over, never cut."""

from __future__ import annotations

import os
from pathlib import Path

from edgescope_tracing import Event, TraceReader, TraceWriter
from edgescope_tracing.framing import (
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    frame_span,
    header_bytes,
    parse_header,
    read_trailer,
    scan,
    trailer_bytes,
)


def _open_ended(path: Path, n: int) -> bytes:
    """A trace of ``n`` events, several frames and keyframes, left without its index."""
    w = TraceWriter(path, flush_bytes=300, keyframe_bytes=2000)
    for i in range(n):
        w.append(Event("log", f"event {i} " + "x" * 40, t_us=i))
    w.close(index=False)
    return path.read_bytes()


def _trailer(path: Path) -> tuple[int, int, list[object]] | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        found = read_trailer(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return None if found is None else (found[0], found[1], list(found[2]))


def test_the_header_is_the_formats(tmp_path: Path) -> None:
    head = header_bytes()
    assert len(head) == HEADER_SIZE
    assert parse_header(head) == parse_header(_open_ended(tmp_path / "a.est", 1)[:HEADER_SIZE])


def test_a_file_left_open_is_scanned_and_closed_as_a_clean_close_would(tmp_path: Path) -> None:
    data = _open_ended(tmp_path / "open.est", 200)
    with TraceWriter(tmp_path / "closed.est", flush_bytes=300, keyframe_bytes=2000) as w:
        for i in range(200):
            w.append(Event("log", f"event {i} " + "x" * 40, t_us=i))
    # a crash mid-write: half a frame after the last whole one
    cut = data + data[HEADER_SIZE : HEADER_SIZE + 50]
    found = scan(cut, "open.est")
    assert found.data_end == len(data)
    assert found.next_seq is not None and found.next_seq > 200  # keyframes are numbered too
    assert len(found.index) > 2
    path = tmp_path / "repaired.est"
    path.write_bytes(cut[: found.data_end] + trailer_bytes(found.data_end, found.index, 201))
    assert _trailer(path) == (found.data_end, 201, list(found.index))
    with TraceReader(path) as r, TraceReader(tmp_path / "closed.est") as clean:
        assert r.indexed
        assert r.index() == clean.index() == found.index
        assert [e.message for e in r if isinstance(e, Event)] == [
            e.message for e in clean if isinstance(e, Event)
        ]
        assert r.damage == []


def test_damage_in_the_middle_is_passed_over_not_cut(tmp_path: Path) -> None:
    data = bytearray(_open_ended(tmp_path / "t.est", 200))
    good_end, skip = frame_span(data, HEADER_SIZE)
    assert (good_end, skip) == (len(data), len(data))
    first_frame_end = frame_span(data[: HEADER_SIZE + FRAME_HEAD_SIZE + 1], HEADER_SIZE)[0]
    assert first_frame_end == HEADER_SIZE  # an incomplete frame is not a good one
    data[HEADER_SIZE + FRAME_HEAD_SIZE + 3] ^= 0xFF  # a bad checksum in the first frame
    end, skip = frame_span(data, HEADER_SIZE)
    assert end == HEADER_SIZE and HEADER_SIZE < skip < len(data)
    found = scan(bytes(data))
    assert found.data_end == len(data)  # the good frames after the damage are kept


def test_a_file_with_no_record_after_its_header(tmp_path: Path) -> None:
    found = scan(header_bytes())
    assert (found.data_end, found.index, found.next_seq) == (HEADER_SIZE, [], None)
    path = tmp_path / "empty.est"
    path.write_bytes(header_bytes() + trailer_bytes(HEADER_SIZE, [], 7))
    assert _trailer(path) == (HEADER_SIZE, 7, [])
