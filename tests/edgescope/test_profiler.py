"""profile=True: the in-process Python stack sampler, read back from the trace."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from edgescope_tracing import StackFrame, StackSamples, StreamEncoder
from sdkutil import of, read

import edgescope
from edgescope.sdk._profiler import (
    CHUNK_BYTES,
    SignalSampler,
    ThreadSampler,
    _blocked,
    _callees,
    chunk_samples,
    start_sampler,
)

Sampler = type[SignalSampler] | type[ThreadSampler]
DRIVERS = [SignalSampler, ThreadSampler]


def busy_leaf(until: float) -> int:
    n = 0
    while time.monotonic() < until:
        n += sum(range(200))
    return n


def busy_root(seconds: float) -> int:
    return busy_leaf(time.monotonic() + seconds)


def busy_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU (however loaded the machine)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))


def waiting_thread(stop: threading.Event) -> None:
    stop.wait(10)


def by_leaf(records: list[StackSamples]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        for stack, n in r.samples:
            out[stack[-1].function] = out.get(stack[-1].function, 0) + n
    return out


def test_profile_records_the_cpu_of_the_threads_that_ran(sdk: Path) -> None:
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
    assert not any("waiting_thread" in k for k in counts), "a waiting thread uses no CPU"
    functions = {f.function for s in stacks for st, _ in s.samples for f in st}
    assert not functions & {"Shipper._main", "ThreadSampler._main"}, (
        "the SDK's own threads are left out"
    )


@pytest.mark.parametrize("driver", DRIVERS, ids=["signal", "thread"])
def test_each_thread_is_charged_its_own_cpu_time(driver: Sampler) -> None:
    stop = threading.Event()
    idle = threading.Thread(target=waiting_thread, args=(stop,))
    spent: list[float] = []
    worker = threading.Thread(target=lambda: spent.append(_timed(busy_cpu, 0.4)))
    idle.start()
    got: list[StackSamples] = []
    s = driver(got.append, hz=100, window=10)
    s.start()
    worker.start()
    main = _timed(busy_cpu, 0.4)
    worker.join()
    time.sleep(0.2)  # no CPU: no samples
    s.stop()
    stop.set()
    idle.join()
    leaf = by_leaf(got)
    assert "waiting_thread" not in leaf and "wait" not in leaf
    total = sum(leaf.values())
    # Both threads used ~0.4 s of CPU: ~40 counts each, ~80 together (10 ms a count), never
    # the 100 a second of wall time of each of the three threads.
    assert 0.7 * (main + spent[0]) * 100 - 4 <= total <= 1.1 * (main + spent[0]) * 100 + 4, leaf
    assert leaf.get("busy_cpu", 0) >= total - 4


def _timed(fn: object, seconds: float) -> float:
    t = time.thread_time()
    fn(seconds)  # type: ignore[operator]
    return time.thread_time() - t


def test_the_signal_sampler_restores_sigprof_and_stops_its_timer() -> None:
    assert SignalSampler.available()
    before = signal.getsignal(signal.SIGPROF)
    got: list[StackSamples] = []
    s = SignalSampler(got.append, hz=100, window=10)
    s.start()
    assert signal.getsignal(signal.SIGPROF) != before
    busy_cpu(0.2)
    s.stop()
    assert signal.getsignal(signal.SIGPROF) == before
    taken = s.samples_taken
    time.sleep(0.1)
    assert s.samples_taken == taken and taken > 0
    assert s.cpu_charged == pytest.approx(sum(n for r in got for _, n in r.samples) / 100)


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


def test_another_sigprof_handler_is_left_alone() -> None:
    def theirs(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGPROF, theirs)
    try:
        s = start_sampler(lambda r: None)
        s.stop()
        assert isinstance(s, ThreadSampler)
        assert signal.getsignal(signal.SIGPROF) is theirs
    finally:
        signal.signal(signal.SIGPROF, before)


class Local:
    pass


def _hold(sampler: SignalSampler | ThreadSampler) -> weakref.ref[Local]:
    obj = Local()
    ref = weakref.ref(obj)
    seen = sampler.samples_taken
    deadline = time.monotonic() + 5
    while sampler.samples_taken < seen + 3 and time.monotonic() < deadline:
        sum(range(300))  # sampled while this frame, and obj in it, is live
    assert sampler.samples_taken >= seen + 3
    return ref


@pytest.mark.parametrize("driver", DRIVERS, ids=["signal", "thread"])
def test_a_local_dies_when_its_function_returns(driver: Sampler) -> None:
    s = driver(lambda r: None, hz=500, window=10)
    s.start()
    try:
        gc.disable()  # no collector to hide a reference the sampler kept
        try:
            ref = _hold(s)
            # a thread driver may be inside a sample when the function returns: the frame may
            # live until that sample ends (a few µs, longer on a loaded machine), never past it
            deadline = time.monotonic() + 0.5
            while ref() is not None and time.monotonic() < deadline:
                time.sleep(0.001)
            assert ref() is None, "the sampler kept the frame (and its locals) alive"
        finally:
            gc.enable()
        gc.collect()
        # type(), not isinstance(): that would ask every object its __class__, and some (a
        # deprecated torch attribute, where torch was imported) warn when asked
        assert not [o for o in gc.get_objects() if type(o) is Local]
    finally:
        s.stop()


HWM = """
import sys, threading, time
from edgescope.sdk._profiler import SignalSampler, ThreadSampler

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

