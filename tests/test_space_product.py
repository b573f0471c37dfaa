"""Product, Power and SE3N against the Space contract, their factors, closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from scipy.spatial.transform import Rotation
from test_space_sphere_torus import assert_space_contract, gaussian_tangents

from flowsci.spaces.euclidean import Euclidean
from flowsci.spaces.product import Power, Product
from flowsci.spaces.rotations import quat_to_matrix
from flowsci.spaces.se3 import SE3N
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion
from flowsci.spaces.sphere import Sphere
from flowsci.spaces.torus import FlatTorus

F64 = torch.float64


def assert_same_points(space, a: torch.Tensor, b: torch.Tensor, atol: float = 1e-10) -> None:
    """a and b are the same points of ``space`` (quaternions q and -q being the same rotation)."""
    if isinstance(space, Product):
        for factor, ai, bi in zip(space.spaces, space.split_points(a), space.split_points(b)):
            assert_same_points(factor, ai, bi, atol)
    elif isinstance(space, Power):
        assert_same_points(space.space, a, b, atol)
    elif isinstance(space, SE3N):
        torch.testing.assert_close(space.translations(a), space.translations(b), atol=atol, rtol=0)
        torch.testing.assert_close(space.rotations(a), space.rotations(b), atol=atol, rtol=0)
    elif isinstance(space, SO3Quaternion):
        torch.testing.assert_close(quat_to_matrix(a), quat_to_matrix(b), atol=atol, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def points(space, count: int, seed: int) -> torch.Tensor:
    return space.random_base(count, generator=torch.Generator().manual_seed(seed), dtype=F64)


def contract(space, count: int = 5) -> None:
    assert_space_contract(space, points(space, count, 1), points(space, count, 2),
                          points_close=lambda a, b: assert_same_points(space, a, b))


def mixed_product() -> Product:
    """1-D and 2-D factors, point numel != tangent numel for the rotations."""
    return Product([Euclidean(3), Sphere(2), FlatTorus(2), Euclidean(2, 2), SO3Matrix(), SO3Quaternion()])


def skew_vector(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) the axial vector of (m - m^T) / 2."""
    return 0.5 * torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                              m[..., 1, 0] - m[..., 0, 1]], -1)


# --- fields with closed-form divergences, one per factor -------------------------------------
# Euclidean: linear A x, div = tr A; sphere: P_x e_z, div = -n z; torus: sin, div = sum cos;
# SO(3): omega(R) = axial(R^T C) is half the gradient of tr(C^T R) for <omega, eta> = omega . eta,
# and sum_i hat(e_i)^2 = -2 I gives Laplacian(tr C^T R) = -2 tr C^T R, so div omega = -tr(C^T R).

GEN = torch.Generator().manual_seed(123)
A3 = torch.randn(3, 3, generator=GEN, dtype=F64)
D22 = torch.randn(2, 2, generator=GEN, dtype=F64)
C_MATRIX = torch.randn(3, 3, generator=GEN, dtype=F64)
C_QUATERNION = torch.randn(3, 3, generator=GEN, dtype=F64)


def factor_fields():
    """For mixed_product(): per factor (field, closed-form divergence) as functions of the factor's points."""
    return [
        (lambda q: q @ A3.T, lambda q: torch.trace(A3).expand(q.shape[:-1])),
        (lambda q: torch.tensor([0, 0, 1.0], dtype=F64) - q[..., 2:] * q, lambda q: -2 * q[..., 2]),
        (torch.sin, lambda q: torch.cos(q).sum(-1)),
        (lambda q: q * D22, lambda q: D22.sum().expand(q.shape[:-2])),
        (lambda r: skew_vector(r.transpose(-1, -2) @ C_MATRIX), lambda r: -(C_MATRIX * r).sum((-1, -2))),
        (lambda q: skew_vector(quat_to_matrix(q).transpose(-1, -2) @ C_QUATERNION),
         lambda q: -(C_QUATERNION * quat_to_matrix(q)).sum((-1, -2))),
    ]


