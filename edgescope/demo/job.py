"""The training job that ``edgescope demo`` watches: a NumPy MLP with phases worth debugging.

A two-layer perceptron (ReLU, softmax cross-entropy, SGD with momentum) learns a generated
data set of Gaussian clusters. The run is split into phases by wall time, so that a run of any
length shows all of them, and each phase leaves its mark in a different view:

=============  ==========================================================================
warm-up        ordinary training; each step waits ~3 ms for its batch, as on a device whose
               data loader reads from an SD card (CPU well below one core)
cpu-heavy      large batches and a full evaluation every step: one core busy, step time up
memory-growth  every step keeps a copy of its activations, as a training loop that keeps
               tensors it meant to drop: RSS grows steadily (capped by ``--leak-mb``)
lr-spike       the learning rate jumps 15x: loss and gradient norm jump (the memory stays)
recovery       learning rate back, the kept memory freed: the loss comes down again
=============  ==========================================================================

Each phase starts with an ``edgescope.mark()``; each step logs ``loss``, ``lr``,
``step_time`` (seconds), ``grad_norm`` and ``held_mb`` (memory kept on purpose), and every
25 steps ``accuracy`` on held-out rows. Run it alone with ``python -m edgescope.demo.job``;
the SDK sends its records to a collector when one runs, else writes a trace file itself.
:mod:`edgescope.demo.torch_job` is the same job in PyTorch, which the demo runs when torch is
installed.

The training is in :func:`train`, which takes the ``log`` and ``mark`` callables, so it can be
run and checked without the SDK.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["PHASES", "Backend", "JobResult", "NumpyBackend", "Phase", "main", "run_phases", "train"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Phase:
    """A part of the run: where it starts (fraction of the duration) and what it changes."""

    name: str
    start: float
    description: str
    lr_scale: float = 1.0
    batch: int = 128
    full_eval: bool = False
    leak: bool = False
    """Keep a copy of each step's activations, growing towards ``leak_mb``."""
    hold: bool = False
    """Keep what the leak kept (without growing it); entering a phase with neither frees it."""
    loader_wait_s: float = 0.003


PHASES: tuple[Phase, ...] = (
    Phase("warm-up", 0.0, "ordinary training, waiting ~3 ms a step for data"),
    Phase(
        "cpu-heavy",
        0.2,
        "large batches and a full evaluation every step (one core busy)",
        batch=2048,
        full_eval=True,
        loader_wait_s=0.0,
    ),
    Phase("memory-growth", 0.4, "every step keeps a copy of its activations (a leak)", leak=True),
    Phase("lr-spike", 0.65, "the learning rate jumps 15x", lr_scale=15.0, hold=True),
    Phase("recovery", 0.75, "learning rate back, the kept memory freed"),
)

BASE_LR = 0.05
MOMENTUM = 0.9
FEATURES = 32
CLASSES = 8
HIDDEN = 128
ROWS = 8192
EVAL_EVERY = 25
LABEL_NOISE = 0.1
SPLIT = ROWS * 7 // 8
"""Rows before this are for training, the rest held out."""


@dataclass(frozen=True, slots=True)
class JobResult:
    steps: int
    final_loss: float
    final_accuracy: float
    peak_held_mb: float


LogFn = Callable[[dict[str, float], int], None]
MarkFn = Callable[[str], None]


def make_data(rng: np.random.Generator) -> tuple[Array, npt.NDArray[np.int64]]:
    """Overlapping Gaussian clusters, two per class, with 10 % of the labels drawn at random.

    The overlap and the label noise keep the loss well above zero (about 0.6), so that what the
    phases do to it stays visible.
    """
    centres = rng.normal(0.0, 0.6, size=(CLASSES * 2, FEATURES))
    which = rng.integers(0, CLASSES * 2, size=ROWS)
    x = centres[which] + rng.normal(0.0, 1.0, size=(ROWS, FEATURES))
    y = which % CLASSES
    noisy = rng.random(ROWS) < LABEL_NOISE
    y[noisy] = rng.integers(0, CLASSES, size=int(noisy.sum()))
    return x, y.astype(np.int64)


