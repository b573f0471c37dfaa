"""Euclidean space R^shape: the trivial Space (exp is addition, log subtraction)."""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space


class Euclidean(Space):
    """R^shape with the standard metric and a standard normal base distribution.

    Points and tangent vectors are both tensors (..., *shape).
    """

    def __init__(self, *shape: int):
        if not shape or any(int(s) < 1 for s in shape):
            raise ValueError(f"Euclidean needs a shape of positive sizes, got {shape}")
        self.point_shape = self.tangent_shape = tuple(int(s) for s in shape)
        self.dim = math.prod(self.point_shape)

    def __repr__(self) -> str:
        return f"Euclidean{self.point_shape}"

    def _sum(self, a: torch.Tensor) -> torch.Tensor:
        return a.flatten(-len(self.point_shape)).sum(-1)

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, *self.point_shape, generator=generator, dtype=dtype, device=device)

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._sum(x * x) - 0.5 * self.dim * math.log(2 * math.pi)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y - x

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._sum(u * v)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device).reshape(self.dim, *self.point_shape)
        batch = x.shape[:x.dim() - len(self.point_shape)]
        return eye.expand(*batch, *eye.shape)

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:x.dim() - len(self.point_shape)], dtype=x.dtype, device=x.device)