# --- Product ---------------------------------------------------------------------------------

def test_product_contract():
    contract(mixed_product())


def test_product_shapes_split_join():
    space = mixed_product()
    assert space.point_shape == (3 + 3 + 2 + 4 + 9 + 4,)
    assert space.tangent_shape == (3 + 3 + 2 + 4 + 3 + 3,)
    assert space.dim == 3 + 2 + 2 + 4 + 3 + 3
    x = points(space, 4, 0).reshape(2, 2, -1)
    parts = space.split_points(x)
    assert [p.shape for p in parts] == [(2, 2, *s.point_shape) for s in space.spaces]
    torch.testing.assert_close(space.join_points(parts), x, atol=0, rtol=0)
    u = torch.randn(2, 2, *space.tangent_shape, dtype=F64)
    tangents = space.split_tangents(u)
    assert [t.shape for t in tangents] == [(2, 2, *s.tangent_shape) for s in space.spaces]
    torch.testing.assert_close(space.join_tangents(tangents), u, atol=0, rtol=0)
    # batch dimensions of the parts broadcast
    parts[0] = parts[0][:1, :1]
    assert space.join_points(parts).shape == x.shape


def test_product_ops_agree_with_factors():
    space = mixed_product()
    g = torch.Generator().manual_seed(3)
    x, y = points(space, 6, 4), points(space, 6, 5)
    u, w = gaussian_tangents(space, x, g), gaussian_tangents(space, x, g)
    ambient = torch.randn(x.shape, generator=g, dtype=F64)
    xs, ys, us, ws, ambients = (space.split_points(x), space.split_points(y), space.split_tangents(u),
                                space.split_tangents(w), space.split_points(ambient))

    def check(got, expected):
        for got_i, expected_i in zip(got, expected):
            torch.testing.assert_close(got_i, expected_i, atol=1e-13, rtol=0)

    factors = space.spaces
    check(space.split_points(space.exp(x, u)), [s.exp(a, b) for s, a, b in zip(factors, xs, us)])
    check(space.split_tangents(space.log(x, y)), [s.log(a, b) for s, a, b in zip(factors, xs, ys)])
    check(space.split_points(space.proj(ambient)), [s.proj(a) for s, a in zip(factors, ambients)])
    check(space.split_tangents(space.proj_tangent(x, ambient)),
          [s.proj_tangent(a, b) for s, a, b in zip(factors, xs, ambients)])
    check(space.split_tangents(space.proj_tangent(x, u)),
          [s.proj_tangent(a, b) for s, a, b in zip(factors, xs, us)])
    check(space.split_tangents(space.dexp_inv(x, u, w)),
          [s.dexp_inv(a, b, c) for s, a, b, c in zip(factors, xs, us, ws)])
    check([space.inner(x, u, w)], [sum(s.inner(a, b, c) for s, a, b, c in zip(factors, xs, us, ws))])
    check([space.base_log_prob(x)], [sum(s.base_log_prob(a) for s, a in zip(factors, xs))])
    check([space.constraint_violation(ambient)],
          [sum(s.constraint_violation(a) for s, a in zip(factors, ambients))])
    # random_base draws the factors in order from the same generator
    drawn = space.random_base(3, generator=torch.Generator().manual_seed(8), dtype=F64)
    g = torch.Generator().manual_seed(8)
    check(space.split_points(drawn), [s.random_base(3, generator=g, dtype=F64) for s in factors])


def test_product_tangent_basis_is_block_diagonal():
    space = mixed_product()
    x = points(space, 3, 6)
    basis = space.tangent_basis(x)
    row = col = 0
    for factor, xi in zip(space.spaces, space.split_points(x)):
        d, t = factor.dim, math.prod(factor.tangent_shape)
        block = factor.tangent_basis(xi).reshape(3, d, t)
        torch.testing.assert_close(basis[:, row:row + d, col:col + t], block, atol=0, rtol=0)
        assert (basis[:, row:row + d, :col] == 0).all()
        assert (basis[:, row:row + d, col + t:] == 0).all()
        row, col = row + d, col + t


