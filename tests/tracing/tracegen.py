"""Hypothesis strategies for every record kind, and helpers to compare what comes back.

Records compare by ``repr`` after their ``seq`` is cleared: ``repr`` of a float is exact and
tells NaN, -0.0 and 0.0 apart, where ``==`` cannot (NaN != NaN), and it tells 1 from 1.0 and
True from 1, so a round trip that changes a type fails.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from edgescope_tracing import (
    CoolingDevice,
    CpuFreq,
    Event,
    GpuSample,
    Keyframe,
    Metrics,
    PowerReading,
    PowerSample,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    SystemSample,
    ThermalSample,
    ThermalZone,
)
from edgescope_tracing._codec import METRIC_CHUNK
from hypothesis import strategies as st

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
TIME = st.integers(0, (1 << 62))
SMALL = st.integers(-(1 << 31), (1 << 31) - 1)
NAT = st.integers(0, (1 << 63) - 1)
# A small alphabet makes strings repeat, which exercises interning; text() adds the odd ones.
NAMES = st.one_of(st.sampled_from(["loss", "lr", "cpu0", "gpu", "", "é ✓", "x" * 300]), st.text())
FLOATS = st.one_of(
    st.floats(width=32),
    st.floats(),
    st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324]),
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)

JSON: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), I64, FINITE, st.text(max_size=20), st.binary(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), s)


run_starts = st.builds(
    RunStart,
    run=SMALL,
    run_id=st.text(max_size=40),
    name=NAMES,
    host=NAMES,
    pid=I64,
    config=st.dictionaries(st.text(max_size=10), JSON, max_size=5),
    tags=st.lists(NAMES, max_size=4).map(tuple),
    device=st.dictionaries(st.text(max_size=10), JSON, max_size=5),
    t_us=TIME,
)
run_ends = st.builds(
    RunEnd,
    run=SMALL,
    exit_code=opt(SMALL),
    dropped=NAT,
    t_us=TIME,
    cause=opt(st.text(max_size=100)),
)


@st.composite
def small_metrics(draw: st.DrawFn) -> Metrics:
    """Up to 40 values: float32-exact or not, NaN, inf, -0.0; steps and times that jump about."""
    n = draw(st.integers(0, 40))
    width32 = draw(st.booleans())
    values = draw(st.lists(st.floats(width=32) if width32 else FLOATS, min_size=n, max_size=n))
    shape = draw(st.sampled_from(["regular", "irregular"]))
    if shape == "regular":
        first = draw(st.integers(-(1 << 40), 1 << 40))
        stride = draw(st.integers(-1000, 1000))
        steps = [first + i * stride for i in range(n)]
    else:
        steps = draw(st.lists(st.integers(-(1 << 62), 1 << 62), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 1 << 62), min_size=n, max_size=n))
    return Metrics(
        run=draw(SMALL),
        key=draw(NAMES),
        steps=tuple(steps),
        times_us=tuple(times),
        values=tuple(values),
        t_us=draw(TIME),
    )


@st.composite
def big_metrics(draw: st.DrawFn) -> Metrics:
    """More than one wire chunk of values (> 2048), drawn from a seeded generator for speed."""
    rng = random.Random(draw(st.integers(0, 1 << 32)))
    n = draw(st.integers(METRIC_CHUNK + 1, 3 * METRIC_CHUNK + 7))
    kind = draw(st.sampled_from(["f32", "f64", "mixed"]))
    loss = 2.3
    values = []
    for i in range(n):
        loss *= 0.999
        v = loss + rng.gauss(0, 0.01)
        if kind == "f32":
            v = struct.unpack("<f", struct.pack("<f", v))[0]
        elif kind == "mixed" and i % 997 == 5:
            v = rng.choice([float("nan"), float("inf"), -0.0, 1e300])
        values.append(v)
    step0 = rng.randrange(0, 1 << 40)
    steps = [step0 + i * rng.choice([1, 1, 1, 2, -3]) for i in range(n)]
    t = rng.randrange(1 << 50, 1 << 51)
    times = []
    for _ in range(n):
        t += int(rng.gauss(5700, 300)) if rng.random() > 0.001 else rng.randrange(-(10**6), 10**9)
        times.append(t)
    return Metrics(
        run=0, key=draw(NAMES), steps=tuple(steps), times_us=tuple(times), values=tuple(values)
    )


system_samples = st.builds(
    SystemSample,
    cpu_percent=opt(FLOATS),
    per_cpu_percent=st.lists(FLOATS, max_size=8).map(tuple),
    mem_used=opt(NAT),
    mem_total=opt(NAT),
    mem_available=opt(NAT),
    swap_used=opt(NAT),
    swap_total=opt(NAT),
    load1=opt(FLOATS),
    load5=opt(FLOATS),
    load15=opt(FLOATS),
    psi=st.dictionaries(NAMES, FLOATS, max_size=4),
    disk_read_bps=opt(FLOATS),
    disk_write_bps=opt(FLOATS),
    net_rx_bps=opt(FLOATS),
    net_tx_bps=opt(FLOATS),
    t_us=TIME,
)
process_samples = st.builds(
    ProcessSample,
    run=SMALL,
    pid=SMALL,
    cpu_percent=opt(FLOATS),
    rss=opt(NAT),
    rss_peak=opt(NAT),
    threads=opt(SMALL),
    cgroup_current=opt(NAT),
    cgroup_peak=opt(NAT),
    cgroup_limit=opt(NAT),
    oom_kills=opt(NAT),
    ppid=opt(SMALL),
    state=opt(st.sampled_from("RSDTZI")),
    command=opt(NAMES),
    t_us=TIME,
    cgroup=opt(NAMES),
    cgroup_version=opt(st.sampled_from([1, 2])),
    cpu_quota_us=opt(NAT),
    cpu_period_us=opt(NAT),
    cpu_periods=opt(NAT),
    cpu_throttled=opt(NAT),
    cpu_throttled_us=opt(NAT),
    memory_high=opt(NAT),
    memory_high_events=opt(NAT),
    memory_max_events=opt(NAT),
    oom_events=opt(NAT),
    swap_current=opt(NAT),
)
thermal_samples = st.builds(
    ThermalSample,
    zones=st.lists(
        st.builds(
            ThermalZone,
            name=NAMES,
            temp_c=FLOATS,
            trips=st.lists(st.tuples(NAMES, FLOATS, FLOATS), max_size=3).map(tuple),
        ),
        max_size=4,
    ).map(tuple),
    freqs=st.lists(
        st.builds(
            CpuFreq,
            cpu=SMALL,
            cur_khz=opt(NAT),
            hw_khz=opt(NAT),
            max_khz=opt(NAT),
            scaling_max_khz=opt(NAT),
        ),
        max_size=4,
    ).map(tuple),
    cooling=st.lists(
        st.builds(CoolingDevice, name=NAMES, cur_state=SMALL, max_state=SMALL, transitions=NAT),
        max_size=3,
    ).map(tuple),
    throttle=st.dictionaries(NAMES, I64, max_size=4),
    sensors=st.dictionaries(NAMES, FLOATS, max_size=4),
    t_us=TIME,
)
gpu_samples = st.builds(
    GpuSample,
    index=SMALL,
    name=NAMES,
    temp_c=opt(FLOATS),
    power_mw=opt(NAT),
    power_limit_mw=opt(NAT),
    sm_clock_mhz=opt(SMALL),
    mem_clock_mhz=opt(SMALL),
    max_sm_clock_mhz=opt(SMALL),
    max_mem_clock_mhz=opt(SMALL),
    clock_event_reasons=opt(NAT),
    util_gpu=opt(FLOATS),
    util_mem=opt(FLOATS),
    mem_used=opt(NAT),
    mem_total=opt(NAT),
    processes=st.lists(st.tuples(I64, NAT), max_size=4).map(tuple),
    t_us=TIME,
)
power_samples = st.builds(
    PowerSample,
    readings=st.lists(
        st.builds(
            PowerReading,
            source=st.sampled_from(["rapl", "hwmon", "ina3221", "nvml", "pmic"]),
            name=NAMES,
            energy_uj=opt(NAT),
            power_uw=opt(NAT),
            range_uj=opt(NAT),
            limit_uw=opt(NAT),
            total=st.booleans(),
        ),
        max_size=6,
    ).map(tuple),
    t_us=TIME,
)
frames = st.builds(StackFrame, function=NAMES, file=NAMES, line=st.integers(0, 1 << 31))
stack_samples = st.builds(
    StackSamples,
    run=SMALL,
    backend=st.sampled_from(["python", "perf", "bpftrace"]),
    period_us=st.integers(0, 10**9),
    samples=st.lists(
        st.tuples(st.lists(frames, max_size=6).map(tuple), st.integers(1, 1 << 40)), max_size=6
    ).map(tuple),
    t_us=TIME,
)
events = st.builds(
    Event,
    kind=st.sampled_from(["anomaly", "mark", "log", "custom"]),
    message=st.text(max_size=200),
    run=SMALL,
    severity=st.integers(0, 2),
    detail=st.dictionaries(st.text(max_size=10), JSON, max_size=4),
    t_us=TIME,
)

any_record: st.SearchStrategy[Record] = st.one_of(
    run_starts,
    run_ends,
    small_metrics(),
    system_samples,
    process_samples,
    thermal_samples,
    gpu_samples,
    stack_samples,
    events,
    power_samples,
)
record_lists = st.lists(any_record, min_size=1, max_size=60)


def key(rec: Record) -> str:
    """What must survive a round trip: everything but the sequence number."""
    return repr(dataclasses.replace(rec, seq=0))


def expected(records: Iterable[Record]) -> list[str]:
    """The keys a reader yields for records appended: metric batches come back in chunks."""
    out: list[str] = []
    for rec in records:
        if isinstance(rec, Metrics) and len(rec.values) > METRIC_CHUNK:
            for lo in range(0, len(rec.values), METRIC_CHUNK):
                hi = lo + METRIC_CHUNK
                out.append(
                    key(
                        Metrics(
                            rec.run,
                            rec.key,
                            rec.steps[lo:hi],
                            rec.times_us[lo:hi],
                            rec.values[lo:hi],
                        )
                    )
                )
        else:
            out.append(key(rec))
    return out


def data_records(records: Sequence[Record]) -> list[Record]:
    """The records that were appended: keyframes are the format's own."""
    return [r for r in records if not isinstance(r, Keyframe)]