class MLP:
    """``FEATURES → HIDDEN (ReLU) → CLASSES``, softmax cross-entropy, SGD with momentum."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.w1 = rng.normal(0.0, (2.0 / FEATURES) ** 0.5, size=(FEATURES, HIDDEN))
        self.b1 = np.zeros(HIDDEN)
        self.w2 = rng.normal(0.0, (1.0 / HIDDEN) ** 0.5, size=(HIDDEN, CLASSES))
        self.b2 = np.zeros(CLASSES)
        self.velocity = [np.zeros_like(p) for p in self.params()]

    def params(self) -> list[Array]:
        return [self.w1, self.b1, self.w2, self.b2]

    def forward(self, x: Array) -> tuple[Array, Array]:
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        return h, h @ self.w2 + self.b2

    @staticmethod
    def loss(logits: Array, y: npt.NDArray[np.int64]) -> tuple[float, Array]:
        """Mean cross-entropy (computed stably) and the softmax probabilities."""
        z = logits - logits.max(axis=1, keepdims=True)
        ez = np.exp(z)
        sums = ez.sum(axis=1, keepdims=True)
        logp = z - np.log(sums)
        return float(-logp[np.arange(len(y)), y].mean()), ez / sums

    def step(self, x: Array, y: npt.NDArray[np.int64], lr: float) -> tuple[float, float, Array]:
        """One SGD step; returns the loss, the gradient norm and the hidden activations."""
        h, logits = self.forward(x)
        loss, probs = self.loss(logits, y)
        d = probs
        d[np.arange(len(y)), y] -= 1.0
        d /= len(y)
        gw2 = h.T @ d
        gb2 = d.sum(axis=0)
        dh = (d @ self.w2.T) * (h > 0)
        gw1 = x.T @ dh
        gb1 = dh.sum(axis=0)
        grads = [gw1, gb1, gw2, gb2]
        norm = float(np.sqrt(sum(float((g * g).sum()) for g in grads)))
        for p, v, g in zip(self.params(), self.velocity, grads, strict=True):
            v *= MOMENTUM
            v -= lr * g
            p += v
        return loss, norm, h

    def accuracy(self, x: Array, y: npt.NDArray[np.int64]) -> float:
        return float((self.forward(x)[1].argmax(axis=1) == y).mean())


def phase_at(fraction: float) -> Phase:
    current = PHASES[0]
    for p in PHASES:
        if fraction >= p.start:
            current = p
    return current


class Backend(Protocol):
    """What the NumPy and the PyTorch jobs do differently: the arithmetic, on their own data.

    Values it returns are what ``log`` gets: floats here, 0-d tensors in PyTorch.
    """

    def step(self, idx: npt.NDArray[np.int64], lr: float) -> tuple[Any, Any, Any]:
        """One SGD step on the training rows ``idx``: the loss, the gradient norm, and the
        hidden activations (what the leaking phase keeps copies of)."""
        ...

    def full_eval(self) -> None:
        """The loss over every training row (the CPU-heavy phase's extra work)."""
        ...

    def nbytes(self, h: Any) -> int:
        """The size of ``h`` in bytes."""
        ...

    def keep(self, h: Any) -> Any:
        """A copy of ``h`` that touches every page."""
        ...

    def step_done(self) -> dict[str, Any]:
        """Wait for the step's work to finish; extra values to log with it."""
        ...

    def accuracy(self) -> Any:
        """Accuracy on the held-out rows."""
        ...


class NumpyBackend:
    """:class:`MLP` on the generated data set."""

    def __init__(self, rng: np.random.Generator) -> None:
        x, y = make_data(rng)
        self.x_train, self.y_train, self.x_test, self.y_test = (
            x[:SPLIT],
            y[:SPLIT],
            x[SPLIT:],
            y[SPLIT:],
        )
        self.model = MLP(rng)

    def step(self, idx: npt.NDArray[np.int64], lr: float) -> tuple[Any, Any, Any]:
        return self.model.step(self.x_train[idx], self.y_train[idx], lr)

    def full_eval(self) -> None:
        _, logits = self.model.forward(self.x_train)
        self.model.loss(logits, self.y_train)

    def nbytes(self, h: Any) -> int:
        return int(h.nbytes)

    def keep(self, h: Any) -> Any:
        return np.ones_like(h)

    def step_done(self) -> dict[str, Any]:
        return {}

    def accuracy(self) -> Any:
        return self.model.accuracy(self.x_test, self.y_test)


def run_phases(
    duration: float,
    log: Callable[[dict[str, Any], int], None],
    mark: MarkFn,
    backend: Backend,
    rng: np.random.Generator,
    *,
    leak_mb: float = 128.0,
    clock: Callable[[], float] = time.monotonic,
) -> JobResult:
    """Train ``backend`` for ``duration`` seconds of wall time through :data:`PHASES`.

    Batches are drawn from ``rng``, so two backends built from the same seed see the same ones.
    """
    leak_start, leak_end = leak_window()
    held: list[Any] = []
    held_bytes = 0
    peak_held = 0
    begin = clock()
    phase: Phase | None = None
    step = 0
    loss: Any = float("nan")
    acc: Any = float("nan")
    while True:
        now = clock()
        fraction = (now - begin) / duration
        if fraction >= 1.0:
            break
        p = phase_at(fraction)
        if p is not phase:
            if not (p.leak or p.hold):
                held.clear()
                held_bytes = 0
            phase = p
            mark(f"phase {p.name}: {p.description}")
        t0 = time.perf_counter()
        if p.loader_wait_s:
            time.sleep(p.loader_wait_s)
        idx = rng.integers(0, SPLIT, size=p.batch)
        lr = BASE_LR * p.lr_scale
        loss, norm, h = backend.step(idx, lr)
        if p.full_eval:
            backend.full_eval()
        if p.leak:
            # on schedule to hold leak_mb when the phase ends
            target = leak_mb * 2**20 * min(1.0, (fraction - leak_start) / (leak_end - leak_start))
            nbytes = backend.nbytes(h)
            while held_bytes + nbytes <= target:
                held.append(backend.keep(h))
                held_bytes += nbytes
            peak_held = max(peak_held, held_bytes)
        extra = backend.step_done()
        step_time = time.perf_counter() - t0
        values: dict[str, Any] = {
            "loss": loss,
            "lr": lr,
            "step_time": step_time,
            "grad_norm": norm,
            "held_mb": held_bytes / 2**20,
        }
        values.update(extra)
        if step % EVAL_EVERY == 0:
            acc = backend.accuracy()
            values["accuracy"] = acc
        log(values, step)
        step += 1
    if step:
        acc = backend.accuracy()
        log({"accuracy": acc}, step - 1)
    return JobResult(step, float(loss), float(acc), peak_held / 2**20)


def train(
    duration: float,
    log: LogFn,
    mark: MarkFn,
    *,
    seed: int = 0,
    leak_mb: float = 128.0,
    clock: Callable[[], float] = time.monotonic,
) -> JobResult:
    """Train for ``duration`` seconds of wall time through :data:`PHASES`."""
    rng = np.random.default_rng(seed)
    backend = NumpyBackend(rng)
    return run_phases(duration, log, mark, backend, rng, leak_mb=leak_mb, clock=clock)


def leak_window() -> tuple[float, float]:
    """Where the leaking phase starts and ends, as fractions of the duration."""
    for i, p in enumerate(PHASES):
        if p.leak:
            end = PHASES[i + 1].start if i + 1 < len(PHASES) else 1.0
            return p.start, end
    return 0.0, 1.0


def job_args(argv: Sequence[str] | None, prog: str, description: str) -> argparse.Namespace:
    """The command line both jobs take: ``--duration``, ``--seed``, ``--leak-mb``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--leak-mb", type=float, default=128.0, help="memory kept in the memory-growth phase"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.leak_mb < 0:
        parser.error("--duration must be positive and --leak-mb not negative")
    return args


def run_job(
    args: argparse.Namespace,
    train_fn: Callable[[Callable[[dict[str, Any], int], None], MarkFn], JobResult],
    *,
    model: str,
    tags: list[str],
    extra_config: dict[str, Any] | None = None,
) -> JobResult:
    """Train inside an edgescope run whose config says what runs; the run ends with the job."""
    import edgescope

    config: dict[str, Any] = {
        **(extra_config or {}),
        "model": model,
        "optimizer": f"SGD momentum {MOMENTUM}",
        "lr": BASE_LR,
        "rows": ROWS,
        "duration_s": args.duration,
        "seed": args.seed,
        "leak_mb": args.leak_mb,
        "phases": [p.name for p in PHASES],
    }
    run = edgescope.init(name="edgescope-demo", config=config, tags=tags)
    try:
        result = train_fn(lambda values, step: edgescope.log(values, step=step), edgescope.mark)
    except BaseException:
        edgescope.finish(exit_code=1)
        raise
    edgescope.finish(exit_code=0)
    del run
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = job_args(
        argv,
        "python -m edgescope.demo.job",
        "The edgescope demo's training job: a NumPy MLP with phases.",
    )
    result = run_job(
        args,
        lambda log, mark: train(args.duration, log, mark, seed=args.seed, leak_mb=args.leak_mb),
        model=f"MLP {FEATURES}-{HIDDEN}-{CLASSES}, ReLU",
        tags=["demo", "numpy"],
    )
    print(
        f"demo job: {result.steps} steps, loss {result.final_loss:.4f}, "
        f"accuracy {result.final_accuracy:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