def test_product_divergence_is_sum_of_factor_divergences():
    space = mixed_product()
    x = points(space, 6, 7)
    fields = factor_fields()

    def field(q):
        return space.join_tangents([f(qi) for (f, _), qi in zip(fields, space.split_points(q))])

    _, div = space.divergence(field, x)
    factor_divs = [s.divergence(f, xi)[1]
                   for s, (f, _), xi in zip(space.spaces, fields, space.split_points(x))]
    closed_forms = [expected(xi) for (_, expected), xi in zip(fields, space.split_points(x))]
    for factor_div, closed_form in zip(factor_divs, closed_forms):
        torch.testing.assert_close(factor_div, closed_form, atol=1e-10, rtol=0)
    torch.testing.assert_close(div, sum(closed_forms), atol=1e-10, rtol=0)


def test_product_bad_input():
    with pytest.raises(ValueError, match="spaces"):
        Product([])
    with pytest.raises(ValueError, match="spaces"):
        Product([Euclidean(2), "sphere"])
    odd = Euclidean(2)
    odd.tangent_shape = (3,)  # point numels [4, 2] and tangent numels [3, 3] both sum to 6
    with pytest.raises(ValueError, match="split differently"):
        Product([SO3Quaternion(), odd])
    space = mixed_product()
    x = points(space, 2, 0)
    with pytest.raises(ValueError, match="proj_tangent"):
        space.proj_tangent(x, torch.zeros(2, 5, dtype=F64))


# --- Power -----------------------------------------------------------------------------------

def test_power_contract():
    contract(Power(Sphere(2), 4))
    contract(Power(Product([Euclidean(2), SO3Quaternion()]), 3))
    contract(Power(SO3Matrix(), 2))


def test_power_ops_agree_with_copies():
    factor = Sphere(2)
    space = Power(factor, 4)
    assert space.point_shape == space.tangent_shape == (4, 3) and space.dim == 8
    g = torch.Generator().manual_seed(1)
    x, y = points(space, 5, 2), points(space, 5, 3)
    u, w = gaussian_tangents(space, x, g), gaussian_tangents(space, x, g)
    for i in range(4):
        torch.testing.assert_close(space.exp(x, u)[:, i], factor.exp(x[:, i], u[:, i]), atol=0, rtol=0)
        torch.testing.assert_close(space.log(x, y)[:, i], factor.log(x[:, i], y[:, i]), atol=0, rtol=0)
        torch.testing.assert_close(space.dexp_inv(x, u, w)[:, i], factor.dexp_inv(x[:, i], u[:, i], w[:, i]))
    torch.testing.assert_close(space.inner(x, u, w),
                               sum(factor.inner(x[:, i], u[:, i], w[:, i]) for i in range(4)))
    torch.testing.assert_close(space.base_log_prob(x), 4 * factor.base_log_prob(x[:, 0]))
    basis = space.tangent_basis(x)
    assert basis.shape == (5, 8, 4, 3)
    for i in range(4):
        for j in range(4):
            expected = factor.tangent_basis(x[:, i]) if i == j else torch.zeros(5, 2, 3, dtype=F64)
            torch.testing.assert_close(basis[:, 2 * i:2 * i + 2, j], expected, atol=0, rtol=0)


def test_power_divergence_is_sum_over_copies():
    space = Power(Sphere(2), 3)
    x = points(space, 6, 4)
    _, div = space.divergence(lambda q: torch.tensor([0, 0, 1.0], dtype=F64) - q[..., 2:] * q, x)
    torch.testing.assert_close(div, -2 * x[..., 2].sum(-1), atol=1e-10, rtol=0)


def test_power_bad_input():
    with pytest.raises(ValueError, match="n"):
        Power(Sphere(2), 0)
    with pytest.raises(ValueError, match="space"):
        Power("sphere", 2)


