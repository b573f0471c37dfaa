"""Matching populations by optimal transport for the squared Euclidean cost.

- :func:`ot_plan`: the OT plan between two weighted point sets (exact or entropic, POT);
- :func:`barycentric_targets`: each source point's plan-weighted mean target;
- :func:`assignment`: the optimal permutation between equal-size uniform sets (scipy);
- :func:`match_populations`: matched targets for padded batches of populations;
- :func:`mccann_interpolation`: McCann's displacement interpolation (1 - t) x0 + t T(x0).

Costs are computed in float64 from direct differences (scipy's ``cdist``), not from the
expansion |x|^2 + |y|^2 - 2 x.y, which loses the digits of small distances far from the origin.
"""

from __future__ import annotations

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from flowsci.population.batch import check_mask, check_points

OT_PLAN_METHODS = ("auto", "exact", "sinkhorn")


def _numpy64(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def _check_cloud(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a non-empty (n, d) tensor, got {shape}")


def _weights(w: torch.Tensor | None, n: int, name: str) -> np.ndarray:
    """Weights (n,) as float64 numpy, normalised to total mass 1 (uniform when None)."""
    if w is None:
        return np.full(n, 1.0 / n)
    w = _numpy64(torch.as_tensor(w))
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"{name} must be ({n},) finite non-negative weights with a positive sum, "
                         f"got shape {w.shape}")
    return w / w.sum()


def ot_plan(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
            method: str = "auto", reg: float = 0.01, max_exact: int = 2000, max_iter: int = 1000
            ) -> torch.Tensor:
    """(n, m) float64 OT plan (on x's device) between x (n, d) weighted by a and y (m, d)
    weighted by b, for the cost |x_i - y_j|^2.

    ``a``, ``b``: (n,), (m,) non-negative weights, normalised to mass 1 (uniform when None).
    ``method``: ``exact`` (``ot.emd``, network simplex: a vertex of the transport polytope),
    ``sinkhorn`` (entropic, ``ot.sinkhorn(method="sinkhorn_stabilized")`` with ``reg`` in
    units of the largest cost and at most ``max_iter`` iterations; POT warns if it stops
    before converging), ``auto`` (exact when max(n, m) <= ``max_exact``, else sinkhorn).
    """
    _check_cloud(x, "x")
    _check_cloud(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same point dimension, got {x.shape[1]} and {y.shape[1]}")
    if method not in OT_PLAN_METHODS:
        raise ValueError(f"method must be one of {', '.join(OT_PLAN_METHODS)}, got {method!r}")
    if not reg > 0:
        raise ValueError(f"reg must be > 0 (in units of the largest cost), got {reg}")
    if not (isinstance(max_exact, int) and max_exact >= 1):
        raise ValueError(f"max_exact must be an integer >= 1, got {max_exact!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    n, m = x.shape[0], y.shape[0]
    wa, wb = _weights(a, n, "a"), _weights(b, m, "b")
    cost = cdist(_numpy64(x), _numpy64(y), "sqeuclidean")
    if method == "exact" or (method == "auto" and max(n, m) <= max_exact):
        plan = ot.emd(wa, wb, cost, numItermax=10_000_000)
    else:
        scale = cost.max()
        scaled = cost / scale if scale > 0 else cost
        # Subtracting row then column minima shifts only the dual potentials (same plan) and
        # leaves a zero in every row and column: the first Gibbs kernel exp(-cost / reg) then
        # has no all-underflowed row or column, which would give NaN for small reg.
        scaled = scaled - scaled.min(1, keepdims=True)
        scaled = scaled - scaled.min(0, keepdims=True)
        plan = ot.sinkhorn(wa, wb, scaled, reg, method="sinkhorn_stabilized", numItermax=max_iter)
        if not (np.isfinite(plan).all() and plan.sum() > 0):
            raise ValueError(f"sinkhorn failed (reg={reg} may be too small for this cost); increase reg")
    return torch.from_numpy(np.asarray(plan, dtype=np.float64)).to(x.device)


def barycentric_targets(y: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """(n, d) in y's dtype: row i's plan-weighted mean of y (m, d), plan: (n, m) with positive rows.

    For an exact plan between equal-size uniform sets (a permutation matrix / n) this is the
    permutation image of the source points.
    """
    _check_cloud(y, "y")
    if not isinstance(plan, torch.Tensor) or plan.ndim != 2 or plan.shape[1] != y.shape[0]:
        shape = tuple(plan.shape) if isinstance(plan, torch.Tensor) else type(plan).__name__
        raise ValueError(f"plan must be an (n, {y.shape[0]}) tensor, got {shape}")
    mass = plan.sum(1, keepdim=True)
    if not (mass > 0).all():
        raise ValueError(f"plan rows {(mass.flatten() <= 0).nonzero().flatten().tolist()} carry no mass: "
                         "their barycentric target is undefined")
    return ((plan / mass) @ y.to(plan.dtype)).to(y.dtype)


def assignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, n) long on x's device: the optimal permutation between x and y (B, n, d) for the
    cost sum_i |x_i - y_perm(i)|^2, so y[b, perm[b, i]] is x[b, i]'s partner."""
    check_points(x, "x")
    check_points(y, "y")
    if x.shape != y.shape:
        raise ValueError("x and y must have the same shape (B, n, d), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    xs, ys = _numpy64(x), _numpy64(y)
    perm = np.empty(x.shape[:2], dtype=np.int64)
    for b in range(x.shape[0]):
        perm[b] = linear_sum_assignment(cdist(xs[b], ys[b], "sqeuclidean"))[1]
    return torch.from_numpy(perm).to(x.device)


def match_populations(x0: torch.Tensor, x1: torch.Tensor, mask0: torch.Tensor | None = None,
                      mask1: torch.Tensor | None = None, method: str = "auto", reg: float = 0.01,
                      max_exact: int = 2000) -> torch.Tensor:
    """(B, N0, d): each valid point of x0 (B, N0, d) moved to its matched target.

    The target is the barycentric target of the OT plan (:func:`ot_plan`, uniform weights)
    between the valid points of x0[b] and x1[b] (B, N1, d); padded rows keep x0's values
    (zero displacement). With the exact plan and equal sizes it is the optimal permutation
    of x1[b].
    """
    check_points(x0, "x0")
    check_points(x1, "x1")
    if x0.shape[0] != x1.shape[0] or x0.shape[2] != x1.shape[2]:
        raise ValueError(f"x0 and x1 must share B and d, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    check_mask(mask0, x0.shape[0], x0.shape[1], "mask0")
    check_mask(mask1, x1.shape[0], x1.shape[1], "mask1")
    matched = x0.clone()
    for b in range(x0.shape[0]):
        rows = slice(None) if mask0 is None else mask0[b]
        source, target = x0[b][rows], x1[b] if mask1 is None else x1[b][mask1[b]]
        plan = ot_plan(source, target, method=method, reg=reg, max_exact=max_exact)
        matched[b][rows] = barycentric_targets(target, plan.to(target.device)).to(x0.dtype)
    return matched


def mccann_interpolation(x0: torch.Tensor, matched: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """(B, N, d): (1 - t) x0 + t matched, the McCann displacement interpolation between x0 and
    its matched targets (B, N, d); t: a float or (B,) per population."""
    check_points(x0, "x0")
    if not isinstance(matched, torch.Tensor) or matched.shape != x0.shape:
        shape = tuple(matched.shape) if isinstance(matched, torch.Tensor) else type(matched).__name__
        raise ValueError(f"matched must have x0's shape {tuple(x0.shape)}, got {shape}")
    if isinstance(t, torch.Tensor):
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t must be a float or a ({x0.shape[0]},) tensor, got shape {tuple(t.shape)}")
        t = t.to(x0.dtype).reshape(-1, 1, 1)
    return (1 - t) * x0 + t * matched
