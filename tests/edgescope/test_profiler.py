"""profile=True: the in-process Python stack sampler, read back from the trace."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import StackFrame, StackSamples, StreamEncoder
from sdkutil import of, read, sdk_env

import edgescope
from edgescope._profiler import CHUNK_BYTES, SignalSampler, ThreadSampler, chunk_samples


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for k, v in sdk_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EDGESCOPE_SOCKET", raising=False)
    yield tmp_path
    edgescope.finish()


def busy_leaf(until: float) -> int:
    n = 0
    while time.monotonic() < until:
        n += sum(range(200))
    return n


def busy_root(seconds: float) -> int:
    return busy_leaf(time.monotonic() + seconds)


def waiting_thread(stop: threading.Event) -> None:
    stop.wait(10)


def test_profile_records_the_stacks_of_every_thread(sdk: Path) -> None:
    stop = threading.Event()
    other = threading.Thread(target=waiting_thread, args=(stop,), name="waiter")
    other.start()
    try:
        with edgescope.init(name="prof", profile=True, profile_hz=200, flush_interval=0.2) as run:
            busy_root(0.8)
    finally:
        stop.set()
        other.join()
    stacks = of(read(run.path), StackSamples)  # type: ignore[arg-type]
    assert stacks and {(s.backend, s.run, s.period_us) for s in stacks} == {("python", 0, 5000)}
    assert len(stacks) >= 3, "one record per flush interval"
    counts: dict[tuple[str, ...], int] = {}
    for s in stacks:
        for stack, n in s.samples:
            key = tuple(f.function for f in stack)
            counts[key] = counts.get(key, 0) + n
    busy = sum(n for k, n in counts.items() if k[-2:] == ("busy_root", "busy_leaf"))
    # ~160 samples at 200 Hz over 0.8 s of CPU; a loaded machine gives us less CPU.
    assert busy >= 20, counts
    leaf = next(f for s in stacks for st, _ in s.samples for f in st if f.function == "busy_leaf")
    assert leaf.file == __file__ and leaf.line > 0
    assert any(k[-1] == "waiting_thread" or "waiting_thread" in k for k in counts), (
        "waiting threads are sampled too"
    )
    functions = {f.function for s in stacks for st, _ in s.samples for f in st}
    assert not functions & {"Shipper._main", "StackSampler._main"}, (
        "the SDK's own threads are left out"
    )


def test_the_thread_sampler_rate_is_what_was_asked() -> None:
    got: list[StackSamples] = []
    s = ThreadSampler(got.append, hz=100, window=10)
    s.start()
    time.sleep(0.5)
    s.stop()
    # 50 wake-ups in 0.5 s of wall time; a busy machine may lose some, never add.
    assert 10 <= s.samples_taken <= 55
    assert sum(n for r in got for _, n in r.samples) >= s.samples_taken  # >= 1 thread each


def test_the_signal_sampler_counts_cpu_time_and_restores_sigprof() -> None:
    assert SignalSampler.available()
    before = signal.getsignal(signal.SIGPROF)
    got: list[StackSamples] = []
    s = SignalSampler(got.append, hz=100, window=10)
    t0 = time.process_time()
    s.start()
    busy_root(0.5)
    time.sleep(0.3)  # no CPU: no samples
    s.stop()
    cpu = time.process_time() - t0
    assert signal.getsignal(signal.SIGPROF) == before
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    main = [
        n
        for r in got
        for st, n in r.samples
        if [f.function for f in st[-2:]] == ["busy_root", "busy_leaf"]
    ]
    # Weighted counts add up to the CPU time spent (10 ms each), not the wall time; the
    # process's other threads are few and idle here.
    total = sum(n for r in got for _, n in r.samples)
    assert sum(main) <= cpu * 100 + 1, (sum(main), cpu)
    assert sum(main) >= 0.8 * cpu * 100 - 2, (sum(main), cpu)
    assert s.samples_taken <= cpu * 100 + 1 and total >= sum(main)


def test_outside_the_main_thread_the_thread_sampler_is_used(sdk: Path) -> None:
    box: list[edgescope.Run] = []
    t = threading.Thread(target=lambda: box.append(edgescope.init(name="t", profile=True)))
    t.start()
    t.join()
    run = box[0]
    assert isinstance(run._profiler, ThreadSampler)
    busy_root(0.3)
    run.finish()
    stacks = of(read(run.path), StackSamples)  # type: ignore[arg-type]
    assert any(f.function == "busy_leaf" for s in stacks for st, _ in s.samples for f in st)


def test_samples_are_split_so_no_record_outgrows_a_frame() -> None:
    samples = [
        (
            tuple(
                StackFrame(f"function_{i}_{d}" * 4, f"/very/long/path/module_{i}.py", d)
                for d in range(40)
            ),
            i + 1,
        )
        for i in range(300)
    ]
    parts = chunk_samples(samples)
    assert len(parts) > 1
    assert [x for p in parts for x in p] == samples
    enc = StreamEncoder()
    for p in parts:
        enc.add(StackSamples(0, "python", 10_000, p))  # raises if a record is too large
    assert all(len(p) for p in parts) and CHUNK_BYTES < 64 * 1024