# --- SE3N ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rotation", ["quaternion", "matrix"])
@pytest.mark.parametrize("center_of_mass", [True, False])
def test_se3n_contract(rotation, center_of_mass):
    contract(SE3N(4, rotation, center_of_mass, translation_scale=2.0), count=4)


@pytest.mark.parametrize("rotation", ["quaternion", "matrix"])
def test_se3n_shapes_and_dim(rotation):
    r = 4 if rotation == "quaternion" else 9
    space = SE3N(5, rotation)
    assert space.point_shape == (5, 3 + r) and space.tangent_shape == (5, 6)
    assert space.dim == 3 * 4 + 3 * 5
    assert SE3N(5, rotation, center_of_mass=False).dim == 30
    x = points(space, 3, 0)
    basis = space.tangent_basis(x)
    assert basis.shape == (3, 27, 5, 6)
    assert basis[..., :3].sum(-2).abs().max() < 1e-14  # only centred translation directions
    assert torch.linalg.matrix_rank(basis[0, :, :, :3].reshape(27, 15)) == 12


def test_se3n_proj_and_proj_tangent_remove_centre_of_mass():
    space = SE3N(4, "matrix")
    g = torch.Generator().manual_seed(1)
    ambient = torch.randn(3, 4, 12, generator=g, dtype=F64) + 5.0
    x = space.proj(ambient)
    assert space.translations(x).mean(-2).abs().max() < 1e-14
    assert space.constraint_violation(x).max() < 1e-12
    assert space.constraint_violation(ambient).min() > 1.0
    torch.testing.assert_close(space.rotations(x), SO3Matrix().proj(ambient[..., 3:].reshape(3, 4, 3, 3)))
    for u in (torch.randn(3, 4, 6, generator=g, dtype=F64) + 1.0,
              torch.randn(3, 4, 12, generator=g, dtype=F64)):
        t = space.proj_tangent(x, u)
        assert t.shape == (3, 4, 6)
        assert t[..., :3].mean(-2).abs().max() < 1e-14
        frames = space.frames.proj_tangent(x, u)
        torch.testing.assert_close(t[..., 3:], frames[..., 3:], atol=0, rtol=0)
        torch.testing.assert_close(t[..., :3], frames[..., :3] - frames[..., :3].mean(-2, keepdim=True))
    free = SE3N(4, "matrix", center_of_mass=False)
    assert free.translations(free.proj(ambient)).mean(-2).abs().min() > 1.0


def test_se3n_random_base_and_density():
    """Translations: centred Gaussian of scale s. In an orthonormal basis Q of the centred
    subspace (scipy's null space of the all-ones row) the coordinates are N(0, s^2 I), and
    base_log_prob is their scipy log density plus N times -log(8 pi^2) (Haar on SO(3))."""
    n, s = 5, 1.7
    space = SE3N(n, "quaternion", translation_scale=s)
    x = points(space, 4000, 3)
    t = space.translations(x).numpy()
    np.testing.assert_allclose(t.mean(-2), 0, atol=1e-12)
    q = scipy.linalg.null_space(np.ones((1, n)))  # (n, n - 1)
    coordinates = np.einsum("ik,bia->bka", q, t).reshape(len(t), -1)
    np.testing.assert_allclose(np.cov(coordinates.T), s ** 2 * np.eye(3 * (n - 1)), atol=0.2)
    chi2 = (t ** 2).sum((-1, -2)) / s ** 2
    assert scipy.stats.kstest(chi2, scipy.stats.chi2(3 * (n - 1)).cdf).pvalue > 1e-3
    expected = (scipy.stats.multivariate_normal(np.zeros(3 * (n - 1)), s ** 2).logpdf(coordinates[:5])
                - n * math.log(8 * math.pi ** 2))
    np.testing.assert_allclose(space.base_log_prob(x[:5]).numpy(), expected, rtol=1e-12)

    free = SE3N(n, "matrix", center_of_mass=False, translation_scale=s)
    y = points(free, 4000, 4)
    ty = free.translations(y).numpy()
    assert scipy.stats.kstest((ty ** 2).sum((-1, -2)) / s ** 2, scipy.stats.chi2(3 * n).cdf).pvalue > 1e-3
    expected = (scipy.stats.multivariate_normal(np.zeros(3 * n), s ** 2).logpdf(ty[:5].reshape(5, -1))
                - n * math.log(8 * math.pi ** 2))
    np.testing.assert_allclose(free.base_log_prob(y[:5]).numpy(), expected, rtol=1e-12)


