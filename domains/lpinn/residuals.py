"""PDE residuals by automatic differentiation, Eulerian and Lagrangian.

The functions take any callable model, so the exact solutions of the tests go through the
same code as the networks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from flowsci_domains.lpinn.problems import Problem


def derivative(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy/dx of pointwise maps y (B,) of x (B,), kept differentiable (zero where y does not
    depend on x)."""
    if not y.requires_grad:  # y depends on no input that requires a gradient
        return torch.zeros_like(x)
    return torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True, allow_unused=True,
                               materialize_grads=True)[0]


def eulerian_residual(u_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                      t: torch.Tensor, problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """R = u_t + a u_x − ν u_xx with a = β (convection) or u (Burgers).

    x, t: (B,) collocation points. Returns (R, u), each (B,).
    """
    x = x.detach().requires_grad_(True)
    t = t.detach().requires_grad_(True)
    u = u_fn(x, t)
    u_t, u_x = torch.autograd.grad(u, (t, x), torch.ones_like(u), create_graph=True,  # one backward pass
                                   allow_unused=True, materialize_grads=True)
    residual = u_t + problem.characteristic_speed(u) * u_x
    if problem.viscosity > 0:
        residual = residual - problem.viscosity * derivative(u_x, x)
    return residual, u


def lagrangian_residuals(
        fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], xi: torch.Tensor,
        t: torch.Tensor, problem: Problem, diffusion: Literal["chain_rule", "label"] = "chain_rule",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """R_x = ∂x/∂t − a and R_u = ∂u/∂t − ν ∂²u/∂x² along the characteristics x(ξ, t).

    ``diffusion``: "chain_rule" differentiates in x through the map ξ ↦ x (u_x = u_ξ / x_ξ,
    u_xx = ∂_ξ(u_x) / x_ξ), exact for any characteristics; "label" uses ∂²u/∂ξ² as the
    authors' code does, equal only while the map is a translation (x_ξ = 1).

    xi, t: (B,) labels and times. Returns (R_x, R_u, x, u), each (B,).
    """
    xi = xi.detach().requires_grad_(problem.viscosity > 0)  # ∂/∂ξ only enters the diffusion term
    t = t.detach().requires_grad_(True)
    x, u = fn(xi, t)
    r_x = derivative(x, t) - problem.characteristic_speed(u)
    r_u = derivative(u, t)
    if problem.viscosity > 0:
        u_xi = derivative(u, xi)
        if diffusion == "label":
            u_xx = derivative(u_xi, xi)
        else:
            x_xi = derivative(x, xi)
            u_xx = derivative(u_xi / x_xi, xi) / x_xi
        r_u = r_u - problem.viscosity * u_xx
    return r_x, r_u, x, u
