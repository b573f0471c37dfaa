"""The rotation group SO(3) in two interchangeable charts: rotation matrices and unit quaternions.

Both charts share the tangent representation: a tangent vector at a rotation R is the
**body-frame** angular velocity omega in R^3, i.e. the ambient velocity R omega^ (matrix chart) or
q ⊗ (0, omega / 2) (quaternion chart). The metric is the bi-invariant one with
<omega, eta> = omega . eta, for which the geodesic distance is the rotation angle in [0, pi] and
the Riemannian volume of SO(3) is 8 pi^2. In these terms (as in FoldFlow, Bose et al., ICLR 2024,
and ReQFlow, Yue, Wang & Xu, ICML 2025):

- exp(R, omega) = R Exp(omega), log(R0, R1) = Log(R0^T R1), so the geodesic is R0 Exp(t omega)
  with constant body velocity omega;
- quaternion: exp(q, omega) = q ⊗ Exp(omega), log(q0, q1) = Log(q0* ⊗ q1) with the shortest-path
  flip (q and -q are the same rotation);
- dexp_inv(R, delta, w) = J_r(delta)^{-1} w (exact, from d/ds Exp(delta + s a) = Exp(delta) (J_r a)^).
"""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space
from flowsci.spaces.rotations import (
    matrix_to_quaternion,
    matrix_to_rotvec,
    quat_conjugate,
    quat_multiply,
    quat_to_matrix,
    quat_to_rotvec,
    right_jacobian_inv,
    rotvec_to_matrix,
    rotvec_to_quat,
    vee,
)

LOG_VOLUME = math.log(8 * math.pi ** 2)  # log of the Riemannian volume of SO(3) in this metric


def _haar_quaternions(n: int, generator: torch.Generator | None, dtype: torch.dtype,
                      device: torch.device | str) -> torch.Tensor:
    """(n, 4) uniform (Haar) rotations as unit quaternions with w >= 0: normalised Gaussian 4-vectors."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype, device=device)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return q * torch.where(q[:, :1] < 0, -1.0, 1.0).to(dtype)


class _SO3(Space):
    """What both charts share: body-frame tangent vectors (..., 3), the bi-invariant metric,
    the uniform (Haar) base distribution and the inverse right Jacobian."""

    tangent_shape = (3,)
    dim = 3

    def _batch(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape[:x.dim() - len(self.point_shape)])

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) -log(8 pi^2): the uniform density w.r.t. the Riemannian volume."""
        return torch.full(self._batch(x), -LOG_VOLUME, dtype=x.dtype, device=x.device)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (right_jacobian_inv(delta) @ w.unsqueeze(-1)).squeeze(-1)

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) the body-frame unit vectors e1, e2, e3."""
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        return eye.expand(*self._batch(x), 3, 3)


class SO3Matrix(_SO3):
    """SO(3) as rotation matrices (..., 3, 3); tangent vectors are body-frame omega (..., 3)."""

    point_shape = (3, 3)

    def __repr__(self) -> str:
        return "SO3Matrix()"

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, 3, 3) uniform (Haar) rotations."""
        return quat_to_matrix(_haar_quaternions(n, generator, dtype, device))

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x @ rotvec_to_matrix(u)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return matrix_to_rotvec(x.transpose(-1, -2) @ y)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest rotation in Frobenius norm: U diag(1, 1, det(U V^T)) V^T from the SVD."""
        U, _, Vh = torch.linalg.svd(x)
        det = torch.linalg.det(U @ Vh)
        ones = torch.ones_like(det)
        return U @ torch.diag_embed(torch.stack([ones, ones, det], -1)) @ Vh

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u (..., 3) is returned as is; an ambient u (..., 3, 3) (at least as many dimensions as
        x) gives vee(skew(R^T U)), the body vector of its orthogonal projection onto T_R SO(3)."""
        if u.dim() >= x.dim() and u.shape[-2:] == (3, 3):
            return vee(x.transpose(-1, -2) @ u)
        if u.shape[-1] == 3:
            return u
        raise ValueError(f"u must be a body-frame vector (..., 3) or an ambient matrix (..., 3, 3), "
                         f"got shape {tuple(u.shape)}")

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) |R^T R - I|_F + |det R - 1|."""
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        return (torch.linalg.matrix_norm(x.transpose(-1, -2) @ x - eye)
                + (torch.linalg.det(x) - 1).abs())

    def to_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) the rotation matrices (the identity chart map)."""
        return x

    def from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) points of this chart for the rotation matrices R."""
        return R


class SO3Quaternion(_SO3):
    """SO(3) as unit quaternions (..., 4) in (w, x, y, z) order, q and -q being the same rotation;
    tangent vectors are body-frame omega (..., 3), the ambient velocity being q ⊗ (0, omega / 2)."""

    point_shape = (4,)

    def __repr__(self) -> str:
        return "SO3Quaternion()"

    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, 4) uniform (Haar) rotations, w >= 0."""
        return _haar_quaternions(n, generator, dtype, device)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """q ⊗ Exp(omega), renormalised so that long trajectories stay on the unit sphere."""
        q = quat_multiply(x, rotvec_to_quat(u))
        return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log(q0* ⊗ q1): the shortest rotation (angle <= pi), whatever the signs of q0 and q1."""
        return quat_to_rotvec(quat_multiply(quat_conjugate(x), y))

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u (..., 3) is returned as is; an ambient u (..., 4) gives 2 vec(q* ⊗ u), the body vector
        of its projection onto the tangent space of the unit sphere at q."""
        if u.shape[-1] == 4:
            return 2 * quat_multiply(quat_conjugate(x), u)[..., 1:]
        if u.shape[-1] == 3:
            return u
        raise ValueError(f"u must be a body-frame vector (..., 3) or an ambient quaternion (..., 4), "
                         f"got shape {tuple(u.shape)}")

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) ||q| - 1|."""
        return (torch.linalg.vector_norm(x, dim=-1) - 1).abs()

    def to_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3) the rotation matrices of the quaternions x."""
        return quat_to_matrix(x)

    def from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """(..., 4) unit quaternions (w >= 0) of the rotation matrices R."""
        return matrix_to_quaternion(R)
