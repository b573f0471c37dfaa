"""Sample-quality and path metrics.

Every name says what it returns: :func:`wasserstein` is W_p (not W_p^p),
:func:`geodesic_wasserstein` is W_p for the geodesic distance of a Space (not W_p^p: FoldFlow's
SO(3) "W1" is in fact W_2^2 and its "W2" the root of E angle^4; flowsci labels them correctly),
:func:`sliced_wasserstein` is SW_p (not SW_p^p), :func:`mmd_rbf` is the MMD (not MMD^2),
:func:`transport_cost` is E|X1 - X0|^2 (a squared distance, no root), :func:`straightness`
is the squared-deviation estimator Ŝ, :func:`psnr` the peak signal-to-noise ratio of each
sample (dB). Batches (N, *D) are compared on flattened features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist

from flowsci.spaces import Space


def _flat64(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(x.shape[0], -1).double().cpu().numpy()


def _check_features(xa: np.ndarray, ya: np.ndarray) -> None:
    if xa.shape[1] != ya.shape[1]:
        raise ValueError("x and y must have the same number of features, "
                         f"got {xa.shape[1]} and {ya.shape[1]}")


def wasserstein(x: torch.Tensor, y: torch.Tensor, p: int = 2) -> float:
    """Exact W_p between the empirical measures of x (N, *D) and y (M, *D), uniform weights.

    Solved as a linear program with POT's network simplex on the |x - y|^p cost; returns
    W_p (not W_p^p).
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xa, ya = _flat64(x), _flat64(y)
    _check_features(xa, ya)
    # Direct differences: POT's |x|^2 + |y|^2 - 2x.y expansion loses the digits of small
    # distances between points far from the origin.
    cost = cdist(xa, ya, "euclidean") ** p
    a = np.full(len(xa), 1.0 / len(xa))
    b = np.full(len(ya), 1.0 / len(ya))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000)) ** (1.0 / p)


def geodesic_wasserstein(space: Space, x: torch.Tensor, y: torch.Tensor, p: int = 2) -> float:
    """Exact W_p between the empirical measures of x (N, *point_shape) and y (M, *point_shape)
    for the geodesic distance of ``space`` (on SO(3): the angle of the relative rotation).

    The (N, M) distances are computed in float64 and the LP is solved with POT's network
    simplex; returns W_p (not W_p^p). A 5000 x 5000 problem takes minutes; 2000 seconds.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    for name, z in (("x", x), ("y", y)):
        if tuple(z.shape[1:]) != tuple(space.point_shape):
            raise ValueError(f"{name} must be (N, *{tuple(space.point_shape)}) points of {space!r}, "
                             f"got {tuple(z.shape)}")
    cost = space.pairwise_dist(x.detach().double().cpu(), y.detach().double().cpu()).numpy() ** p
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000)) ** (1.0 / p)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 200, p: int = 2,
                       seed: int = 0) -> float:
    """Monte-Carlo sliced Wasserstein distance SW_p = (E_theta W_p^p(theta.x, theta.y))^(1/p).

    x: (N, *D), y: (M, *D); theta uniform on the unit sphere of R^F (F = prod D), estimated
    with ``n_projections`` directions from ``seed`` (POT's ``ot.sliced_wasserstein_distance``,
    which returns the p-th root; its own RandomState, so numpy's and POT's global RNGs are
    left alone). Returns SW_p, not SW_p^p.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    xa, ya = _flat64(x), _flat64(y)
    _check_features(xa, ya)
    return float(ot.sliced_wasserstein_distance(xa, ya, n_projections=n_projections, p=p,
                                                seed=np.random.RandomState(seed)))


def mmd_rbf(x: torch.Tensor, y: torch.Tensor,
            bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Maximum mean discrepancy between the empirical measures of x (N, *D) and y (M, *D).

    Kernel k(a, b) = mean over h in ``bandwidths`` of exp(-|a - b|^2 / (2 h^2)). Returns the
    MMD (not MMD^2) of the two empirical measures, i.e. the root of the biased V-statistic
    mean k(x, x') + mean k(y, y') - 2 mean k(x, y) (all pairs, diagonals included). It is a
    metric between empirical measures: 0 for identical sample sets, symmetric, never
    negative; as an estimate of the population MMD^2 its square is biased upward by about
    (1/N + 1/M)(1 - E k(X, X')).
    """
    if not bandwidths or min(bandwidths) <= 0:
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths!r}")
    xa, ya = _flat64(x), _flat64(y)
    _check_features(xa, ya)
    # Direct squared differences, for the same reason as in `wasserstein`.
    dxx, dyy, dxy = (cdist(a, b, "sqeuclidean") for a, b in ((xa, xa), (ya, ya), (xa, ya)))
    mmd2 = np.mean([np.exp(-dxx / (2 * h * h)).mean() + np.exp(-dyy / (2 * h * h)).mean()
                    - 2 * np.exp(-dxy / (2 * h * h)).mean() for h in bandwidths])
    return float(np.sqrt(max(mmd2, 0.0)))  # the square of an RKHS norm; clip rounding below 0


def transport_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared displacement of given pairs, E|X1 - X0|^2 (squared Euclidean, no root).

    x0, x1: (B, *D), row i of x0 paired with row i of x1 (e.g. a flow's start and end
    points). Not a distance between distributions: it is >= W2^2 of the two empirical
    measures, with equality for an optimal pairing.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    return float((x1.detach().double() - x0.detach().double()).flatten(1).pow(2).sum(1).mean())


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


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each sample, 10 log10(data_range^2 / MSE), in dB: x and
    reference (B, *D) -> (B,); ``data_range`` is the span of valid values (1 for [0, 1] pixels,
    2 for [-1, 1]). A sample equal to its reference has PSNR +inf."""
    if x.shape != reference.shape or x.dim() < 1:
        raise ValueError(f"x and reference must be batches (B, *D) of one shape, got {tuple(x.shape)} "
                         f"and {tuple(reference.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = (x - reference).double().square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)

