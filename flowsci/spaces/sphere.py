"""The unit sphere S^n in R^{n+1} with the round metric.

Points are unit vectors (..., n+1); tangent vectors are ambient vectors (..., n+1) orthogonal
to the point. With r = |u| and e = u / r:

- exp(x, u) = cos(r) x + sin(r) e, log(x, y) = theta v / |v| with v = y - <x, y> x and
  theta = atan2(|v|, <x, y>);
- dexp_inv (exact): the differential of exp at delta maps the radial part a_r e of a tangent
  vector a to a_r tau, tau = -sin(r) x + cos(r) e the unit velocity of the geodesic at
  y = exp(x, delta), and the part orthogonal to e to itself times sin(r) / r (it is
  orthogonal to y too). Inverting, with k = r <w, tau> and f(r) = (1 - r cot r) / r^2,
  dexp_inv(x, delta, w) = w / sinc(r) + k (f(r) delta + x), valid for r < pi.

Every coefficient (sinc, cos, f) is a function of r^2 evaluated from its Taylor series when r
is small, so all operations have finite gradients at delta = 0 and at x == y.
"""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space

# Below these squared radii the coefficients come from their Taylor series in r^2 (the next
# term is below 1e-16 relative at the threshold).
_SMALL_R2 = 1e-2
_SMALL_LOG_S2 = 1e-3
_SINC = (1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880)  # sin(r) / r
_COS = (1.0, -1 / 2, 1 / 24, -1 / 720, 1 / 40320)  # cos(r)
_ONE_MINUS_RCOT = (1 / 3, 1 / 45, 2 / 945, 1 / 4725, 2 / 93555)  # (1 - r cot r) / r^2
_ASIN_OVER_S = (1.0, 1 / 6, 3 / 40, 5 / 112, 35 / 1152)  # asin(s) / s in s^2


def _series(z: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """sum_k c_k z^k by Horner's rule."""
    out = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * z + c
    return out


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1, keepdim=True)


class Sphere(Space):
    """The unit sphere S^n embedded in R^{n+1}; base distribution uniform.

    Points and tangent vectors: (..., n+1). ``dim`` is n.
    """

    def __init__(self, n: int):
        if int(n) != n or n < 1:
            raise ValueError(f"Sphere needs an integer dimension n >= 1, got n={n!r}")
        self.n = int(n)
        self.point_shape = self.tangent_shape = (self.n + 1,)
        self.dim = self.n
        half = (self.n + 1) / 2
        self.log_area = math.log(2.0) + half * math.log(math.pi) - math.lgamma(half)

    def __repr__(self) -> str:
        return f"Sphere({self.n})"

    @staticmethod
    def _coefficients(r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """sinc(r), cos(r), (1 - r cot r) / r^2 at r = sqrt(r2) (..., 1), safe at r = 0."""
        small = r2 < _SMALL_R2
        r2_safe = torch.where(small, torch.ones_like(r2), r2)
        r = r2_safe.sqrt()
        sin_r, cos_r = torch.sin(r), torch.cos(r)
        sinc = torch.where(small, _series(r2, _SINC), sin_r / r)
        cos = torch.where(small, _series(r2, _COS), cos_r)
        one_minus_rcot = torch.where(small, _series(r2, _ONE_MINUS_RCOT), (1 - r * cos_r / sin_r) / r2_safe)
        return sinc, cos, one_minus_rcot

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.proj(torch.randn(n, self.n + 1, generator=generator, dtype=dtype, device=device))

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:-1], -self.log_area, dtype=x.dtype, device=x.device)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        sinc, cos, _ = self._coefficients(_dot(u, u))
        return cos * x + sinc * u

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Antipodal points (y = -x, where every direction is a shortest geodesic; taken to be
        |y - <x, y> x| below 16 machine epsilons, the rounding level of that difference) get
        pi times the unit tangent obtained by projecting the coordinate axis on which x has
        the smallest magnitude (the first such axis): deterministic and never zero."""
        c = _dot(x, y)
        v = y - c * x
        s2 = _dot(v, v)
        near = (s2 < _SMALL_LOG_S2) & (c > 0)
        antipodal = (s2 < (16 * torch.finfo(s2.dtype).eps) ** 2) & (c <= 0)
        s = torch.where(near | antipodal, torch.ones_like(s2), s2).sqrt()
        factor = torch.where(near, _series(s2, _ASIN_OVER_S), torch.atan2(s, c) / s)
        axis = torch.nn.functional.one_hot(x.abs().argmin(-1), self.n + 1).to(x.dtype)
        fallback = self.proj(self.proj_tangent(x, axis))
        return torch.where(antipodal, math.pi * fallback, factor * v)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - _dot(x, u) * x

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r2 = _dot(delta, delta)
        sinc, cos, one_minus_rcot = self._coefficients(r2)
        y = cos * x + sinc * delta
        w = w - _dot(w, y) * y  # w as a tangent vector at y (a no-op for tangent input)
        k = cos * _dot(w, delta) - r2 * sinc * _dot(w, x)  # r <w, tau>
        return w / sinc + k * (one_minus_rcot * delta + x)

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n, n+1): the first n columns of the Householder reflection H that swaps the
        unit vector x with -sign(x_last) e_last (H e_last = -sign(x_last) x, so the other
        columns are orthonormal and orthogonal to x)."""
        x = self.proj(x)
        v = x.clone()
        v[..., -1] += torch.where(x[..., -1] >= 0, 1.0, -1.0).to(x.dtype)
        eye = torch.eye(self.n, self.n + 1, dtype=x.dtype, device=x.device)
        return eye - (2 * v[..., :self.n, None] * v[..., None, :]) / _dot(v, v).unsqueeze(-1)

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        return (x.norm(dim=-1) - 1).abs()
