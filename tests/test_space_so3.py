"""Oracle tests of the SO(3) spaces (flowsci.spaces.so3) and rotation algebra
(flowsci.spaces.rotations): the identities of FoldFlow (Bose et al., ICLR 2024) and ReQFlow
(Yue, Wang & Xu, ICML 2025), checked by independent oracles (docs/design.md).

The oracles: scipy.spatial.transform.Rotation in float64 (exp, log, composition, angles), central
finite differences in float64 (geodesic velocity, the differential of exp and its inverse, the
divergence and the Laplacian), autograd (torch.func.jvp of the geodesic), scipy.integrate.quad
(the volume 8 pi^2 from the finite-difference Jacobian determinant of Exp) and the KS test with
the uniform angle CDF (omega - sin omega) / pi.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from scipy.spatial.transform import Rotation

from flowsci.spaces.igso3 import IGSO3
from flowsci.spaces.rotations import (
    hat,
    matrix_to_quaternion,
    matrix_to_rotvec,
    quat_multiply,
    quat_to_matrix,
    quat_to_rotvec,
    relative_angle,
    right_jacobian_inv,
    rotvec_to_matrix,
    rotvec_to_quat,
    vee,
)
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion

F64 = torch.float64
CHARTS = {"matrix": SO3Matrix(), "quaternion": SO3Quaternion()}
chart = pytest.mark.parametrize("space", list(CHARTS.values()), ids=list(CHARTS))


def scipy_rotations(n: int, seed: int) -> Rotation:
    return Rotation.random(n, random_state=seed)


def points(space, rot: Rotation, dtype=F64) -> torch.Tensor:
    """The chart's points for scipy rotations."""
    return space.from_matrix(torch.tensor(rot.as_matrix(), dtype=dtype))


def as_rotation(space, x: torch.Tensor) -> Rotation:
    return Rotation.from_matrix(space.to_matrix(x).detach().to(F64).numpy())


