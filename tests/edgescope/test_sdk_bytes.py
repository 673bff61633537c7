"""Bytes per value through the SDK's columns (issue 10): a pause in a fast loop costs a header.

The trace format stores a batch's times as deltas of the widest width the batch needs; the SDK
cuts a metric's column where the loop paused (:func:`edgescope.sdk._ship.pauses`), so that one
pause of a few milliseconds does not make 2,048 deltas two bytes wide. These tests feed the
columns calls with known times and encode the records as the sinks do.
"""

from __future__ import annotations

from edgescope_tracing import Metrics, StreamEncoder
from sdkutil import decode

from edgescope.sdk._ship import MIN_STRETCH, Columns, pauses


def _encoded(recs: list[Metrics]) -> tuple[bytes, int]:
    """The stream's bytes, and how many of them follow the file header."""
    enc = StreamEncoder()
    head = enc.take()
    for r in recs:
        enc.add(r)
    body = enc.take()
    return head + body, len(body)


def _calls(times_us: list[int], key: str = "loss") -> list[tuple[int, int, str, float]]:
    return [(i, t * 1000 + 7, key, i * 0.25) for i, t in enumerate(times_us)]


def _fast_loop_with_pauses() -> list[int]:
    """10,000 calls a microsecond apart or less, with a 5 ms and a 40 ms pause mid-batch."""
    times, t = [], 1_700_000_000_000_000
    for i in range(10_000):
        t += 1 if i % 3 else 0
        if i in (3000, 7001):
            t += 5_000 if i == 3000 else 40_000
        times.append(t)
    return times


def test_a_pause_in_a_fast_loop_costs_a_record_header_not_a_wider_batch() -> None:
    times = _fast_loop_with_pauses()
    cols = Columns()
    cols.add_calls(_calls(times))
    recs = cols.take()
    assert [r.steps[0] for r in recs] == [0, 3000, 7001]
    data, size = _encoded(recs)
    # float32-exact values (4 B) and one-byte time deltas (1 B), plus the records' headers
    assert size / len(times) <= 5.05, size / len(times)
    back = [r for r in decode(data) if isinstance(r, Metrics)]
    assert [
        (s, t, v) for r in back for s, t, v in zip(r.steps, r.times_us, r.values, strict=True)
    ] == [(i, t, i * 0.25) for i, t in enumerate(times)]


def test_a_slow_loop_is_not_cut_and_short_bursts_are_not_cut_either() -> None:
    # every delta wide (a loop that logs every millisecond): one record, no cut
    assert pauses([i * 1000 for i in range(5000)]) == []
    # bursts shorter than MIN_STRETCH between pauses: cutting would cost more than it saves
    burst = MIN_STRETCH // 2
    times = [(i // burst) * 10_000 + i for i in range(burst * 40)]
    assert pauses(times) == []
    # a column too short to pay for a second header
    assert pauses([0, 1, 5000, 5001][:MIN_STRETCH]) == []


def test_ten_keys_logged_together_are_cut_at_the_same_pauses() -> None:
    times = _fast_loop_with_pauses()[:4000]
    cols = Columns()
    cols.add_calls(
        [(i, t * 1000, {f"m{j}": float(j) for j in range(10)}) for i, t in enumerate(times)]
    )
    recs = cols.take()
    by_key: dict[str, list[int]] = {}
    for r in recs:
        by_key.setdefault(r.key, []).append(r.steps[0])
    assert by_key == {f"m{j}": [0, 3000] for j in range(10)}
    assert _encoded(recs)[1] / (10 * len(times)) <= 5.05


def test_the_windowed_look_finds_every_wide_delta_of_forward_going_times() -> None:
    import random

    from edgescope.sdk._ship import _wide_deltas

    rnd = random.Random(3)
    for wide_share in (0.0, 0.001, 0.02, 0.3, 1.0):
        for n in (2, 31, 33, 64, 1000, 5000):
            t, times = 1_700_000_000_000_000, []
            for _ in range(n):
                jump = rnd.random() < wide_share
                t += rnd.choice((128, 129, 300, 40_000)) if jump else rnd.choice((0, 1, 2, 127))
                times.append(t)
            every = [i for i in range(1, n) if times[i] - times[i - 1] > 127]
            assert _wide_deltas(times) == every, (wide_share, n)
