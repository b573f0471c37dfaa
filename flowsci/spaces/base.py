"""The Space contract: the state spaces every path, solver, coupling cost and metric runs on.

A point of a space is a tensor (..., *point_shape); a tangent vector at a point is a tensor
(..., *tangent_shape) in the space's *tangent representation* (the ambient vector for
embedded spaces such as the sphere, the body-frame rotation vector in R^3 for both SO(3)
charts). All leading dimensions are batch dimensions, and every operation broadcasts over
them. Scalars per point (inner products, distances, log densities) have shape (...,).

Everything downstream uses only these operations:

- ``exp(x, u)`` / ``log(x, y)``: the Riemannian exponential and its inverse (the geodesic
  from x through u; the shortest initial velocity from x to y), so the geodesic is
  ``exp(x0, t * log(x0, x1))`` (:meth:`Space.geodesic`);
- ``proj(x)`` maps an ambient tensor of the point shape onto the space; ``proj_tangent(x, u)``
  maps an ambient tensor (point shape) or a tangent vector to the tangent representation
  at x (the orthogonal projection; idempotent);
- ``inner``, ``norm``, ``dist`` (= |log(x, y)|) from the Riemannian metric;
- ``dexp_inv(x, delta, w)``: the inverse differential of u -> exp(x, u) at u = delta,
  applied to a tangent vector w at exp(x, delta). Runge-Kutta-Munthe-Kaas solvers integrate
  in the tangent space at x through it, and the Riemannian divergence is the Euclidean one
  of the pulled-back field in these normal coordinates (:meth:`Space.divergence`);
- ``tangent_basis(x)``: an orthonormal basis of the tangent space at x;
- ``random_base(n)`` and ``base_log_prob(x)``: the base (prior) distribution and its log
  density with respect to the Riemannian volume.

Implementations must stay differentiable (finite gradients) at ``delta = 0`` and at
``x == y``: the divergence differentiates there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from flowsci.divergence import velocity_divergence


class Space(ABC):
    """A Riemannian manifold with the operations flow matching needs (see the module doc)."""

    point_shape: tuple[int, ...] = ()
    tangent_shape: tuple[int, ...] = ()
    dim: int = 0  # the manifold dimension (number of independent tangent directions)
    n_factors: int = 1  # factors that may follow their own schedule (see scale_factors)

    # --- sampling ----------------------------------------------------------------------
    @abstractmethod
    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, *point_shape) samples of the base distribution."""

    @abstractmethod
    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) log density of the base distribution at x, w.r.t. the Riemannian volume."""

    # --- geometry ----------------------------------------------------------------------
    @abstractmethod
    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The point reached at time 1 along the geodesic from x with initial velocity u."""

    @abstractmethod
    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The tangent vector u at x with exp(x, u) = y and |u| = dist(x, y)."""

    @abstractmethod
    def proj(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest point of the space to the ambient tensor x (..., *point_shape)."""

    @abstractmethod
    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u as a tangent vector at x: u (..., *point_shape) ambient or (..., *tangent_shape)."""

    @abstractmethod
    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(...,) Riemannian inner product of the tangent vectors u, v at x."""

    @abstractmethod
    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The tangent vector a at x with d/ds exp(x, delta + s a)|_{s=0} = w, where w is a
        tangent vector at exp(x, delta)."""

    @abstractmethod
    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim, *tangent_shape) an orthonormal basis of the tangent space at x."""

    @abstractmethod
    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) how far the tensor x is from being a point of the space (0 on the space)."""

    # --- derived -----------------------------------------------------------------------
    def norm(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(...,) the length of the tangent vector u at x."""
        return self.inner(x, u, u).clamp_min(0).sqrt()

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(...,) geodesic distance |log(x, y)|."""
        return self.norm(x, self.log(x, y))

    def pairwise_dist(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """(N, M) geodesic distances between x (N, *point_shape) and y (M, *point_shape),
        ``chunk`` rows of x at a time (the broadcast intermediates are (chunk, M, ...))."""
        return torch.cat([self.dist(rows.unsqueeze(1), y.unsqueeze(0)) for rows in x.split(chunk)])

    def scale(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """t (...,) times the tangent vectors u (..., *tangent_shape)."""
        return t.reshape(*t.shape, *[1] * len(self.tangent_shape)) * u

    def scale_factors(self, scales: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """u with its k-th factor's part multiplied by scales[k] (...,); one entry per factor
        (``n_factors``). Product spaces override this so that, e.g., translations and rotations
        of SE(3) follow different schedules."""
        if len(scales) != self.n_factors:
            raise ValueError(f"{type(self).__name__} has {self.n_factors} factor(s), "
                             f"got {len(scales)} scales")
        return self.scale(scales[0], u)

    def geodesic(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """exp(x0, t log(x0, x1)) with t (...,) broadcasting over the batch dimensions."""
        return self.exp(x0, self.scale(t, self.log(x0, x1)))

    def random_tangent(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A standard Gaussian tangent vector at each point of x (in the orthonormal basis)."""
        basis = self.tangent_basis(x)
        z = torch.randn(*basis.shape[:-len(self.tangent_shape)], generator=generator, dtype=x.dtype,
                        device=x.device)
        return self.coordinates_to_tangent(basis, z)

    def tangent_coordinates(self, basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(..., dim) coordinates of u (..., *tangent_shape) in an orthonormal basis
        (..., dim, *tangent_shape).

        The basis is orthonormal for :meth:`inner`, so the coordinates are inner products with
        its vectors; spaces whose metric is not the Euclidean one of the tangent representation
        override this.
        """
        k = len(self.tangent_shape)
        return (basis * u.unsqueeze(-1 - k)).flatten(-k).sum(-1) if k else basis * u.unsqueeze(-1)

    def coordinates_to_tangent(self, basis: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The tangent vector with coordinates z (..., dim) in the basis (..., dim, *tangent_shape)."""
        k = len(self.tangent_shape)
        return (z.reshape(*z.shape, *[1] * k) * basis).sum(-1 - k)

    def divergence(self, field, x: torch.Tensor, probes: torch.Tensor | None = None, *,
                   create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The Riemannian divergence of a tangent vector field at the points x (B, *point_shape).

        ``field(y) -> (B, *tangent_shape)`` must treat each row independently. In normal
        coordinates at x (y = exp(x, delta)) the field pulls back to
        g(delta) = dexp_inv(x, delta, field(y)); the Christoffel symbols and the first
        derivatives of the metric vanish at delta = 0, so the divergence there is the trace of
        dg/d(delta) in an orthonormal basis. ``probes`` (P, B, dim) replaces the exact trace by
        Hutchinson's estimate mean_p z_p^T J z_p. Returns (field(x), divergence (B,)).
        """
        basis = self.tangent_basis(x)
        batch = x.shape[0]
        with torch.enable_grad():
            coords = torch.zeros(batch, self.dim, dtype=x.dtype, device=x.device, requires_grad=True)
            delta = self.coordinates_to_tangent(basis, coords)
            w = field(self.exp(x, delta))
            pulled = self.tangent_coordinates(basis, self.dexp_inv(x, delta, w))
            div = velocity_divergence(pulled, coords, probes, create_graph=create_graph)
        return w, div
