"""The demo's training job: a small MLP in NumPy (``job``) or PyTorch (``torch_job``) that goes
through a CPU-heavy phase, a memory leak and a learning-rate spike. ``edgescope demo``
(:mod:`edgescope.cli.demo`) runs one under a collector."""

__all__: list[str] = []  # nothing here: each module is reached by name
