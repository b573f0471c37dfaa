"""PINN models on the periodic domain x ∈ [0, 2π): the Eulerian PINN and the two-branch LPINN.

Both read the input through the exact periodic embedding (cos x, sin x, t), so u(0, t) and
u(2π, t) are the same number (no boundary loss is needed).
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci_domains.lpinn.problems import PERIOD


def periodic_features(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(cos x, sin x, t): x, t (B,) -> (B, 3). x is first reduced mod 2π, so that x = 0 and
    x = 2π give bit-identical features (sin(2π) is not exactly 0 in floating point)."""
    x = torch.remainder(x, PERIOD)
    return torch.stack([torch.cos(x), torch.sin(x), t], dim=-1)


def tanh_mlp(width: int, depth: int) -> nn.Sequential:
    """(B, 3) -> (B, 1): ``depth`` tanh layers of ``width`` and a linear output layer."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(3 if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


class EulerianPINN(nn.Module):
    """u(x, t) = u_offset + a tanh MLP on (cos x, sin x, t). x, t (B,) -> u (B,).

    ``u_offset`` is an output shift (the constant C of u₀ = sin x + C): Adam moves an output
    bias by about lr per step, too slowly to reach C = 50 within a PINN's budget.
    """

    formulation = "eulerian"

    def __init__(self, width: int = 50, depth: int = 4, u_offset: float = 0.0):
        super().__init__()
        self.net = tanh_mlp(width, depth)
        self.u_offset = float(u_offset)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.u_offset + self.net(periodic_features(x, t)).squeeze(-1)


class LagrangianPINN(nn.Module):
    """The LPINN: a u-branch u(ξ, t) and an x-branch for the characteristic x(ξ, t).

    Both branches are tanh MLPs on (cos ξ, sin ξ, t). The x-branch predicts the displacement
    in a frame moving at ``frame_speed`` a, in units of ``speed_scale`` s:

        x(ξ, t) = ξ + t · (a + s · N_x(ξ, t)).

    A periodic input cannot represent x itself (x(ξ, 0) = ξ jumps by 2π across ξ = 0), while
    the displacement is periodic in ξ. The factor t makes x(ξ, 0) = ξ hold by construction: the
    label ξ *is* the position at t = 0, a definition rather than a condition to learn.
    ``exact_labels = False`` drops the factor from the learned part (x = ξ + a t + s · N_x),
    the paper's soft version that leaves x(ξ, 0) = ξ to the initial-condition loss.

    The frame: the Eulerian error is the position error of the characteristics times |u_x|.
    In the lab frame (a = 0, s = β) a fixed relative accuracy of N_x leaves a position error
    ∝ β, and Adam, being scale-invariant, reaches the same relative accuracy in the same number
    of steps whatever β: the cost to a given error grows with β. In the frame of the mean
    speed (a = β for convection, C for Burgers, s = the largest remaining speed) the target of
    N_x, and so the whole training problem, is the same for every β (Galilean invariance).

    ``u_offset`` shifts the u-branch's output, as for :class:`EulerianPINN`.

    ``shared_weights`` is the variant of the authors' code: the x-branch reuses the first
    ``x_depth`` hidden layers and the output layer of the u-branch. The paper describes two
    independent networks (the default).

    forward: ξ, t (B,) -> (x, u), each (B,).
    """

    formulation = "lagrangian"

    def __init__(self, width: int = 50, u_depth: int = 4, x_depth: int = 2, speed_scale: float = 1.0,
                 frame_speed: float = 0.0, shared_weights: bool = False, exact_labels: bool = True,
                 u_offset: float = 0.0):
        super().__init__()
        if speed_scale <= 0:
            raise ValueError(f"speed_scale must be > 0, got {speed_scale}")
        if shared_weights and x_depth > u_depth:
            raise ValueError(f"shared_weights needs x_depth <= u_depth, got {x_depth} > {u_depth}")
        self.speed_scale = float(speed_scale)
        self.frame_speed = float(frame_speed)
        self.shared_weights = shared_weights
        self.exact_labels = exact_labels
        self.u_offset = float(u_offset)
        self.u_net = tanh_mlp(width, u_depth)
        # shared: the first x_depth (linear, tanh) pairs and the output layer of the u-branch
        self.x_net = (nn.Sequential(*self.u_net[:2 * x_depth], self.u_net[-1]) if shared_weights
                      else tanh_mlp(width, x_depth))

    def forward(self, xi: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = periodic_features(xi, t)
        u = self.u_offset + self.u_net(features).squeeze(-1)
        learned = self.speed_scale * self.x_net(features).squeeze(-1)
        if self.exact_labels:
            x = xi + t * (self.frame_speed + learned)
        else:
            x = xi + self.frame_speed * t + learned
        return x, u
