"""The flat torus [0, 2 pi)^d: angles with the flat metric (each coordinate a circle)."""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space

_TWO_PI = 2 * math.pi


def _wrap(x: torch.Tensor) -> torch.Tensor:
    """x modulo 2 pi in [0, 2 pi) (remainder can round up to exactly 2 pi for tiny negatives)."""
    x = torch.remainder(x, _TWO_PI)
    return torch.where(x >= _TWO_PI, x - _TWO_PI, x)


class FlatTorus(Space):
    """[0, 2 pi)^d with the flat metric and a uniform base distribution.

    Points and tangent vectors: (..., d). exp wraps x + u into [0, 2 pi); log is the wrapped
    difference in [-pi, pi); the exponential map is a translation, so dexp_inv is the identity.
    """

    def __init__(self, d: int):
        if int(d) != d or d < 1:
            raise ValueError(f"FlatTorus needs an integer dimension d >= 1, got d={d!r}")
        self.d = int(d)
        self.point_shape = self.tangent_shape = (self.d,)
        self.dim = self.d

    def __repr__(self) -> str:
        return f"FlatTorus({self.d})"

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return _wrap(_TWO_PI * torch.rand(n, self.d, generator=generator, dtype=dtype, device=device))

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:-1], -self.d * math.log(_TWO_PI), dtype=x.dtype, device=x.device)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return _wrap(x + u)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _wrap(y - x + math.pi) - math.pi

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return _wrap(x)

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.d, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.d, self.d)

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) Euclidean distance from x to the box [0, 2 pi]^d."""
        outside = torch.relu(-x) + torch.relu(x - _TWO_PI)
        return outside.norm(dim=-1)
