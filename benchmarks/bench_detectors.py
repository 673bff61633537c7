"""The collector's detectors on a tiny model's stream: 20,000 steps a second, against real time.

The stream is 5 s of a run that logs its loss every step at 20,000 steps/s (steps ~50 us apart,
jittered +-40 %, whole microseconds as the SDK's clock gives them; one step in 2,000 a 2 ms
hiccup; every 10 ms, 15 steps at 3x: the shipping thread holding the GIL), in the SDK's
columnar batches of 256 values, then the run's end. It is the case where the step-time
detector raised ~930 events in 5 s (issue 11, item 9).

Measured: the time :class:`edgescope_collector.detectors.Detectors` takes to fold the whole
stream (feed every record, then flush), beside its anchor, the 5 s the stream spans: the
detectors must keep up with the run they watch, on one core. Also printed: the events raised
(0 expected: nothing is wrong in this run).

Rerun (a few seconds)::

    .venv/bin/python benchmarks/bench_detectors.py --fast
    .venv/bin/python benchmarks/bench_detectors.py            # 2 processes x 3 values

Any pyperf option works (``--rigorous``, ``-o FILE``).
"""

from __future__ import annotations

import random

import pyperf
from edgescope_collector.detectors import Detectors
from edgescope_tracing.records import Event, Metrics, Record, RunEnd

PER_S = 20_000
SECONDS = 5.0
RERUN = "    .venv/bin/python benchmarks/bench_detectors.py --fast"


def stream(per_s: int = PER_S, seconds: float = SECONDS) -> list[Record]:
    rng = random.Random(7)
    base = 1.0 / per_s
    t0 = t = 1_700_000_000.0
    out: list[Record] = []
    steps: list[int] = []
    times: list[int] = []
    step = 0
    while t - t0 < seconds:
        dt = base * rng.uniform(0.6, 1.4)
        if rng.random() < 1 / 2000:
            dt = 0.002
        if (t - t0) % 0.01 < 15 * base:
            dt *= 3
        t += dt
        steps.append(step)
        times.append(int(t * 1e6))
        step += 1
        if len(steps) == 256:
            out.append(Metrics(1, "loss", tuple(steps), tuple(times), (1.0,) * 256, times[0]))
            steps, times = [], []
    out.append(RunEnd(1, exit_code=0, t_us=int(t * 1e6) + 1))
    return out


def fold(records: list[Record]) -> list[Event]:
    d = Detectors()
    events = [e for r in records for e in d.feed(r)]
    return events + d.flush()


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1, loops=1)
    runner.metadata["description"] = f"Detectors over {SECONDS:g} s of a {PER_S:,} steps/s run"
    records = stream()
    bench = runner.bench_func("detectors fold", fold, records)
    if runner.args.worker or bench is None:
        return
    steps = sum(len(r.steps) for r in records if isinstance(r, Metrics))
    spent = bench.median()
    events = fold(records)
    print()
    print(f"{steps:,} steps ({SECONDS:g} s of a {PER_S:,} steps/s run, loss logged every step):")
    print(f"{'':<28}{'seconds':>10}{'us/step':>10}")
    print(f"{'the stream (real time)':<28}{SECONDS:>10.3f}{1e6 / PER_S:>10.2f}")
    print(f"{'detectors fold':<28}{spent:>10.3f}{spent / steps * 1e6:>10.2f}")
    print()
    print(
        f"detectors: {spent / SECONDS:.1%} of one core to keep up; "
        f"events raised: {len(events)} (nothing is wrong in this run)"
    )
    print()
    print("rerun:")
    print(RERUN)


if __name__ == "__main__":
    main()