def step():
    buf = b"\\x01" * (8 << 20)  # 8 MiB, every page touched
    end = time.thread_time() + 0.004
    while time.thread_time() < end:
        pass
    return len(buf)

driver = SignalSampler if sys.argv[1] == "signal" else ThreadSampler
for _ in range(3):
    step()
before = hwm()
s = driver(lambda r: None, hz=500, window=0.1)
s.start()
for _ in range(150):
    step()
s.stop()
print(s.samples_taken, hwm() - before)
"""


@pytest.mark.parametrize("driver", ["signal", "thread"])
def test_peak_memory_grows_by_no_more_than_one_step_under_profiling(
    driver: str, tmp_path: Path
) -> None:
    # A fresh process, so that its VmHWM is this loop's: each step holds 8 MiB, then drops it.
    # A sampler that kept a step's frame until its next sample would keep two alive at once.
    script = tmp_path / "hwm.py"
    script.write_text(textwrap.dedent(HWM))
    out = subprocess.run(
        [sys.executable, str(script), driver],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    taken, growth = map(int, out.stdout.split())
    assert taken >= 50, "sampled while the steps ran"
    assert growth < 4 << 20, f"VmHWM grew by {growth / 2**20:.1f} MiB"


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


def _reads(fd: int, n: int) -> None:
    for _ in range(n):
        os.read(fd, 1)


def _shapes(self: Any, fd: int, sock: socket.socket) -> None:
    self._selector.poll(0.1)  # a method of an attribute
    read = os.read
    read(fd, 1)  # a local (PUSH_NULL, then the name)
    sock.recvmsg(1, socket.CMSG_SPACE(4))  # a call in the arguments of another
    time.sleep(0)
    with self.lock:  # a lock's __enter__, called by the with statement itself
        pass


def test_the_callee_of_each_call_is_named() -> None:
    names = set(_callees(_shapes.__code__).values())
    assert {"poll", "read", "recvmsg", "CMSG_SPACE", "sleep", "__enter__"} <= names
    assert not names & {"self", "_selector", "os", "sock", "socket", "time"}


def test_a_thread_blocked_in_a_specialized_call_is_blocked() -> None:
    # After a few hundred calls the adaptive interpreter runs os.read in PRECALL and skips
    # CALL: the frame of a thread blocked in it stays at PRECALL's offset.
    r, w = os.pipe()
    reader = threading.Thread(target=_reads, args=(r, 300))
    reader.start()
    try:
        for _ in range(299):
            os.write(w, b"x")
        deadline = time.monotonic() + 30
        while True:
            frame = sys._current_frames().get(reader.ident or 0)
            done = frame is not None and frame.f_code is _reads.__code__
            if done and os.fstat(r).st_size == 0 and _blocked(frame.f_code, frame.f_lasti):
                break
            del frame
            assert time.monotonic() < deadline, "the reader was never seen blocked in os.read"
            time.sleep(0.01)
        del frame
    finally:
        os.write(w, b"x")
        reader.join()
        os.close(r)
        os.close(w)


TORCH_HWM = """
import gc
import torch
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

gen = torch.Generator().manual_seed(0)
images = torch.randn(1024, 1, 28, 28, generator=gen)
data = TensorDataset(images, torch.randint(0, 10, (1024,), generator=gen))
loader = DataLoader(data, batch_size=64, shuffle=True, num_workers=2, persistent_workers=True)
nn = torch.nn
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)

def step(x, y):
    act = torch.empty(16 << 20).fill_(1.0)  # 64 MiB of activations, every page touched
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x) + act[:10], y).backward()
    opt.step()
    return float(act[0])

def epoch():
    for x, y in loader:
        step(x, y)

epoch()  # warm: the workers, the allocator, the first step's 64 MiB
gc.disable()  # no collector to hide a cycle that holds a frame (the issue's bug)
bare = hwm()
epoch()
bare_growth = hwm() - bare
import edgescope
run = edgescope.init(name="torch-hwm", profile=True, profile_hz=500)
before = hwm()
epochs = 0
while run._profiler.samples_taken < 100 and epochs < 20:  # enough samples inside the steps
    epoch()
    epochs += 1
profiled_growth = hwm() - before
run.finish()
gc.enable()
print(run._profiler.samples_taken, bare_growth, profiled_growth)
"""


def test_profiling_a_torch_job_keeps_its_peak_memory(sdk: Path, tmp_path: Path) -> None:
    # The job: a DataLoader with workers and a step whose locals (here 64 MiB of
    # activations) die when it returns. A sampler that kept a step's frame until its next
    # sample would keep two steps' tensors alive at once: the peak would grow by 64 MiB.
    pytest.importorskip("torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
    script = tmp_path / "torch_hwm.py"
    script.write_text(textwrap.dedent(TORCH_HWM))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    taken, bare, profiled = map(int, out.stdout.split()[-3:])
    assert taken >= 50, "sampled while the steps ran"
    assert profiled < bare + (16 << 20), (
        f"peak RSS grew by {profiled / 2**20:.1f} MiB profiled, {bare / 2**20:.1f} MiB bare"
    )
