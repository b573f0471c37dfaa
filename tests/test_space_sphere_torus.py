"""Sphere and FlatTorus against the Space contract, closed forms, scipy and finite differences.

``assert_space_contract`` is the generic contract check; test_space_product.py reuses it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from flowsci.spaces.sphere import Sphere
from flowsci.spaces.torus import FlatTorus

F64 = torch.float64


def gram(space, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, dim, dim) inner products of the basis vectors (B, dim, *tangent_shape) at x (B, *point_shape)."""
    xb = x.reshape(x.shape[0], 1, 1, *space.point_shape)
    return space.inner(xb, basis.unsqueeze(2), basis.unsqueeze(1))


def gaussian_tangents(space, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gaussian tangent vectors at x (B, *point_shape), from coordinates in the tangent basis."""
    z = torch.randn(x.shape[0], space.dim, generator=generator, dtype=x.dtype)
    return space.coordinates_to_tangent(space.tangent_basis(x), z)


def random_tangents(space, x: torch.Tensor, radius: float, generator: torch.Generator) -> torch.Tensor:
    """Random tangent vectors at x of norm ``radius``."""
    u = gaussian_tangents(space, x, generator)
    return space.scale(radius / space.norm(x, u), u)


def assert_space_contract(space, x: torch.Tensor, y: torch.Tensor, *, radii=(1e-3, 0.5, 2.5), seed: int = 0,
                          points_close=None):
    """The generic Space contract at float64 points x, y (B, *point_shape). ``points_close(a, b)``
    asserts that a and b are the same points (default: equal tensors; charts with two
    coordinates per point, such as quaternions, pass their own)."""
    g = torch.Generator().manual_seed(seed)
    points_close = points_close or (lambda a, b: torch.testing.assert_close(a, b, atol=1e-10, rtol=0))
    batch, ps, ts = x.shape[0], space.point_shape, space.tangent_shape

    # sampling: shapes, on the space
    z = space.random_base(7, generator=g, dtype=F64)
    assert z.shape == (7, *ps) and z.dtype == F64
    assert space.constraint_violation(z).abs().max() < 1e-12
    assert space.base_log_prob(z).shape == (7,)

    # exp / log / dist
    u = space.log(x, y)
    assert u.shape == (batch, *ts)
    points_close(space.exp(x, u), y)
    assert space.log(x, x).abs().max() < 1e-12
    torch.testing.assert_close(space.exp(x, torch.zeros_like(u)), x, atol=1e-14, rtol=0)
    torch.testing.assert_close(space.dist(x, y), space.dist(y, x), atol=1e-10, rtol=0)
    v = random_tangents(space, x, 1.0, g)
    torch.testing.assert_close(space.dist(x, space.exp(x, v)), torch.ones(batch, dtype=F64), atol=1e-10,
                               rtol=0)
    torch.testing.assert_close(space.log(x, space.exp(x, v)), v, atol=1e-10, rtol=0)

    # proj: idempotent, lands on the space, fixes points
    ambient = x + 0.1 * torch.randn(x.shape, generator=g, dtype=F64)
    p = space.proj(ambient)
    torch.testing.assert_close(space.proj(p), p, atol=1e-12, rtol=0)
    assert space.constraint_violation(p).abs().max() < 1e-12
    torch.testing.assert_close(space.proj(x), x, atol=1e-12, rtol=0)

    # proj_tangent: idempotent, output in the span of the tangent basis; basis orthonormal
    basis = space.tangent_basis(x)
    assert basis.shape == (batch, space.dim, *ts)
    torch.testing.assert_close(gram(space, x, basis), torch.eye(space.dim, dtype=F64).expand(batch, -1, -1),
                               atol=1e-12, rtol=0)
    t = space.proj_tangent(x, torch.randn(x.shape, generator=g, dtype=F64))
    assert t.shape == (batch, *ts)
    torch.testing.assert_close(space.proj_tangent(x, t), t, atol=1e-12, rtol=0)
    in_span = space.coordinates_to_tangent(basis, space.tangent_coordinates(basis, t))
    torch.testing.assert_close(in_span, t, atol=1e-12, rtol=0)
    for i in range(space.dim):  # basis vectors are tangent
        torch.testing.assert_close(space.proj_tangent(x, basis[:, i]), basis[:, i], atol=1e-12, rtol=0)

    # dexp_inv inverts the central-difference differential of exp (read in the tangent
    # representation at y = exp(x, delta) through log(y, .), whose differential at y is the identity)
    h = 1e-6
    for radius in radii:
        delta = random_tangents(space, x, radius, g)
        a = gaussian_tangents(space, x, g)
        y0 = space.exp(x, delta)
        w = (space.log(y0, space.exp(x, delta + h * a))
             - space.log(y0, space.exp(x, delta - h * a))) / (2 * h)
        torch.testing.assert_close(space.dexp_inv(x, delta, w), a, atol=1e-6, rtol=0, msg=f"|delta|={radius}")

    # finite gradients at delta = 0 and x == y, and through the divergence
    xg = x.clone().requires_grad_(True)
    zero = torch.zeros(batch, *ts, dtype=F64, requires_grad=True)
    w = gaussian_tangents(space, x, g)
    total = (space.exp(xg, zero).sum() + space.dexp_inv(xg, zero, w).sum()
             + space.log(xg, x).sum() + space.log(x, xg).sum())
    for grad in torch.autograd.grad(total, [xg, zero]):
        assert torch.isfinite(grad).all()
    weight = torch.tensor(0.7, dtype=F64, requires_grad=True)
    constant = torch.randn(ps, generator=g, dtype=F64)
    _, div = space.divergence(lambda q: weight * space.proj_tangent(q, constant + q), xg, create_graph=True)
    assert torch.isfinite(div).all()
    grad_weight, grad_x = torch.autograd.grad(div.sum(), [weight, xg], allow_unused=True)
    assert torch.isfinite(grad_weight)
    assert grad_x is None or torch.isfinite(grad_x).all()  # None where div does not depend on x


# --- Sphere ------------------------------------------------------------------------------

def sphere_points(n: int, count: int, seed: int) -> torch.Tensor:
    return Sphere(n).random_base(count, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sphere_contract(n):
    assert_space_contract(Sphere(n), sphere_points(n, 6, 1), sphere_points(n, 6, 2))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sphere_divergence_of_projected_constant_field(n):
    """v = P_x e_last is the gradient of z = x_last, so div v = Laplace-Beltrami z = -n z on S^n."""
    space, x = Sphere(n), sphere_points(n, 8, 3)
    e_last = torch.zeros(n + 1, dtype=F64)
    e_last[-1] = 1

    def field(q):
        return e_last - q[..., -1:] * q

    w, div = space.divergence(field, x)
    torch.testing.assert_close(w, field(x))
    torch.testing.assert_close(div, -n * x[:, -1], atol=1e-10, rtol=0)


def test_sphere_divergence_of_killing_field_vanishes():
    """A rotation field x -> A x (A antisymmetric) preserves volume: divergence 0."""
    space, x = Sphere(3), sphere_points(3, 5, 4)
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = a - a.T
    _, div = space.divergence(lambda q: q @ a.T, x)
    assert div.abs().max() < 1e-10
    probes = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    _, div_hutchinson = space.divergence(lambda q: q @ a.T, x, probes=probes)
    assert div_hutchinson.abs().max() < 1e-10


def test_sphere_exp_log_match_rotation_in_the_plane():
    """The geodesic from x to y is R(t) x with R(t) = expm(t theta (e2 x^T - x e2^T)) (scipy)."""
    space = Sphere(3)
    x, y = sphere_points(3, 4, 5), sphere_points(3, 4, 6)
    for xi, yi in zip(x.numpy(), y.numpy()):
        theta = math.acos(np.clip(xi @ yi, -1, 1))
        e2 = yi - (xi @ yi) * xi
        e2 /= np.linalg.norm(e2)
        generator = theta * (np.outer(e2, xi) - np.outer(xi, e2))
        for t in (0.0, 0.3, 1.0, 1.7):
            expected = scipy.linalg.expm(t * generator) @ xi
            got = space.geodesic(torch.from_numpy(xi), torch.from_numpy(yi), torch.tensor(t, dtype=F64))
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
        h = 1e-5
        velocity = (scipy.linalg.expm(h * generator) @ xi - scipy.linalg.expm(-h * generator) @ xi) / (2 * h)
        np.testing.assert_allclose(space.log(torch.from_numpy(xi), torch.from_numpy(yi)).numpy(), velocity,
                                   atol=1e-8)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sphere_base_density_integrates_to_one(n):
    """exp(base_log_prob) times the area of S^n = (n+1) vol(B^{n+1}), the ball's volume by
    Monte Carlo in the cube [-1, 1]^{n+1}."""
    space = Sphere(n)
    cube = 2 * torch.rand(400_000, n + 1, generator=torch.Generator().manual_seed(n), dtype=F64) - 1
    ball_volume = 2.0 ** (n + 1) * (cube.norm(dim=-1) < 1).double().mean()
    density = space.base_log_prob(sphere_points(n, 3, 0)).exp()
    assert density.shape == (3,)
    torch.testing.assert_close(density * (n + 1) * ball_volume, torch.ones(3, dtype=F64), atol=0.01, rtol=0)


def test_sphere_base_is_uniform():
    """On S^2 the height of a uniform point is uniform on [-1, 1] (Archimedes); the azimuth too."""
    x = Sphere(2).random_base(4000, generator=torch.Generator().manual_seed(7), dtype=F64).numpy()
    assert scipy.stats.kstest(x[:, 2], scipy.stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(np.arctan2(x[:, 1], x[:, 0]),
                              scipy.stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


@pytest.mark.parametrize("radius", [1e-3, 0.0999, 0.1001, 0.5, 2.5, 3.0])
def test_sphere_dexp_inv_inverts_ambient_differential_of_exp(radius):
    """Central differences of exp in the embedding, on both sides of the Taylor branch."""
    space, x = Sphere(2), sphere_points(2, 6, 8)
    g = torch.Generator().manual_seed(9)
    delta = space.proj_tangent(x, torch.randn(6, 3, generator=g, dtype=F64))
    delta = radius * delta / delta.norm(dim=-1, keepdim=True)
    a = space.proj_tangent(x, torch.randn(6, 3, generator=g, dtype=F64))
    h = 1e-6
    w = (space.exp(x, delta + h * a) - space.exp(x, delta - h * a)) / (2 * h)
    torch.testing.assert_close(space.dexp_inv(x, delta, w), a, atol=1e-7, rtol=0)


def test_sphere_dexp_inv_ignores_the_normal_component_of_w():
    """w is read as a tangent vector at y = exp(x, delta): adding a multiple of y changes nothing."""
    space, x = Sphere(3), sphere_points(3, 4, 14)
    g = torch.Generator().manual_seed(15)
    delta = 1.3 * space.proj(space.proj_tangent(x, torch.randn(4, 4, generator=g, dtype=F64)))
    y = space.exp(x, delta)
    w = space.proj_tangent(y, torch.randn(4, 4, generator=g, dtype=F64))
    torch.testing.assert_close(space.dexp_inv(x, delta, w + 0.7 * y), space.dexp_inv(x, delta, w))


def test_sphere_exp_derivative_at_zero_is_identity():
    """The autograd Jacobians at delta = 0 and y = x (Taylor branches): exp(x, delta) =
    x + delta + O(|delta|^2) in the embedding, log(x, y) = P_x (y - x) + O(|y - x|^2)."""
    space, x = Sphere(2), sphere_points(2, 1, 10)[0]
    jac = torch.autograd.functional.jacobian(lambda d: space.exp(x, d), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(jac, torch.eye(3, dtype=F64))
    jac_log = torch.autograd.functional.jacobian(lambda q: space.log(x, q), x.clone())
    torch.testing.assert_close(jac_log, torch.eye(3, dtype=F64) - torch.outer(x, x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_log_of_antipodal_points(dtype):
    space = Sphere(2)
    x = space.random_base(5, generator=torch.Generator().manual_seed(11), dtype=dtype)
    u = space.log(x, -x)
    assert torch.isfinite(u).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(u.norm(dim=-1), torch.full((5,), math.pi, dtype=dtype), atol=tol, rtol=0)
    assert (u * x).sum(-1).abs().max() < tol
    torch.testing.assert_close(space.exp(x, u), -x, atol=10 * tol, rtol=0)
    torch.testing.assert_close(space.log(x, -x), u, atol=0, rtol=0)  # deterministic


def test_sphere_float32_round_trip_and_distances():
    space = Sphere(2)
    g = torch.Generator().manual_seed(12)
    x, y = space.random_base(50, generator=g), space.random_base(50, generator=g)
    torch.testing.assert_close(space.exp(x, space.log(x, y)), y, atol=1e-5, rtol=0)
    expected = torch.arccos((x.double() * y.double()).sum(-1).clamp(-1, 1)).float()
    torch.testing.assert_close(space.dist(x, y), expected, atol=1e-5, rtol=0)
    assert space.log(x, x).abs().max() < 1e-6


def test_sphere_tangent_basis_batched_and_at_poles():
    space = Sphere(2)
    poles = torch.tensor([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0]], dtype=F64)
    x = torch.cat([poles, sphere_points(2, 3, 13)]).reshape(2, 3, 3)
    basis = space.tangent_basis(x)
    assert basis.shape == (2, 3, 2, 3)
    torch.testing.assert_close(basis @ basis.transpose(-1, -2), torch.eye(2, dtype=F64).expand(2, 3, 2, 2))
    assert (basis @ x.unsqueeze(-1)).abs().max() < 1e-15


def test_sphere_constraint_violation_and_bad_input():
    space = Sphere(2)
    torch.testing.assert_close(space.constraint_violation(torch.tensor([[0.0, 3.0, 4.0], [0.6, 0.0, 0.8]])),
                               torch.tensor([4.0, 0.0]))
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n"):
            Sphere(bad)


# --- FlatTorus ---------------------------------------------------------------------------

def torus_points(d: int, count: int, seed: int) -> torch.Tensor:
    return FlatTorus(d).random_base(count, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_torus_contract():
    assert_space_contract(FlatTorus(3), torus_points(3, 6, 1), torus_points(3, 6, 2))


def test_torus_log_wraps_around():
    space = FlatTorus(2)
    x = torch.tensor([0.01, 3.0], dtype=F64)
    y = torch.tensor([2 * math.pi - 0.01, 3.5], dtype=F64)
    torch.testing.assert_close(space.log(x, y), torch.tensor([-0.02, 0.5], dtype=F64))
    torch.testing.assert_close(space.log(y, x), torch.tensor([0.02, -0.5], dtype=F64))
    torch.testing.assert_close(space.dist(x, y), torch.tensor(math.hypot(0.02, 0.5), dtype=F64))
    torch.testing.assert_close(space.exp(y, space.log(y, x)), x)
    half = space.log(torch.zeros(1, dtype=F64), torch.tensor([math.pi], dtype=F64))
    assert -math.pi <= half.item() < math.pi


def test_torus_exp_wraps_into_range():
    space = FlatTorus(3)
    x = torch.tensor([6.2, 0.1, 1e-18], dtype=F64)
    u = torch.tensor([0.2, -0.3, -1e-17], dtype=F64)
    got = space.exp(x, u)
    torch.testing.assert_close(got, torch.tensor([6.4 - 2 * math.pi, 2 * math.pi - 0.2, 0.0], dtype=F64))
    assert (got >= 0).all() and (got < 2 * math.pi).all()
    torch.testing.assert_close(space.exp(x, u + 4 * math.pi), got)


def test_torus_divergence_closed_form():
    """v_i = sin(x_i) has divergence sum_i cos(x_i)."""
    space, x = FlatTorus(3), torus_points(3, 8, 3)
    _, div = space.divergence(torch.sin, x)
    torch.testing.assert_close(div, torch.cos(x).sum(-1))


def test_torus_base_distribution():
    space = FlatTorus(2)
    x = space.random_base(3000, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert (x >= 0).all() and (x < 2 * math.pi).all()
    assert scipy.stats.kstest(x[:, 1].numpy(), scipy.stats.uniform(0, 2 * math.pi).cdf).pvalue > 1e-3
    torch.testing.assert_close(space.base_log_prob(x[:2]),
                               torch.full((2,), -2 * math.log(2 * math.pi), dtype=F64))


def test_torus_constraint_violation_and_bad_input():
    space = FlatTorus(3)
    got = space.constraint_violation(torch.tensor([[-0.5, 7.0, 1.0], [0.0, 1.0, 6.0]], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([math.hypot(0.5, 7 - 2 * math.pi), 0.0], dtype=F64))
    with pytest.raises(ValueError, match="d"):
        FlatTorus(0)
