"""The demo's training job in PyTorch: the NumPy job's data, model and phases, in torch.

``edgescope demo`` runs this job instead of :mod:`edgescope._demo_job` when PyTorch is installed
(``--framework`` chooses). It learns the same generated data set from the same initial weights
and the same batches (all drawn from one NumPy generator, as there), with the same two-layer
perceptron built from ``nn.Linear`` layers, ``cross_entropy`` and ``torch.optim.SGD`` with
momentum, through the same :data:`~edgescope._demo_job.PHASES`; it logs the same metric names
and phase marks, so the TUI's views and the collector's detectors see the same things.

What is PyTorch's own:

- ``loss``, ``grad_norm`` and ``accuracy`` are the 0-d tensors torch computes, handed to
  ``edgescope.log`` as they are: the SDK reads them with ``.item()`` and never imports torch.
- On a machine with CUDA the job runs on the GPU and every step also logs ``cuda_alloc`` and
  ``cuda_max_alloc`` (bytes, from ``torch.cuda.memory_allocated`` and
  ``max_memory_allocated``), the names the TUI's memory chart and the H200 example use; the
  memory-growth phase then grows CUDA memory rather than the process's RSS. That path is a few
  lines and is not run by the tests (the machines they run on have no GPU).
- float64 throughout, as in the NumPy job: the same numbers, and a CPU-heavy phase as heavy (in
  float32 torch halves its step time and the phase barely stands out).
- One intra-op thread (:data:`THREADS`), as the NumPy job has one BLAS thread; and glibc's mmap
  threshold fixed (:data:`MMAP_THRESHOLD`), so that the RSS shows the leak and its release.

torch is imported when the job runs, not with this module: edgescope's modules all import
without it. Run it alone with ``python -m edgescope._demo_torch``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._demo_job import (
    BASE_LR,
    CLASSES,
    EVAL_EVERY,
    FEATURES,
    HIDDEN,
    MLP,
    MOMENTUM,
    PHASES,
    ROWS,
    JobResult,
    MarkFn,
    Phase,
    leak_window,
    make_data,
    phase_at,
)

if TYPE_CHECKING:
    # where torch is not installed mypy cannot see it (and the job cannot run): not an error
    import torch  # type: ignore[import-not-found,unused-ignore]

__all__ = ["MMAP_THRESHOLD", "THREADS", "TorchLogFn", "train", "main"]

THREADS = 1
"""``torch.set_num_threads`` for the job: one core, as the phases describe."""

MMAP_THRESHOLD = 64 * 1024
"""Blocks from this size up are mapped and unmapped one by one (glibc's ``M_MMAP_THRESHOLD``).

By default glibc raises that threshold to the largest block freed so far: after the CPU-heavy
phase (activations of 7 MB) the heap keeps some 40 MB, which the leak then reuses before the
RSS grows, and the memory freed at recovery stays with the process. Fixed, the RSS follows what
the job holds, as the memory view should show it.
"""

TorchLogFn = Callable[[dict[str, "float | torch.Tensor"], int], None]
"""Takes the step's values (floats and 0-d tensors) and the step."""


def _forward(
    l1: torch.nn.Linear, l2: torch.nn.Linear, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden activations and the logits."""
    h = l1(x).relu()
    return h, l2(h)


def train(
    duration: float,
    log: TorchLogFn,
    mark: MarkFn,
    *,
    seed: int = 0,
    leak_mb: float = 128.0,
    device: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobResult:
    """Train for ``duration`` seconds of wall time through :data:`PHASES`.

    ``device`` is a torch device name; by default ``"cuda"`` where CUDA is available, else
    ``"cpu"``. Thread settings are the caller's (:func:`main` sets :data:`THREADS`).
    """
    import torch  # type: ignore[import-not-found,unused-ignore]

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    f64 = torch.float64
    rng = np.random.default_rng(seed)
    x_np, y_np = make_data(rng)
    split = ROWS * 7 // 8
    x, y = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    start = MLP(rng)  # the NumPy job's initial weights, drawn as it draws them
    l1 = torch.nn.Linear(FEATURES, HIDDEN, device=dev, dtype=f64)
    l2 = torch.nn.Linear(HIDDEN, CLASSES, device=dev, dtype=f64)
    with torch.no_grad():
        for layer, w, b in ((l1, start.w1, start.b1), (l2, start.w2, start.b2)):
            layer.weight.copy_(torch.from_numpy(w.T))
            layer.bias.copy_(torch.from_numpy(b))
    params = [*l1.parameters(), *l2.parameters()]
    opt = torch.optim.SGD(params, lr=BASE_LR, momentum=MOMENTUM)
    cross_entropy = torch.nn.functional.cross_entropy

    def accuracy(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (_forward(l1, l2, xs)[1].argmax(dim=1) == ys).to(f64).mean()

    leak_start, leak_end = leak_window()
    held: list[torch.Tensor] = []
    held_bytes = 0
    peak_held = 0
    begin = clock()
    phase: Phase | None = None
    step = 0
    loss: torch.Tensor | None = None
    acc: torch.Tensor | None = None
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
        idx = torch.from_numpy(rng.integers(0, split, size=p.batch)).to(dev)
        lr = BASE_LR * p.lr_scale
        for group in opt.param_groups:
            group["lr"] = lr
        h, logits = _forward(l1, l2, x_train[idx])
        loss = cross_entropy(logits, y_train[idx])
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # what loss.backward() calls (that one is untyped)
        norm = torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
        opt.step()
        if p.full_eval:
            with torch.no_grad():
                cross_entropy(_forward(l1, l2, x_train)[1], y_train)
        if p.leak:
            # on schedule to hold leak_mb when the phase ends; ones_like writes every page
            nbytes = h.nelement() * h.element_size()
            target = leak_mb * 2**20 * min(1.0, (fraction - leak_start) / (leak_end - leak_start))
            while held_bytes + nbytes <= target:
                held.append(torch.ones_like(h))
                held_bytes += nbytes
            peak_held = max(peak_held, held_bytes)
        if cuda:
            torch.cuda.synchronize(dev)  # the step's kernels are done: step_time is their time
        step_time = time.perf_counter() - t0
        values: dict[str, float | torch.Tensor] = {
            "loss": loss.detach(),
            "lr": lr,
            "step_time": step_time,
            "grad_norm": norm,
            "held_mb": held_bytes / 2**20,
        }
        if cuda:
            values["cuda_alloc"] = torch.cuda.memory_allocated(dev)
            values["cuda_max_alloc"] = torch.cuda.max_memory_allocated(dev)
        if step % EVAL_EVERY == 0:
            acc = accuracy(x_test, y_test)
            values["accuracy"] = acc
        log(values, step)
        step += 1
    if step:
        acc = accuracy(x_test, y_test)
        log({"accuracy": acc}, step - 1)
    final_loss = float("nan") if loss is None else float(loss.item())
    final_acc = float("nan") if acc is None else float(acc.item())
    return JobResult(step, final_loss, final_acc, peak_held / 2**20)


def _fix_mmap_threshold() -> None:
    """Set :data:`MMAP_THRESHOLD` where the C library is glibc (elsewhere nothing to do)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, macOS): its allocator is left as it is
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD, from malloc.h


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgescope._demo_torch",
        description="The edgescope demo's training job in PyTorch: an MLP with phases.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--leak-mb", type=float, default=128.0, help="memory kept in the memory-growth phase"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.leak_mb < 0:
        parser.error("--duration must be positive and --leak-mb not negative")

    import torch  # type: ignore[import-not-found,unused-ignore]

    import edgescope

    torch.set_num_threads(THREADS)
    _fix_mmap_threshold()
    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    config: dict[str, Any] = {
        "framework": f"PyTorch {torch.__version__}",
        "device": device,
        "model": f"MLP {FEATURES}-{HIDDEN}-{CLASSES}, ReLU, float64",
        "optimizer": f"SGD momentum {MOMENTUM}",
        "lr": BASE_LR,
        "rows": ROWS,
        "duration_s": args.duration,
        "seed": args.seed,
        "leak_mb": args.leak_mb,
        "phases": [p.name for p in PHASES],
    }
    run = edgescope.init(name="edgescope-demo", config=config, tags=["demo", "torch"])
    try:
        result = train(
            args.duration,
            lambda values, step: edgescope.log(values, step=step),
            edgescope.mark,
            seed=args.seed,
            leak_mb=args.leak_mb,
        )
    except BaseException:
        edgescope.finish(exit_code=1)
        raise
    edgescope.finish(exit_code=0)
    del run
    print(
        f"demo job (PyTorch {torch.__version__} on {device}): {result.steps} steps, "
        f"loss {result.final_loss:.4f}, accuracy {result.final_accuracy:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
