"""Where the real data that tests use lies: ``tests/fixtures/`` (see its README).

``tests/conftest.py`` puts this folder on ``sys.path``, so any test imports it as ``realdata``.
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
H200_RUN = FIXTURES / "h200-mlp-training.jsonl"
"""The real PyTorch run on an NVIDIA H200: NVML at 10 Hz, per-step loss, step time, CUDA peaks."""
H200_SMI = FIXTURES / "h200-nvidia-smi-q.xml"
"""``nvidia-smi -q -x`` of the same GPU right after the run."""
