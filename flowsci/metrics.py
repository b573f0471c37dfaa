"""Sample-quality and path metrics."""

from __future__ import annotations

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist


def wasserstein(x: torch.Tensor, y: torch.Tensor, p: int = 2) -> float:
    """Exact W_p between the empirical measures of x (N, D) and y (M, D), uniform weights.

    Solved as a linear program with POT's network simplex on the |x - y|^p cost; returns
    W_p (not W_p^p).
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xa = x.detach().reshape(x.shape[0], -1).double().cpu().numpy()
    ya = y.detach().reshape(y.shape[0], -1).double().cpu().numpy()
    # Direct differences: POT's |x|^2 + |y|^2 - 2x.y expansion loses the digits of small
    # distances between points far from the origin.
    cost = cdist(xa, ya, "euclidean") ** p
    a = np.full(len(xa), 1.0 / len(xa))
    b = np.full(len(ya), 1.0 / len(ya))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000)) ** (1.0 / p)


def straightness(trajectory: torch.Tensor) -> float:
    """Ŝ = mean over steps and samples of |(x_{i+1} - x_i)/dt - (x_N - x_0)|^2 on a uniform grid.

    trajectory: (N+1, B, *D). Zero for straight constant-speed paths.
    """
    steps = trajectory.shape[0] - 1
    if steps < 1:
        raise ValueError("a trajectory needs at least two states")
    chord = trajectory[-1] - trajectory[0]
    increments = (trajectory[1:] - trajectory[:-1]) * steps
    return float((increments - chord).pow(2).flatten(2).sum(-1).mean())
