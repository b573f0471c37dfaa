"""Inversion and reconstruction: data -> source -> data round trips for any flow and solver.

:func:`reconstruct` inverts data x1 (t = 1 -> 0) with a :class:`~flowsci.flow_matching.Sampler`
and regenerates it (0 -> 1) on the same grid; :func:`reconstruction_error` and
:func:`cycle_consistency` give the per-sample mean squared error of the two round trips, and
:func:`inversion_table` compares solvers at equal NFE per direction.

Orders: a solver of order p has a global error ~ h^p in each direction, so the round trip's
error, measured as an RMSE (the square root of the MSE), is at most ~ h^p (the MSE ~ h^(2p)).
For an even p the leading local errors of the forward and the backward step cancel (the step
with -h has the leading error term (-h)^(p+1) C), and the round trip of midpoint, Heun and RK4
is one order better than the solver: its RMSE falls as h^(p+1). Euler (p = 1) and RF-Solver-3
(p = 3) keep their order. :func:`observed_order` takes RMSE-like errors, e.g. ``row.rmse``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from flowsci.flow_matching import Sampler
from flowsci.solvers import Solver, VelocityFn

Model = Callable[..., torch.Tensor]
"""A velocity model called as model(x, t, **cond): x (B, *D), t (B,) -> (B, *D); a VelocityFn
when there are no conditions."""


@dataclass(frozen=True)
class Reconstruction:
    """x1: (B, *D) the regenerated data; x0: (B, *D) the inverted source; nfe_invert and
    nfe_sample: the solver's velocity evaluations in each direction."""

    x1: torch.Tensor
    x0: torch.Tensor
    nfe_invert: int
    nfe_sample: int


@dataclass(frozen=True)
class InversionRow:
    """One (solver, NFE) entry of :func:`inversion_table`: ``nfe`` per direction, ``steps``
    grid intervals, ``mse`` the reconstruction MSE averaged over the batch."""

    solver: str
    nfe: int
    steps: int
    mse: float

    @property
    def rmse(self) -> float:
        """sqrt(mse): the error that scales as h^order (see the module docstring)."""
        return math.sqrt(self.mse)


def _check_steps(steps: int | None) -> None:
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be None (the sampler's) or an integer >= 1, got {steps!r}")


def per_sample_mse(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """x, reference: (B, *D) -> (B,) the mean over *D of the squared difference."""
    if x.shape != reference.shape or x.dim() < 1:
        raise ValueError(f"x and reference must be batches (B, *D) of one shape, got {tuple(x.shape)} "
                         f"and {tuple(reference.shape)}")
    return (x - reference).pow(2).reshape(x.shape[0], -1).mean(dim=1)


def reconstruct(sampler: Sampler, model: Model, x1: torch.Tensor, *, steps: int | None = None,
                **cond: torch.Tensor) -> Reconstruction:
    """Invert x1: (B, *D) to the source with ``steps`` steps (default: the sampler's) and
    regenerate it with the same steps, grid, guidance and conditions."""
    _check_steps(steps)
    inverted = sampler.invert(model, x1, steps=steps, **cond)
    regenerated = sampler.sample(model, inverted.x, steps=steps, **cond)
    return Reconstruction(x1=regenerated.x, x0=inverted.x, nfe_invert=inverted.nfe,
                          nfe_sample=regenerated.nfe)


def reconstruction_error(sampler: Sampler, model: Model, x1: torch.Tensor, *, steps: int | None = None,
                         **cond: torch.Tensor) -> torch.Tensor:
    """Data -> source -> data: (B,) the MSE of the reconstruction of x1: (B, *D)."""
    return per_sample_mse(reconstruct(sampler, model, x1, steps=steps, **cond).x1, x1)


def cycle_consistency(sampler: Sampler, model: Model, x0: torch.Tensor, *, steps: int | None = None,
                      **cond: torch.Tensor) -> torch.Tensor:
    """Source -> data -> source: (B,) the MSE between x0: (B, *D) and its sample's inversion."""
    _check_steps(steps)
    generated = sampler.sample(model, x0, steps=steps, **cond)
    return per_sample_mse(sampler.invert(model, generated.x, steps=steps, **cond).x, x0)


def inversion_table(velocity: VelocityFn, x1: torch.Tensor, solvers: Mapping[str, Solver],
                    nfe: list[int]) -> list[InversionRow]:
    """Reconstruction MSE of x1: (B, *D) for every solver at every NFE per direction (uniform
    grid, steps = NFE / nfe_per_step); combinations where the NFE is not a multiple of the
    solver's NFE per step are skipped. Solvers need a fixed NFE per step (not dopri5)."""
    if not solvers:
        raise ValueError("solvers must name at least one solver")
    if not nfe or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nfe):
        raise ValueError(f"nfe must be a non-empty list of integers >= 1, got {nfe!r}")
    for name, solver in solvers.items():
        if getattr(solver, "nfe_per_step", 0) < 1:
            raise ValueError(f"solvers[{name!r}] ({type(solver).__name__}) has no fixed NFE per step; "
                             "use a fixed-step solver (euler, midpoint, heun, rf_solver3, rk4, ddim)")
    rows = []
    for name, solver in solvers.items():
        for n in nfe:
            if n % solver.nfe_per_step:
                continue
            steps = n // solver.nfe_per_step
            error = reconstruction_error(Sampler(solver, steps), velocity, x1)
            rows.append(InversionRow(solver=name, nfe=n, steps=steps, mse=float(error.mean())))
    return rows


def observed_order(nfe: list[int], errors: list[float]) -> float:
    """-slope of the least-squares line through (log NFE, log error): p for errors ~ NFE^-p.

    Pass RMSE-like errors (``row.rmse``) to get the solver's order; an MSE gives twice it.
    """
    if len(nfe) != len(errors) or len(set(nfe)) < 2:
        raise ValueError(f"nfe and errors must have one entry each for at least two different NFE, got "
                         f"nfe={list(nfe)!r}, errors={list(errors)!r}")
    if min(nfe) <= 0 or not all(e > 0 and math.isfinite(e) for e in errors):
        raise ValueError(f"NFE and errors must be positive and finite, got nfe={list(nfe)!r}, "
                         f"errors={list(errors)!r}")
    log_n = torch.tensor(nfe, dtype=torch.float64).log()
    log_e = torch.tensor(errors, dtype=torch.float64).log()
    centred = log_n - log_n.mean()
    return -float((centred * (log_e - log_e.mean())).sum() / centred.pow(2).sum())
