"""The demo's training job in PyTorch: the NumPy job's data, model and phases, in torch.

``edgescope demo`` runs this job instead of :mod:`edgescope.demo.job` when PyTorch is installed
(``--framework`` chooses). It learns the same generated data set from the same initial weights
and the same batches (all drawn from one NumPy generator, as there), with the same two-layer
perceptron built from ``nn.Linear`` layers, ``cross_entropy`` and ``torch.optim.SGD`` with
momentum, through the same :data:`~edgescope.demo.job.PHASES`; it logs the same metric names
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
without it. Run it alone with ``python -m edgescope.demo.torch_job``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgescope.demo.job import (
    BASE_LR,
    CLASSES,
    FEATURES,
    HIDDEN,
    MLP,
    MOMENTUM,
    SPLIT,
    JobResult,
    MarkFn,
    job_args,
    make_data,
    run_job,
    run_phases,
)

if TYPE_CHECKING:
    # where torch is not installed mypy cannot see it (and the job cannot run): not an error
    import torch  # type: ignore[import-not-found,unused-ignore]

__all__ = ["MMAP_THRESHOLD", "THREADS", "TorchBackend", "TorchLogFn", "main", "train"]

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


class TorchBackend:
    """The NumPy job's model in torch: ``nn.Linear`` layers, ``cross_entropy``, ``optim.SGD``."""

    def __init__(self, rng: np.random.Generator, dev: torch.device) -> None:
        import torch  # type: ignore[import-not-found,unused-ignore]

        self.torch = torch
        self.dev = dev
        self.cuda = dev.type == "cuda"
        f64 = torch.float64
        x_np, y_np = make_data(rng)
        x, y = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
        self.x_train, self.y_train = x[:SPLIT], y[:SPLIT]
        self.x_test, self.y_test = x[SPLIT:], y[SPLIT:]
        start = MLP(rng)  # the NumPy job's initial weights, drawn as it draws them
        self.l1 = torch.nn.Linear(FEATURES, HIDDEN, device=dev, dtype=f64)
        self.l2 = torch.nn.Linear(HIDDEN, CLASSES, device=dev, dtype=f64)
        with torch.no_grad():
            for layer, w, b in ((self.l1, start.w1, start.b1), (self.l2, start.w2, start.b2)):
                layer.weight.copy_(torch.from_numpy(w.T))
                layer.bias.copy_(torch.from_numpy(b))
        self.params = [*self.l1.parameters(), *self.l2.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=BASE_LR, momentum=MOMENTUM)
        self.cross_entropy = torch.nn.functional.cross_entropy

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden activations and the logits."""
        h = self.l1(x).relu()
        return h, self.l2(h)

    def step(self, idx: npt.NDArray[np.int64], lr: float) -> tuple[Any, Any, Any]:
        torch = self.torch
        i = torch.from_numpy(idx).to(self.dev)
        for group in self.opt.param_groups:
            group["lr"] = lr
        h, logits = self._forward(self.x_train[i])
        loss = self.cross_entropy(logits, self.y_train[i])
        self.opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # what loss.backward() calls (that one is untyped)
        norm = torch.nn.utils.get_total_norm([q.grad for q in self.params if q.grad is not None])
        self.opt.step()
        return loss.detach(), norm, h

    def full_eval(self) -> None:
        with self.torch.no_grad():
            self.cross_entropy(self._forward(self.x_train)[1], self.y_train)

    def nbytes(self, h: Any) -> int:
        return int(h.nelement() * h.element_size())

    def keep(self, h: Any) -> Any:
        return self.torch.ones_like(h)  # writes every page

    def step_done(self) -> dict[str, Any]:
        if not self.cuda:
            return {}
        cuda = self.torch.cuda
        cuda.synchronize(self.dev)  # the step's kernels are done: step_time is their time
        return {
            "cuda_alloc": cuda.memory_allocated(self.dev),
            "cuda_max_alloc": cuda.max_memory_allocated(self.dev),
        }

    def accuracy(self) -> Any:
        with self.torch.no_grad():
            hits = self._forward(self.x_test)[1].argmax(dim=1) == self.y_test
            return hits.to(self.torch.float64).mean()


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
    rng = np.random.default_rng(seed)
    backend = TorchBackend(rng, dev)
    return run_phases(duration, log, mark, backend, rng, leak_mb=leak_mb, clock=clock)


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
    args = job_args(
        argv,
        "python -m edgescope.demo.torch_job",
        "The edgescope demo's training job in PyTorch: an MLP with phases.",
    )
    import torch  # type: ignore[import-not-found,unused-ignore]

    torch.set_num_threads(THREADS)
    _fix_mmap_threshold()
    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    result = run_job(
        args,
        lambda log, mark: train(args.duration, log, mark, seed=args.seed, leak_mb=args.leak_mb),
        model=f"MLP {FEATURES}-{HIDDEN}-{CLASSES}, ReLU, float64",
        tags=["demo", "torch"],
        extra_config={"framework": f"PyTorch {torch.__version__}", "device": device},
    )
    print(
        f"demo job (PyTorch {torch.__version__} on {device}): {result.steps} steps, "
        f"loss {result.final_loss:.4f}, accuracy {result.final_accuracy:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
