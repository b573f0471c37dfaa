"""Uniform n-point clouds in R^d: the Wasserstein space of n-point uniform measures.

A point is an ordered tuple x (..., n, d) standing for the measure (1/n) sum_i delta_{x_i},
i.e. R^{n x d} modulo permutations of the n points. With the metric
<u, v>_x = (1/n) sum_i <u_i, v_i> (the mean over points), the length of a displacement is
the L2(mu) norm of the transport map, so dist(x, y) = min over permutations sigma of
sqrt((1/n) sum_i |y_sigma(i) - x_i|^2) = W2 of the two uniform measures.
"""

from __future__ import annotations

import math

import torch

from flowsci.population.batch import gather_points
from flowsci.population.matching import assignment
from flowsci.spaces.base import Space


class PopulationSpace(Space):
    """Clouds of exactly ``n_points`` points in R^``dim``, compared up to relabelling.

    Points and tangent vectors: (..., n, d); ``dim`` (the manifold dimension) is n d.

    - exp(x, u) = x + u; log(x, y) = y[sigma] - x with sigma the optimal assignment of y to x
      (scipy's ``linear_sum_assignment``), so exp(x0, t log(x0, x1)) is McCann's displacement
      interpolation and |log(x, y)| = W2. The assignment is piecewise constant: log is
      differentiable in x and y away from ties (the gradient treats sigma as fixed).
    - inner(x, u, v) = (1/n) sum_i <u_i, v_i>; the orthonormal tangent basis is sqrt(n) e_k.
    - base: i.i.d. standard normal points. ``base_log_prob`` is the density of the ordered
      tuple with respect to the Riemannian volume of this metric, which is n^{-nd/2} times
      the Lebesgue volume of R^{n x d} (det g = n^{-nd}): log N(x; 0, I) + (n d / 2) log n.
      (The measure it pushes to the quotient by permutations has n! times this density.)
    """

    def __init__(self, n_points: int, dim: int):
        if not (int(n_points) == n_points and n_points >= 1):
            raise ValueError(f"PopulationSpace needs n_points >= 1 (integer), got n_points={n_points!r}")
        if not (int(dim) == dim and dim >= 1):
            raise ValueError(f"PopulationSpace needs a point dimension dim >= 1 (integer), got dim={dim!r}")
        self.n_points, self.d = int(n_points), int(dim)
        self.point_shape = self.tangent_shape = (self.n_points, self.d)
        self.dim = self.n_points * self.d

    def __repr__(self) -> str:
        return f"PopulationSpace(n_points={self.n_points}, dim={self.d})"

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.ndim < 2 or tuple(x.shape[-2:]) != self.point_shape:
            raise ValueError(f"{name} must have shape (..., {self.n_points}, {self.d}) on {self!r}, "
                             f"got {tuple(x.shape)}")

    def _sum(self, a: torch.Tensor) -> torch.Tensor:
        return a.sum((-2, -1))

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, *self.point_shape, generator=generator, dtype=dtype, device=device)

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        return -0.5 * self._sum(x * x) + 0.5 * self.dim * (math.log(self.n_points) - math.log(2 * math.pi))

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        self._check(y, "y")
        x, y = torch.broadcast_tensors(x, y)
        flat_x, flat_y = x.reshape(-1, *self.point_shape), y.reshape(-1, *self.point_shape)
        partners = gather_points(flat_y, assignment(flat_x, flat_y))
        return (partners - flat_x).reshape(x.shape)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        self._check(u, "u")
        return u

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._sum(u * v) / self.n_points

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        eye = math.sqrt(self.n_points) * torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.reshape(self.dim, *self.point_shape).expand(*x.shape[:-2], self.dim, *self.point_shape)

    def tangent_coordinates(self, basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(..., dim) coordinates <b_k, u> in the (..., dim, n, d) basis, for this metric (1/n scaled)."""
        return self._sum(basis * u.unsqueeze(-3)) / self.n_points

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:-2], dtype=x.dtype, device=x.device)
