"""LEACE, least-squares concept erasure in closed form (Belrose et al. 2023, Theorem 4.3).

An affine map ``r(x) = x - M (x - mean)`` with ``M = W^+ P W``: ``W`` whitens the features
(``Sigma_XX^(-1/2)``) and ``P`` projects onto the whitened cross-covariance with the one-hot
concept. After it, the features have zero covariance with every concept label, so no linear
classifier reads the concept better than a constant does (on the distribution it was fitted
on), while the features move as little as possible in the least-squares sense. Adversarial MI
penalties leave linearly readable information behind (Elazar & Goldberg 2018); this removes it.

>>> rng = np.random.default_rng(0)
>>> labels = rng.integers(0, 2, 400)
>>> features = rng.normal(size=(400, 3)) + 3.0 * labels[:, None] * np.array([1.0, 0.0, 0.0])
>>> erased = Eraser(3).fit(features, labels, num_labels=2)(torch.from_numpy(features)).numpy()
>>> gap = erased[labels == 1].mean(0) - erased[labels == 0].mean(0)  # was (3, 0, 0)
>>> bool(np.abs(gap).max() < 1e-9)
True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def eraser_matrix(
    x: np.ndarray, labels: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), M (d, d)) of the LEACE eraser of ``labels`` from features ``x`` (n, d)."""
    x = np.asarray(x, np.float64)
    z = np.eye(num_labels)[np.asarray(labels)]
    mean = x.mean(0)
    xc, zc = x - mean, z - z.mean(0)
    sigma_xx = xc.T @ xc / len(x)
    sigma_xz = xc.T @ zc / len(x)
    eigval, eigvec = np.linalg.eigh(sigma_xx)
    keep = eigval > eigval.max() * 1e-10  # pseudo-inverse on the span of the data
    root = np.sqrt(eigval[keep])
    whiten = eigvec[:, keep] @ np.diag(1 / root) @ eigvec[:, keep].T  # W
    unwhiten = eigvec[:, keep] @ np.diag(root) @ eigvec[:, keep].T  # W^+
    u, s, _ = np.linalg.svd(whiten @ sigma_xz, full_matrices=False)
    u = u[:, s > s.max(initial=0) * 1e-10]
    return mean, unwhiten @ (u @ u.T) @ whiten


class Eraser(nn.Module):
    """The affine eraser as a module (its mean and matrix are buffers, saved with a run)."""

    mean: torch.Tensor
    matrix: torch.Tensor

    def __init__(self, num_features: int):
        super().__init__()
        # float64: the matrix can have a large norm on ill-conditioned features
        self.register_buffer("mean", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("matrix", torch.zeros(num_features, num_features, dtype=torch.float64))

    def fit(self, x: np.ndarray, labels: np.ndarray, num_labels: int) -> Eraser:
        mean, matrix = eraser_matrix(x, labels, num_labels)
        self.mean.copy_(torch.as_tensor(mean))
        self.matrix.copy_(torch.as_tensor(matrix))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - ((x.double() - self.mean) @ self.matrix.T).to(x.dtype)
