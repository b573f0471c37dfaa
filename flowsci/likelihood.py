"""Log-likelihood of data under a flow by the instantaneous change of variables.

Along a trajectory of dx/dt = v(x, t) the density obeys the continuity equation
dp_t/dt + div(p_t v) = 0, hence d/dt log p_t(x_t) = -div v(x_t, t) and

    log p_1(x_1) = log p_0(x_0) - int_0^1 div v(x_t, t) dt

with t = 0 the source (a known density p_0) and t = 1 the data. We integrate the augmented
state [x, l] with d/dt [x, l] = [v, div v] from t = 1 (x = x_1, l = 0) down to t = 0 with one
of flowsci's solvers, so l(0) = int_1^0 div v dt = -int_0^1 div v dt and
log p_1(x_1) = log p_0(x_0) + l(0).

On a :class:`~flowsci.spaces.Space` (``space=``) the divergence is the Riemannian one
(:meth:`Space.divergence`), the densities are with respect to the Riemannian volume, and the
augmented state lives on the product of the space with R (the solver keeps x on the space).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowsci.divergence import PROBES, draw_probes, velocity_divergence
from flowsci.registry import SOLVERS
from flowsci.solvers import Solver, VelocityFn, check_grid, uniform_grid
from flowsci.spaces import Euclidean, Space
from flowsci.spaces.product import Product

DIVERGENCES = ("exact", "hutchinson")


@dataclass(frozen=True)
class LikelihoodResult:
    """log_p: (B,) log p_1(x_1); x0: (B, *D) the source point x_1 flows back to; nfe: velocity
    evaluations (each one costs D vector-Jacobian products for the exact divergence, n_probes
    for Hutchinson)."""

    log_p: torch.Tensor
    x0: torch.Tensor
    nfe: int


def log_likelihood(velocity: VelocityFn, x1: torch.Tensor,
                   source_log_prob: Callable[[torch.Tensor], torch.Tensor], *,
                   solver: Solver | str = "rk4", steps: int | None = None, times: torch.Tensor | None = None,
                   divergence: str = "exact", probe: str = "rademacher", n_probes: int = 1,
                   generator: torch.Generator | None = None, grad: bool = False,
                   space: Space | None = None) -> LikelihoodResult:
    """log p_1(x1) under the flow of ``velocity`` v(x, t) (x: (B, *D), t: (B,)) from a source
    with log density ``source_log_prob`` ((B, *D) -> (B,)) at t = 0; see the module docstring.
    With ``space`` the points are (B, *point_shape), the velocity returns tangent vectors, the
    divergence is Riemannian and Hutchinson probes live in the tangent space.

    The augmented state [x, l] is integrated from t = 1 to t = 0 by ``solver`` (a Solver or a
    registered name) on ``times`` (a grid from 1 to 0 or from 0 to 1; it is run from 1 to 0) or
    on a uniform grid of ``steps`` steps (default 100). ``divergence="hutchinson"`` replaces the
    exact trace by the mean over ``n_probes`` probes, drawn once (with ``generator``) and kept
    along the whole trajectory: an unbiased estimate of log p_1 up to the solver's error
    (``generator`` must live on x1's device).
    ``grad=True`` keeps the graph (gradients reach x1 and the parameters of ``velocity``);
    otherwise the result is detached, and it also runs under ``torch.no_grad`` because the
    divergence enables autograd locally.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    if x1.dim() < 2 or x1.shape[0] < 1:
        raise ValueError("x1 must be a batch (B, *D) with at least one data dimension, "
                         f"got shape {tuple(x1.shape)}")
    grid = _likelihood_grid(steps, times)
    if isinstance(solver, str):
        solver = SOLVERS.create(solver, "solver")
    differentiable = grad and torch.is_grad_enabled()
    if space is not None and not isinstance(space, Euclidean):
        return _manifold_log_likelihood(velocity, x1, source_log_prob, space, solver, grid, divergence,
                                        probe, n_probes, generator, differentiable)
    batch, shape = x1.shape[0], x1.shape[1:]
    size = shape.numel()
    probes = (draw_probes(n_probes, x1, probe, generator) if divergence == "hutchinson" else None)

    def augmented(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = z[:, :size].reshape(batch, *shape)
        with torch.enable_grad():
            if not (differentiable and x.requires_grad):
                x = x.detach().requires_grad_(True)
            v = velocity(x, t)
            div = velocity_divergence(v, x, probes, create_graph=differentiable)
        return torch.cat([v.reshape(batch, size), div[:, None]], dim=1)

    z1 = torch.cat([x1.reshape(batch, size), torch.zeros(batch, 1, dtype=x1.dtype, device=x1.device)], dim=1)
    result = solver.integrate(augmented, z1, grid, grad=differentiable)
    x0 = result.x[:, :size].reshape(batch, *shape)
    with torch.set_grad_enabled(differentiable):
        log_p0 = source_log_prob(x0)
    if log_p0.shape != (batch,):
        raise ValueError(f"source_log_prob must return shape ({batch},), got {tuple(log_p0.shape)}")
    return LikelihoodResult(log_p=log_p0 + result.x[:, size], x0=x0, nfe=result.nfe)


def _manifold_log_likelihood(velocity: VelocityFn, x1: torch.Tensor,
                             source_log_prob: Callable[[torch.Tensor], torch.Tensor], space: Space,
                             solver: Solver, grid: torch.Tensor, divergence: str, probe: str, n_probes: int,
                             generator: torch.Generator | None, differentiable: bool) -> LikelihoodResult:
    """:func:`log_likelihood` on a Space: the state (x, l) lives on space x R."""
    if tuple(x1.shape[1:]) != tuple(space.point_shape):
        raise ValueError(f"x1 must be (B, *{tuple(space.point_shape)}) points of {space!r}, "
                         f"got {tuple(x1.shape)}")
    batch = x1.shape[0]
    augmented_space = Product([space, Euclidean(1)])
    probes = (draw_probes(n_probes, x1.new_zeros(batch, space.dim), probe, generator)
              if divergence == "hutchinson" else None)

    def augmented(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, _ = augmented_space.split_points(z)
        v, div = space.divergence(lambda y: velocity(y, t), x, probes, create_graph=differentiable)
        if not differentiable:
            v, div = v.detach(), div.detach()
        return augmented_space.join_tangents([v, div[:, None]])

    z1 = augmented_space.join_points([x1, x1.new_zeros(batch, 1)])
    result = solver.integrate(augmented, z1, grid, space=augmented_space, grad=differentiable)
    x0, log_change = augmented_space.split_points(result.x)
    with torch.set_grad_enabled(differentiable):
        log_p0 = source_log_prob(x0)
    if log_p0.shape != (batch,):
        raise ValueError(f"source_log_prob must return shape ({batch},), got {tuple(log_p0.shape)}")
    return LikelihoodResult(log_p=log_p0 + log_change[:, 0], x0=x0, nfe=result.nfe)


def _likelihood_grid(steps: int | None, times: torch.Tensor | None) -> torch.Tensor:
    """The grid from t = 1 to t = 0: ``times`` (either order) or ``steps`` uniform steps."""
    if times is None:
        return uniform_grid(100 if steps is None else steps, 1.0, 0.0)
    if steps is not None:
        raise ValueError("pass either steps or times, not both")
    grid = check_grid(times)
    if grid[0] < grid[-1]:
        grid = grid.flip(0)
    if float(grid[0]) != 1.0 or float(grid[-1]) != 0.0:
        raise ValueError(f"times must run between t = 1 (data) and t = 0 (source), got endpoints "
                         f"{float(grid[0])} and {float(grid[-1])}")
    return grid
