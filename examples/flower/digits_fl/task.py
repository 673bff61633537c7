"""The model and the data: softmax regression in NumPy on scikit-learn's bundled digits (8x8
images, 1,797 of them, 10 classes; no download), split into partitions by index."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

FEATURES = 64
CLASSES = 10


def load_partition(
    partition: int, partitions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This partition's train and test split: every ``partitions``-th image from ``partition``,
    the last fifth of them held out for evaluation."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    mine = np.arange(partition, len(y), partitions)
    cut = len(mine) * 4 // 5
    return x[mine[:cut]], y[mine[:cut]], x[mine[cut:]], y[mine[cut:]]


def initial_weights() -> list[np.ndarray]:
    return [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]


def _probabilities(w: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    z = x @ w[0] + w[1]
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return p


def loss_and_accuracy(w: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = _probabilities(w, x)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-9).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


def train(
    w: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float
) -> tuple[list[np.ndarray], float]:
    """Full-batch gradient descent on the cross-entropy; the new weights and the last loss."""
    weights, bias = w[0].copy(), w[1].copy()
    onehot = np.eye(CLASSES, dtype=np.float32)[y]
    loss = 0.0
    for _ in range(epochs):
        p = _probabilities([weights, bias], x)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-9).mean())
        grad = (p - onehot) / len(y)
        weights -= lr * x.T @ grad
        bias -= lr * grad.sum(axis=0)
    return [weights, bias], loss