def ambient_tangent(space, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """The ambient velocity of body vector omega at x: R omega^ or q ⊗ (0, omega/2)."""
    if isinstance(space, SO3Matrix):
        return x @ hat(omega)
    return quat_multiply(x, torch.cat([torch.zeros_like(omega[..., :1]), omega / 2], -1))


def body_gradient(space, A: torch.Tensor):
    """The gradient of f(R) = tr(A R) as a body-frame field: grad_i = tr(A R e_i^)."""
    basis_hat = hat(torch.eye(3, dtype=A.dtype))

    def field(y: torch.Tensor) -> torch.Tensor:
        R = space.to_matrix(y)
        return torch.einsum("ab,nbc,ica->ni", A, R, basis_hat)
    return field


# --- rotation algebra against scipy ------------------------------------------------------

@pytest.mark.parametrize("angle", [1e-6, 1e-4, 1.0, math.pi - 1e-4])
def test_float32_log_and_exp_match_scipy(angle):
    axes = np.random.default_rng(0).normal(size=(64, 3))
    rotvec = angle * axes / np.linalg.norm(axes, axis=1, keepdims=True)
    rot = Rotation.from_rotvec(rotvec)
    quat = torch.tensor(rot.as_quat()[:, [3, 0, 1, 2]], dtype=torch.float32)
    mat = torch.tensor(rot.as_matrix(), dtype=torch.float32)
    identity_q = torch.tensor([1.0, 0, 0, 0]).expand(64, 4)
    for log in (quat_to_rotvec(quat), matrix_to_rotvec(mat), SO3Quaternion().log(identity_q, quat),
                SO3Matrix().log(torch.eye(3).expand(64, 3, 3), mat)):
        assert log.dtype == torch.float32
        np.testing.assert_allclose(log.double().numpy(), rotvec, rtol=0, atol=1e-6)
        np.testing.assert_allclose(log.double().norm(dim=-1).numpy(), angle, rtol=0, atol=1e-6)
    if angle < 1e-3:  # relative accuracy where the naive formulas lose everything
        np.testing.assert_allclose(quat_to_rotvec(quat).double().numpy(), rotvec, rtol=1e-6)
        np.testing.assert_allclose(matrix_to_rotvec(mat).double().numpy(), rotvec, rtol=1e-6)
    rotvec32 = torch.tensor(rotvec, dtype=torch.float32)
    np.testing.assert_allclose(rotvec_to_matrix(rotvec32).double().numpy(), rot.as_matrix(), rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(rotvec_to_quat(rotvec32).double().numpy(), quat.double().numpy(), rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(matrix_to_quaternion(mat).double().numpy(), quat.double().numpy(), rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(relative_angle(torch.eye(3), mat).double().numpy(), angle, rtol=0, atol=1e-6)


def test_float64_maps_are_exact_across_their_taylor_thresholds():
    angles = np.array([0.0, 1e-8, 5e-4, 9.99e-4, 1.001e-3, 1.99e-3, 2.01e-3, 9.9e-3, 1.01e-2, 0.5])
    axes = np.random.default_rng(1).normal(size=(len(angles), 3))
    rotvec = angles[:, None] * axes / np.linalg.norm(axes, axis=1, keepdims=True)
    rot = Rotation.from_rotvec(rotvec)
    quat = torch.tensor(rot.as_quat()[:, [3, 0, 1, 2]])
    w = torch.tensor(rotvec)
    torch.testing.assert_close(quat_to_rotvec(quat), w, rtol=1e-14, atol=1e-20)
    torch.testing.assert_close(matrix_to_rotvec(torch.tensor(rot.as_matrix())), w, rtol=1e-12, atol=1e-20)
    torch.testing.assert_close(rotvec_to_quat(w), quat, rtol=1e-15, atol=1e-20)
    torch.testing.assert_close(rotvec_to_matrix(w), torch.tensor(rot.as_matrix()), rtol=1e-15, atol=1e-20)


def test_rotation_algebra_matches_scipy_and_cross_product():
    gen = torch.Generator().manual_seed(0)
    w, v = torch.randn(2, 50, 3, generator=gen, dtype=F64)
    torch.testing.assert_close((hat(w) @ v.unsqueeze(-1)).squeeze(-1), torch.linalg.cross(w, v))
    torch.testing.assert_close(vee(hat(w)), w)
    p_rot, q_rot = scipy_rotations(50, 1), scipy_rotations(50, 2)
    p = torch.tensor(p_rot.as_quat()[:, [3, 0, 1, 2]])
    q = torch.tensor(q_rot.as_quat()[:, [3, 0, 1, 2]])
    torch.testing.assert_close(quat_to_matrix(quat_multiply(p, q)), torch.tensor((p_rot * q_rot).as_matrix()))
    torch.testing.assert_close(quat_to_matrix(-3 * p), torch.tensor(p_rot.as_matrix()))  # any scale, any sign
    big = torch.tensor(Rotation.from_rotvec(3.0 * np.eye(3)).as_matrix())  # angle 3: the x, y, z branches
    np.testing.assert_allclose(matrix_to_rotvec(big).numpy(), 3.0 * np.eye(3), atol=1e-12)
    assert (matrix_to_quaternion(torch.tensor(q_rot.as_matrix()))[:, 0] >= 0).all()


def test_right_jacobian_inv_inverts_the_finite_difference_differential_of_exp():
    rng = np.random.default_rng(3)
    h = 1e-6
    for radius in (1e-5, 0.009, 0.02, 1.0, 3.0):  # Taylor branch, both sides of its threshold, large
        axis = rng.normal(size=3)
        w = radius * axis / np.linalg.norm(axis)
        exp_w = Rotation.from_rotvec(w).as_matrix()
        columns = []
        for i in range(3):
            step = h * np.eye(3)[i]
            d = (Rotation.from_rotvec(w + step).as_matrix()
                 - Rotation.from_rotvec(w - step).as_matrix()) / (2 * h)
            columns.append(vee(torch.tensor(exp_w.T @ d)))  # J_r(w) e_i
        jac = torch.stack(columns, -1)
        inv = right_jacobian_inv(torch.tensor(w))
        torch.testing.assert_close(inv @ jac, torch.eye(3, dtype=F64), rtol=0, atol=1e-8)


def test_right_jacobian_inv_is_exact_across_its_taylor_threshold():
    """Against the forward-mode Jacobian of Rodrigues' formula (itself exact to 1e-15 against
    scipy above), J_r^{-1} J_r = I to float64 precision on both sides of the series switch."""
    axis = torch.tensor([0.48, -0.6, 0.64], dtype=F64)
    for radius in (1e-3, 9.9e-3, 1.01e-2, 0.1):
        w = radius * axis
        exp_w = rotvec_to_matrix(w)
        jac = torch.stack([vee(exp_w.T @ torch.func.jvp(rotvec_to_matrix, (w,), (e,))[1])
                           for e in torch.eye(3, dtype=F64)], -1)
        torch.testing.assert_close(right_jacobian_inv(w) @ jac, torch.eye(3, dtype=F64), rtol=0, atol=2e-15)


# --- the Space contract on both charts -----------------------------------------------------

@chart
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 2e-6)])
def test_exp_log_roundtrip_and_dist_is_the_scipy_angle(space, dtype, tol):
    r0, r1 = scipy_rotations(200, 4), scipy_rotations(200, 5)
    x, y = points(space, r0, dtype), points(space, r1, dtype)
    u = space.log(x, y)
    assert u.shape == (200, 3) and u.dtype == dtype
    back = as_rotation(space, space.exp(x, u))
    assert (back.inv() * r1).magnitude().max() < tol * 10
    angle = (r0.inv() * r1).magnitude()
    np.testing.assert_allclose(space.dist(x, y).double().numpy(), angle, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(space.dist(y, x).double().numpy(), angle, rtol=0, atol=tol * 10)
    assert space.constraint_violation(space.exp(x, u)).max() < tol * 10
    assert space.pairwise_dist(x[:5], y[:7]).shape == (5, 7)


def test_log_takes_the_shortest_path_for_either_quaternion_sign():
    space = SO3Quaternion()
    r0, r1 = scipy_rotations(100, 6), scipy_rotations(100, 7)
    q0, q1 = points(space, r0), points(space, r1)
    expected = torch.tensor((r0.inv() * r1).as_rotvec())
    for a, b in ((q0, q1), (-q0, q1), (q0, -q1), (-q0, -q1)):
        torch.testing.assert_close(space.log(a, b), expected)


def test_matrix_proj_is_the_polar_factor_and_idempotent():
    space = SO3Matrix()
    gen = torch.Generator().manual_seed(8)
    R = points(space, scipy_rotations(20, 8))
    B = torch.randn(20, 3, 3, generator=gen, dtype=F64)
    S = B @ B.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=F64)  # symmetric positive definite
    torch.testing.assert_close(space.proj(R @ S), R)  # A = R S: the nearest rotation is R
    A = torch.randn(20, 3, 3, generator=gen, dtype=F64)
    P = space.proj(A)
    torch.testing.assert_close(space.proj(P), P)
    assert space.constraint_violation(P).max() < 1e-12 and space.constraint_violation(A).min() > 1e-3
    dist_to_p = torch.linalg.matrix_norm(A - P)  # no nearby rotation is closer
    for i in range(3):
        for s in (1e-3, -1e-3):
            other = P @ rotvec_to_matrix(torch.tensor([s if j == i else 0.0 for j in range(3)], dtype=F64))
            assert (torch.linalg.matrix_norm(A - other) > dist_to_p).all()


def test_quaternion_proj_normalises_and_is_idempotent():
    space = SO3Quaternion()
    q = points(space, scipy_rotations(20, 9))
    torch.testing.assert_close(space.proj(2.5 * q), q)
    torch.testing.assert_close(space.proj(space.proj(3 * q)), q)
    torch.testing.assert_close(space.constraint_violation(2 * q), torch.ones(20, dtype=F64))


@chart
def test_proj_tangent_is_the_idempotent_orthogonal_projection(space):
    gen = torch.Generator().manual_seed(10)
    x = points(space, scipy_rotations(30, 10))
    u = torch.randn(30, *space.point_shape, generator=gen, dtype=F64)  # ambient
    p = space.proj_tangent(x, u)
    assert p.shape == (30, 3)
    torch.testing.assert_close(space.proj_tangent(x, p), p)
    tangent = ambient_tangent(space, x, p)
    torch.testing.assert_close(space.proj_tangent(x, tangent), p)  # identity on tangent vectors
    residual = (u - tangent).flatten(1)
    for e in torch.eye(3, dtype=F64):  # u - tangent is orthogonal to every tangent direction
        direction = ambient_tangent(space, x, e.expand(30, 3)).flatten(1)
        torch.testing.assert_close((residual * direction).sum(-1), torch.zeros(30, dtype=F64))
    with pytest.raises(ValueError, match="body-frame vector"):
        space.proj_tangent(x, torch.zeros(30, 5, dtype=F64))


@chart
def test_tangent_basis_is_orthonormal_and_base_log_prob_is_uniform(space):
    x = points(space, scipy_rotations(7, 11))
    basis = space.tangent_basis(x)
    assert basis.shape == (7, 3, 3)
    gram = space.inner(x.unsqueeze(1).unsqueeze(1), basis.unsqueeze(2), basis.unsqueeze(1))
    torch.testing.assert_close(gram, torch.eye(3, dtype=F64).expand(7, 3, 3))
    torch.testing.assert_close(space.base_log_prob(x),
                               torch.full((7,), -math.log(8 * math.pi ** 2), dtype=F64))
    z = space.random_base(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert z.shape == (5, *space.point_shape) and space.constraint_violation(z).max() < 1e-12


def test_the_volume_of_so3_is_8_pi_squared():
    """vol = int_{|w| < pi} det J_r(w) d^3w with J_r from finite differences of scipy's Exp."""
    h = 1e-6

    def det_jacobian(w: np.ndarray) -> float:
        exp_w = Rotation.from_rotvec(w).as_matrix()
        cols = [vee(torch.tensor(exp_w.T @ (Rotation.from_rotvec(w + h * e).as_matrix()
                                            - Rotation.from_rotvec(w - h * e).as_matrix()) / (2 * h)))
                for e in np.eye(3)]
        return float(torch.linalg.det(torch.stack(cols, -1)))

    axes = np.random.default_rng(12).normal(size=(2, 3))
    for axis in axes / np.linalg.norm(axes, axis=1, keepdims=True):
        volume, _ = scipy.integrate.quad(lambda r, axis=axis: 4 * math.pi * r * r * det_jacobian(r * axis),
                                         0, math.pi)
        assert volume == pytest.approx(8 * math.pi ** 2, rel=1e-7)


@chart
def test_dexp_inv_inverts_the_finite_difference_differential_of_exp(space):
    gen = torch.Generator().manual_seed(13)
    x = points(space, scipy_rotations(40, 13))
    delta = torch.randn(40, 3, generator=gen, dtype=F64)
    delta[:10] = 0
    delta[10:20] *= 1e-3
    a = torch.randn(40, 3, generator=gen, dtype=F64)
    h = 1e-6
    y = space.exp(x, delta)
    w = space.proj_tangent(y, (space.exp(x, delta + h * a) - space.exp(x, delta - h * a)) / (2 * h))
    torch.testing.assert_close(space.dexp_inv(x, delta, w), a, rtol=0, atol=1e-8)


@chart
def test_divergence_of_gradient_field_is_the_laplacian_minus_two_f(space):
    """f(R) = tr(A R) is an l = 1 function: Laplace-Beltrami f = -2 f (checked here with second
    differences along the geodesics R Exp(s e_i)); the divergence of grad f must equal it."""
    gen = torch.Generator().manual_seed(14)
    A = torch.randn(3, 3, generator=gen, dtype=F64)
    x = points(space, scipy_rotations(16, 14))

    def f(y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ab,nba->n", A, space.to_matrix(y))

    field = body_gradient(space, A)
    h = 1e-4
    steps = [space.exp(x, s * e.expand(16, 3)) for e in torch.eye(3, dtype=F64) for s in (h, -h)]
    first = torch.stack([(f(steps[2 * i]) - f(steps[2 * i + 1])) / (2 * h) for i in range(3)], -1)
    torch.testing.assert_close(field(x), first, rtol=0, atol=1e-7)  # the field is grad f
    laplacian = sum((f(steps[2 * i]) - 2 * f(x) + f(steps[2 * i + 1])) / h ** 2 for i in range(3))
    torch.testing.assert_close(laplacian, -2 * f(x), rtol=0, atol=1e-5)
    value, div = space.divergence(field, x)
    torch.testing.assert_close(value, field(x))
    torch.testing.assert_close(div, -2 * f(x))


@chart
def test_divergence_matches_finite_differences_along_the_body_frame(space):
    """For a bi-invariant metric, div X = sum_i d/ds X_i(R Exp(s e_i)) at s = 0."""
    gen = torch.Generator().manual_seed(15)
    C = torch.randn(3, 9, generator=gen, dtype=F64)
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def field(y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(space.to_matrix(y).flatten(-2) @ C.T) * scale

    x = points(space, scipy_rotations(16, 15))
    h = 1e-5
    fd = sum((field(space.exp(x, h * e.expand(16, 3)))[:, i]
              - field(space.exp(x, -h * e.expand(16, 3)))[:, i])
             / (2 * h) for i, e in enumerate(torch.eye(3, dtype=F64)))
    _, div = space.divergence(field, x)
    torch.testing.assert_close(div, fd, rtol=0, atol=1e-8)
    _, div_constant = space.divergence(lambda y: torch.ones(y.shape[0], 3, dtype=F64) + 0 * y.sum(), x)
    torch.testing.assert_close(div_constant, torch.zeros(16, dtype=F64), rtol=0, atol=1e-12)


@chart
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gradients_are_finite_at_zero_and_at_equal_points(space, dtype):
    x = points(space, scipy_rotations(4, 16), dtype).requires_grad_(True)
    delta = torch.zeros(4, 3, dtype=dtype, requires_grad=True)
    g_x, g_delta = torch.autograd.grad(space.exp(x, delta).sum(), (x, delta))
    assert torch.isfinite(g_x).all() and torch.isfinite(g_delta).all()
    (g_same,) = torch.autograd.grad(space.log(x, x.detach().clone()).square().sum()
                                    + space.log(x, x).sum(), x)
    assert torch.isfinite(g_same).all()
    (g_angle,) = torch.autograd.grad(relative_angle(space.to_matrix(x), space.to_matrix(x).detach()).sum(), x)
    assert torch.isfinite(g_angle).all()
    A = torch.randn(3, 3, dtype=dtype, generator=torch.Generator().manual_seed(16), requires_grad=True)
    _, div = space.divergence(body_gradient(space, A), x.detach(), create_graph=True)
    (g_a,) = torch.autograd.grad(div.sum(), A)
    assert torch.isfinite(g_a).all() and g_a.abs().sum() > 0


# --- geodesics, targets and charts ---------------------------------------------------------

def test_matrix_and_quaternion_geodesics_agree_in_float32():
    r0, r1 = scipy_rotations(500, 17), scipy_rotations(500, 18)
    t = torch.rand(500, generator=torch.Generator().manual_seed(17))
    mat, quat = CHARTS["matrix"], CHARTS["quaternion"]
    R_t = mat.geodesic(points(mat, r0, torch.float32), points(mat, r1, torch.float32), t)
    q_t = quat.geodesic(points(quat, r0, torch.float32), points(quat, r1, torch.float32), t)
    assert R_t.dtype == q_t.dtype == torch.float32
    torch.testing.assert_close(quat.to_matrix(q_t), R_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(quat.log(points(quat, r0, torch.float32), points(quat, r1, torch.float32)),
                               mat.log(points(mat, r0, torch.float32), points(mat, r1, torch.float32)),
                               rtol=0, atol=2e-6)


def geodesic_setup(space, n: int = 100, seed: int = 19):
    r0, r1 = scipy_rotations(n, seed), scipy_rotations(n, seed + 1)
    t = 0.05 + 0.9 * torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    omega = torch.tensor((r0.inv() * r1).as_rotvec())  # body-frame relative rotation vector (scipy)
    return points(space, r0), points(space, r1), t, omega


@chart
def test_finite_difference_velocity_is_the_body_vector_omega(space):
    x0, x1, t, omega = geodesic_setup(space)
    h = 1e-5
    fd = (space.geodesic(x0, x1, t + h) - space.geodesic(x0, x1, t - h)) / (2 * h)
    x_t = space.geodesic(x0, x1, t)
    torch.testing.assert_close(fd, ambient_tangent(space, x_t, omega), rtol=0, atol=1e-9)  # R_t omega^
    torch.testing.assert_close(space.proj_tangent(x_t, fd), omega, rtol=0, atol=1e-9)


@chart
def test_the_three_target_forms_agree(space):
    x0, x1, t, omega = geodesic_setup(space)
    x_t = space.geodesic(x0, x1, t)
    anchored_x0 = -space.log(x_t, x0) / t.unsqueeze(-1)  # FoldFlow
    anchored_x1 = space.log(x_t, x1) / (1 - t).unsqueeze(-1)  # FrameFlow / ReQFlow
    _, dx = torch.func.jvp(lambda s: space.geodesic(x0, x1, s), (t,), (torch.ones_like(t),))
    autograd = space.proj_tangent(x_t, dx)  # META style
    for target in (anchored_x0, anchored_x1, autograd):
        torch.testing.assert_close(target, omega, rtol=0, atol=1e-10)


def test_reqflow_quaternion_target_is_one_minus_t_omega():
    space = CHARTS["quaternion"]
    q0, q1, t, omega = geodesic_setup(space, seed=21)
    torch.testing.assert_close(space.log(space.geodesic(q0, q1, t), q1), (1 - t).unsqueeze(-1) * omega,
                               rtol=0, atol=1e-12)


def test_foldflow_norm_so3_is_the_squared_body_speed():
    space = CHARTS["matrix"]
    R0, R1, t, omega = geodesic_setup(space, seed=23)
    R_t, v = torch.func.jvp(lambda s: space.geodesic(R0, R1, s), (t,), (torch.ones_like(t),))
    r = R_t.transpose(-1, -2) @ v
    norm_so3 = -0.5 * torch.diagonal(r @ r, dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(norm_so3, (omega * omega).sum(-1), rtol=1e-12, atol=0)
    torch.testing.assert_close(space.norm(R_t, space.proj_tangent(R_t, v)) ** 2, norm_so3)


# --- the uniform base distribution -----------------------------------------------------------

def haar_angle_cdf(omega: np.ndarray) -> np.ndarray:
    return (omega - np.sin(omega)) / np.pi


@chart
def test_haar_angles_follow_one_minus_cos_over_pi(space):
    x = space.random_base(20000, generator=torch.Generator().manual_seed(24), dtype=F64)
    angles = as_rotation(space, x).magnitude()
    assert scipy.stats.kstest(angles, haar_angle_cdf).pvalue > 1e-3


def test_haar_ks_test_rejects_igso3_angles():
    angles = as_rotation(CHARTS["matrix"], IGSO3(0.5).sample(
        20000, generator=torch.Generator().manual_seed(25), dtype=F64)).magnitude()
    assert scipy.stats.kstest(angles, haar_angle_cdf).pvalue < 1e-6