def test_se3n_accessors_round_trip():
    quaternion_space, matrix_space = SE3N(3, "quaternion"), SE3N(3, "matrix")
    x = points(quaternion_space, 6, 5)
    rotations = quaternion_space.rotations(x)
    assert rotations.shape == (6, 3, 3, 3)
    q = x[..., 3:].numpy()
    scipy_matrices = Rotation.from_quat(q[..., [1, 2, 3, 0]].reshape(-1, 4)).as_matrix().reshape(6, 3, 3, 3)
    np.testing.assert_allclose(rotations.numpy(), scipy_matrices, atol=1e-12)
    torch.testing.assert_close(quaternion_space.from_frames(quaternion_space.translations(x), rotations), x)
    y = matrix_space.from_frames(quaternion_space.translations(x), rotations)
    assert y.shape == (6, 3, 12)
    torch.testing.assert_close(matrix_space.rotations(y), rotations, atol=0, rtol=0)
    torch.testing.assert_close(matrix_space.translations(y), quaternion_space.translations(x), atol=0, rtol=0)


def test_se3n_charts_agree_along_geodesics():
    quaternion_space, matrix_space = SE3N(4, "quaternion"), SE3N(4, "matrix")
    x0, x1 = points(matrix_space, 5, 6), points(matrix_space, 5, 7)

    def to_quaternion(x):
        return quaternion_space.from_frames(matrix_space.translations(x), matrix_space.rotations(x))

    q0, q1 = to_quaternion(x0), to_quaternion(x1)
    torch.testing.assert_close(quaternion_space.log(q0, q1), matrix_space.log(x0, x1), atol=1e-10, rtol=0)
    for t in (0.25, 0.5, 0.9):
        time = torch.full((5,), t, dtype=F64)
        xm, xq = matrix_space.geodesic(x0, x1, time), quaternion_space.geodesic(q0, q1, time)
        torch.testing.assert_close(quaternion_space.rotations(xq), matrix_space.rotations(xm), atol=1e-10,
                                   rtol=0)
        torch.testing.assert_close(quaternion_space.translations(xq), matrix_space.translations(xm),
                                   atol=1e-12, rtol=0)
        assert matrix_space.translations(xm).mean(-2).abs().max() < 1e-14


@pytest.mark.parametrize("center_of_mass", [True, False])
def test_se3n_divergence_counts_translation_directions(center_of_mass):
    """Field (c t, omega(R)): the translation part has divergence c times the number of free
    translation directions (3N - 3 with the centre of mass fixed); per frame the rotation part
    omega = axial(R^T C) adds -tr(C^T R)."""
    n, c = 4, 0.8
    space = SE3N(n, "quaternion", center_of_mass=center_of_mass)
    x = points(space, 5, 8)

    def field(y):
        rotation = skew_vector(space.rotations(y).transpose(-1, -2) @ C_MATRIX)
        return torch.cat([c * space.translations(y), rotation], -1)

    _, div = space.divergence(field, x)
    expected = (c * (3 * (n - 1) if center_of_mass else 3 * n)
                - (C_MATRIX * space.rotations(x)).sum((-1, -2, -3)))
    torch.testing.assert_close(div, expected, atol=1e-10, rtol=0)


def test_se3n_bad_input():
    with pytest.raises(ValueError, match="n_frames"):
        SE3N(0)
    with pytest.raises(ValueError, match="rotation"):
        SE3N(3, rotation="euler")
    with pytest.raises(ValueError, match="translation_scale"):
        SE3N(3, translation_scale=0.0)
