"""Product manifolds: ``Product`` of different factors and ``Power``, n copies of one factor.

Product points are the factors' points flattened and concatenated along the last axis
(tangent vectors likewise); Power stacks the copies along a new axis in front of the
factor's own axes. Every operation splits, applies the factors' operations and re-joins;
inner products, base log densities and constraint violations add up; tangent bases are
block-diagonal, so the divergence of a field acting per factor is the sum of the factors'.
"""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space


def _batch(a: torch.Tensor, shape: tuple[int, ...]) -> torch.Size:
    """The leading (batch) dimensions of a tensor (..., *shape)."""
    return a.shape[:a.dim() - len(shape)]


class Product(Space):
    """The product of the manifolds ``spaces``.

    Points (..., sum of the factors' point numels) and tangent vectors (..., sum of the
    factors' tangent numels): each factor's (..., *point_shape) / (..., *tangent_shape)
    flattened, concatenated in the order of ``spaces``. ``dim`` is the sum of the factors'.
    """

    def __init__(self, spaces: list[Space]):
        self.spaces = list(spaces)
        if not self.spaces or not all(isinstance(s, Space) for s in self.spaces):
            raise ValueError(f"Product needs a non-empty list of Space instances, got spaces={spaces!r}")
        self._point_sizes = [math.prod(s.point_shape) for s in self.spaces]
        self._tangent_sizes = [math.prod(s.tangent_shape) for s in self.spaces]
        if sum(self._point_sizes) == sum(self._tangent_sizes) and self._point_sizes != self._tangent_sizes:
            raise ValueError(f"Product of {self.spaces}: points and tangent vectors have the same total size "
                             f"but split differently ({self._point_sizes} vs {self._tangent_sizes}), so "
                             "proj_tangent could not tell an ambient vector from a tangent one")
        self._dims = [s.dim for s in self.spaces]
        self.point_shape = (sum(self._point_sizes),)
        self.tangent_shape = (sum(self._tangent_sizes),)
        self.dim = sum(self._dims)
        self.n_factors = len(self.spaces)

    def __repr__(self) -> str:
        return f"Product({self.spaces!r})"

    def scale_factors(self, scales: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """Factor k's part of u multiplied by scales[k] (...,)."""
        if len(scales) != self.n_factors:
            raise ValueError(f"{self!r} has {self.n_factors} factors, got {len(scales)} scales")
        return self.join_tangents([space.scale(scale, part) for space, scale, part
                                   in zip(self.spaces, scales, self.split_tangents(u))])

    # --- splitting and joining ---------------------------------------------------------
    @staticmethod
    def _split(a: torch.Tensor, sizes: list[int], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return [piece.reshape(*piece.shape[:-1], *shape) for piece, shape in zip(a.split(sizes, -1), shapes)]

    @staticmethod
    def _join(parts: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> torch.Tensor:
        batch = torch.broadcast_shapes(*(_batch(p, s) for p, s in zip(parts, shapes)))
        return torch.cat([p.expand(*batch, *s).reshape(*batch, -1) for p, s in zip(parts, shapes)], -1)

    def split_points(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The factors' points [(..., *space.point_shape)] of the product points x (..., *point_shape)."""
        return self._split(x, self._point_sizes, [s.point_shape for s in self.spaces])

    def split_tangents(self, u: torch.Tensor) -> list[torch.Tensor]:
        """The factors' tangent vectors [(..., *space.tangent_shape)] of u (..., *tangent_shape)."""
        return self._split(u, self._tangent_sizes, [s.tangent_shape for s in self.spaces])

    def join_points(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The product points (..., *point_shape) of the factors' points (batch dims broadcast)."""
        return self._join(parts, [s.point_shape for s in self.spaces])

    def join_tangents(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The product tangent vectors (..., *tangent_shape) of the factors' tangent vectors."""
        return self._join(parts, [s.tangent_shape for s in self.spaces])

    def _blocks(self, basis: torch.Tensor) -> list[torch.Tensor]:
        """The diagonal blocks (..., space.dim, *space.tangent_shape) of a block-diagonal basis."""
        blocks, row, col = [], 0, 0
        for space, d, t in zip(self.spaces, self._dims, self._tangent_sizes):
            block = basis[..., row:row + d, col:col + t]
            blocks.append(block.reshape(*block.shape[:-1], *space.tangent_shape))
            row, col = row + d, col + t
        return blocks

    # --- the Space operations ----------------------------------------------------------
    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.join_points([s.random_base(n, generator=generator, dtype=dtype, device=device)
                                 for s in self.spaces])

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return sum(s.base_log_prob(xi) for s, xi in zip(self.spaces, self.split_points(x)))

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.join_points([s.exp(xi, ui) for s, xi, ui
                                 in zip(self.spaces, self.split_points(x), self.split_tangents(u))])

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.join_tangents([s.log(xi, yi) for s, xi, yi
                                   in zip(self.spaces, self.split_points(x), self.split_points(y))])

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return self.join_points([s.proj(xi) for s, xi in zip(self.spaces, self.split_points(x))])

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if u.shape[-1] == self.tangent_shape[0]:
            parts = self.split_tangents(u)
        elif u.shape[-1] == self.point_shape[0]:
            parts = self.split_points(u)
        else:
            raise ValueError(f"proj_tangent: u must end in {self.point_shape[0]} (ambient) or "
                             f"{self.tangent_shape[0]} (tangent), got shape {tuple(u.shape)}")
        return self.join_tangents([s.proj_tangent(xi, ui) for s, xi, ui
                                   in zip(self.spaces, self.split_points(x), parts)])

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sum(s.inner(xi, ui, vi) for s, xi, ui, vi
                   in zip(self.spaces, self.split_points(x), self.split_tangents(u), self.split_tangents(v)))

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.join_tangents([s.dexp_inv(xi, di, wi) for s, xi, di, wi
                                   in zip(self.spaces, self.split_points(x), self.split_tangents(delta),
                                          self.split_tangents(w))])

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim, *tangent_shape): block-diagonal, the factors' bases in order."""
        rows, col, total = [], 0, self.tangent_shape[0]
        for s, xi, t in zip(self.spaces, self.split_points(x), self._tangent_sizes):
            block = s.tangent_basis(xi)
            block = block.reshape(*block.shape[:block.dim() - len(s.tangent_shape)], t)
            rows.append(torch.nn.functional.pad(block, (col, total - col - t)))
            col += t
        return torch.cat(rows, -2)

    def tangent_coordinates(self, basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Each factor's coordinates in its diagonal block of the (block-diagonal) basis."""
        return torch.cat([s.tangent_coordinates(b, ui) for s, b, ui
                          in zip(self.spaces, self._blocks(basis), self.split_tangents(u))], -1)

    def coordinates_to_tangent(self, basis: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.join_tangents([s.coordinates_to_tangent(b, zi) for s, b, zi
                                   in zip(self.spaces, self._blocks(basis), z.split(self._dims, -1))])

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        return sum(s.constraint_violation(xi) for s, xi in zip(self.spaces, self.split_points(x)))


class Power(Space):
    """n copies of ``space``: points (..., n, *space.point_shape), tangent vectors
    (..., n, *space.tangent_shape); ``dim`` is n * space.dim.

    The factor's operations broadcast over the copy axis; inner products, base log densities
    and constraint violations are summed over it.
    """

    def __init__(self, space: Space, n: int):
        if not isinstance(space, Space):
            raise ValueError(f"Power needs a Space instance, got space={space!r}")
        if int(n) != n or n < 1:
            raise ValueError(f"Power needs an integer number of copies n >= 1, got n={n!r}")
        self.space, self.n = space, int(n)
        self.point_shape = (self.n, *space.point_shape)
        self.tangent_shape = (self.n, *space.tangent_shape)
        self.dim = self.n * space.dim
        self.n_factors = space.n_factors

    def __repr__(self) -> str:
        return f"Power({self.space!r}, {self.n})"

    def scale_factors(self, scales: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """Factor k's part of every copy multiplied by scales[k] (...,)."""
        return self.space.scale_factors([scale.unsqueeze(-1) for scale in scales], u)

    def _blocks(self, basis: torch.Tensor) -> torch.Tensor:
        """(..., n, space.dim, *space.tangent_shape) the diagonal blocks of a block-structured basis."""
        k = len(self.space.tangent_shape)
        basis = basis.unflatten(-2 - k, (self.n, self.space.dim))
        return torch.diagonal(basis, dim1=-3 - k, dim2=-1 - k).movedim(-1, -2 - k)

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        x = self.space.random_base(n * self.n, generator=generator, dtype=dtype, device=device)
        return x.reshape(n, *self.point_shape)

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.base_log_prob(x).sum(-1)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.space.exp(x, u)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.space.log(x, y)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.proj(x)

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.space.proj_tangent(x, u)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.space.inner(x, u, v).sum(-1)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.space.dexp_inv(x, delta, w)

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n * space.dim, n, *space.tangent_shape): row i * space.dim + k is the factor's
        k-th basis vector at copy i, zero on the other copies."""
        k = len(self.space.tangent_shape)
        blocks = self.space.tangent_basis(x)  # (..., n, d, *ts)
        eye = torch.eye(self.n, dtype=blocks.dtype, device=blocks.device).reshape(self.n, 1, self.n, *[1] * k)
        basis = blocks.unsqueeze(-1 - k) * eye  # (..., n, d, n, *ts)
        return basis.flatten(-3 - k, -2 - k)

    def tangent_coordinates(self, basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Each copy's coordinates in its diagonal block of the (block-structured) basis."""
        return self.space.tangent_coordinates(self._blocks(basis), u).flatten(-2)

    def coordinates_to_tangent(self, basis: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.space.coordinates_to_tangent(self._blocks(basis),
                                                 z.unflatten(-1, (self.n, self.space.dim)))

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.constraint_violation(x).sum(-1)
