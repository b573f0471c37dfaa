"""Rotation algebra on SO(3): hat/vee, unit quaternions (w, x, y, z; Hamilton product), the
exponential and logarithm maps, and the inverse right Jacobian.

Every function broadcasts over leading dimensions and keeps the dtype of its input (float32 or
float64). Rotation vectors w in R^3 have angle |w|; quaternions act as R(q) v = q v q*, so
R(p ⊗ q) = R(p) R(q).

Numerics (as in ReQFlow, Yue, Wang & Xu, ICML 2025): the logarithm goes through the quaternion,
angle = 2 atan2(|v|, w) after flipping to w >= 0, which stays accurate in float32 from angle 0 to
pi (a naive theta / (2 sin theta) (R - R^T)^v is NaN at 1e-4 and wrong by 3.6e3 at pi - 1e-4).
Every map with a removable singularity at angle 0 has a Taylor branch selected with the "safe
where" pattern, so values and gradients (to second order) stay finite at 0.
"""

from __future__ import annotations

import torch

_SMALL_ANGLE2 = 1e-6  # squared angle (or tan^2 of the half angle) below which Taylor series are used
_SMALL_ANGLE2_JACOBIAN = 1e-4  # the same for the right Jacobian, whose big branch cancels earlier


def hat(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) the skew matrix w^ with w^ v = w x v."""
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([torch.stack([zero, -z, y], -1),
                        torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)


def vee(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) the vector of the skew part (m - m^T) / 2, so vee(hat(w)) = w."""
    return 0.5 * torch.stack([m[..., 2, 1] - m[..., 1, 2],
                              m[..., 0, 2] - m[..., 2, 0],
                              m[..., 1, 0] - m[..., 0, 1]], -1)


def quat_multiply(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(..., 4) x (..., 4) -> (..., 4) the Hamilton product p ⊗ q in (w, x, y, z) order."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack([pw * qw - px * qx - py * qy - pz * qz,
                        pw * qx + px * qw + py * qz - pz * qy,
                        pw * qy - px * qz + py * qw + pz * qx,
                        pw * qz + px * qy - py * qx + pz * qw], -1)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) the conjugate (w, -x, -y, -z): the inverse of a unit quaternion."""
    return torch.cat([q[..., :1], -q[..., 1:]], -1)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 3, 3) the rotation matrix of q (normalised first, so any q != 0 works)."""
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    return torch.stack([
        torch.stack([1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)], -1),
        torch.stack([s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)], -1),
        torch.stack([s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) the unit quaternion of R with w >= 0 (Shepperd's method).

    The four quantities 4w^2 = 1 + tr R, 4x^2 = 1 + R00 - R11 - R22, ... sum to 4, so the largest
    is >= 1; the quaternion is read off the branch of the largest one, which never divides by a
    small number. The result is normalised (for slightly non-orthogonal input) and flipped to w >= 0.
    """
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    d = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22,
                     1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    # candidate b has d_b in slot b: q = (column) / (2 sqrt(d_b)); unused branches are clamped
    # (the chosen d_b >= 1 is unaffected) so their values and gradients stay finite.
    candidates = torch.stack([
        torch.stack([d[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
        torch.stack([r21 - r12, d[..., 1], r01 + r10, r02 + r20], -1),
        torch.stack([r02 - r20, r01 + r10, d[..., 2], r12 + r21], -1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, d[..., 3]], -1),
    ], -2) / (2 * d.clamp_min(0.5).sqrt()).unsqueeze(-1)
    choice = torch.nn.functional.one_hot(d.argmax(-1), 4).to(R.dtype)
    q = (choice.unsqueeze(-1) * candidates).sum(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)


def rotvec_to_quat(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 4) the unit quaternion (cos(|w|/2), sin(|w|/2) w/|w|) = Exp(w)."""
    theta2 = (w * w).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE2
    theta = torch.where(small, 1.0, theta2).sqrt()
    cos_half = torch.where(small, 1 - theta2 / 8 + theta2 * theta2 / 384, torch.cos(theta / 2))
    sin_half_over = torch.where(small, 0.5 - theta2 / 48 + theta2 * theta2 / 3840,
                                torch.sin(theta / 2) / theta)
    return torch.cat([cos_half, sin_half_over * w], -1)


def quat_to_rotvec(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 3) the rotation vector of q, angle in [0, pi] (q and -q give the same).

    After the flip to w >= 0, angle = 2 atan2(|v|, w) and the rotation vector is
    (angle / |v|) v; for |v| << w the factor is the series 2/w (1 - x^2/3 + x^4/5), x = |v|/w.
    Invariant to the scale of q.
    """
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    w, v = q[..., :1], q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    w2 = w * w
    small = n2 < _SMALL_ANGLE2 * w2
    w_safe = torch.where(small, w, 1.0)
    x2 = torch.where(small, n2 / (w_safe * w_safe), 0.0)
    n_safe = torch.where(small, 1.0, n2).sqrt()
    factor = torch.where(small, 2 / w_safe * (1 - x2 / 3 + x2 * x2 / 5), 2 * torch.atan2(n_safe, w) / n_safe)
    return factor * v


def rotvec_to_matrix(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) Exp(w^) = I + sin(t)/t w^ + (1 - cos t)/t^2 w^2 (Rodrigues, t = |w|)."""
    theta2 = (w * w).sum(-1, keepdim=True).unsqueeze(-1)
    small = theta2 < _SMALL_ANGLE2
    theta = torch.where(small, 1.0, theta2).sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    sinc_half = torch.sin(theta / 2) / (theta / 2)  # (1 - cos t)/t^2 = sinc(t/2)^2 / 2 without cancellation
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, 0.5 * sinc_half * sinc_half)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + a * W + b * (W @ W)


def matrix_to_rotvec(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) Log(R)^v, angle in [0, pi], through the quaternion (the robust path)."""
    return quat_to_rotvec(matrix_to_quaternion(R))


def right_jacobian_inv(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) J_r(w)^{-1}, where d/ds Exp(w + s a) |_{s=0} = Exp(w) (J_r(w) a)^.

    J_r^{-1}(w) = I + w^/2 + c(t) w^2 with c(t) = (1 - (t/2) cot(t/2)) / t^2, t = |w|
    (series 1/12 + t^2/720 + t^4/30240 near 0); valid for t < 2 pi.
    """
    theta2 = (w * w).sum(-1, keepdim=True).unsqueeze(-1)
    small = theta2 < _SMALL_ANGLE2_JACOBIAN
    safe2 = torch.where(small, 1.0, theta2)
    half = safe2.sqrt() / 2
    c = torch.where(small, 1 / 12 + theta2 / 720 + theta2 * theta2 / 30240,
                    (1 - half * torch.cos(half) / torch.sin(half)) / safe2)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + 0.5 * W + c * (W @ W)


def relative_angle(R0: torch.Tensor, R1: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) x (..., 3, 3) -> (...,) the angle in [0, pi] of R0^T R1 (the geodesic distance)."""
    q = matrix_to_quaternion(R0.transpose(-1, -2) @ R1)
    return 2 * torch.atan2(torch.linalg.vector_norm(q[..., 1:], dim=-1), q[..., 0])
