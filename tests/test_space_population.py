"""PopulationSpace against the generic Space contract, an independent W2 LP, brute force over
permutations, the geodesic path's closed forms, the solvers, OT couplings and a numerical
integral of the base density."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from test_population_toolkit import lp_transport
from test_space_sphere_torus import assert_space_contract

from flowsci.couplings import OTCoupling
from flowsci.grids import uniform_grid
from flowsci.paths.geodesic import GeodesicPath
from flowsci.population import population_wasserstein
from flowsci.solvers import Euler
from flowsci.spaces import PopulationSpace

F64 = torch.float64


def clouds(batch: int, n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(batch, n, d, generator=torch.Generator().manual_seed(seed), dtype=F64) + shift


def same_measure(a: torch.Tensor, b: torch.Tensor) -> None:
    """a and b (B, n, d) hold the same points up to order (W2 = 0 by an exact LP)."""
    assert population_wasserstein(a, b).max() < 1e-7


def brute_force_partner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y (n, d) reordered by the permutation minimising sum_i |y_sigma(i) - x_i|^2, by enumeration."""
    best = min(itertools.permutations(range(x.shape[0])), key=lambda s: float(((y[list(s)] - x) ** 2).sum()))
    return y[list(best)]


@pytest.mark.parametrize("n, d", [(1, 3), (4, 2), (3, 3)])
def test_population_space_contract(n, d):
    """The generic contract on well-separated clouds (spacing 20 along the first axis), where
    displacements of norm <= 2.5 keep the identity assignment; y is a shuffled perturbation."""
    space = PopulationSpace(n, d)
    g = torch.Generator().manual_seed(n * 10 + d)
    anchors = torch.zeros(n, d, dtype=F64)
    anchors[:, 0] = 20.0 * torch.arange(n, dtype=F64)
    x = anchors + torch.randn(5, n, d, generator=g, dtype=F64)
    y = (x + 0.5 * torch.randn(5, n, d, generator=g, dtype=F64))[:, torch.randperm(n, generator=g)]
    assert_space_contract(space, x, y, points_close=same_measure)
    assert space.dim == n * d and space.point_shape == space.tangent_shape == (n, d)


def test_exp_of_log_is_y_up_to_order_and_dist_is_w2():
    space = PopulationSpace(7, 2)
    x, y = clouds(6, 7, 2, seed=1), clouds(6, 7, 2, seed=2, shift=0.5)
    z = space.exp(x, space.log(x, y))
    for b in range(6):   # the same points: sorted by their (almost surely distinct) first coordinate
        torch.testing.assert_close(z[b, z[b, :, 0].argsort()], y[b, y[b, :, 0].argsort()], atol=1e-14, rtol=0)
    torch.testing.assert_close(space.dist(x, y), population_wasserstein(x, y, p=2), atol=1e-9, rtol=0)
    torch.testing.assert_close(space.dist(x, y), space.dist(y, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_log_is_the_shortest_displacement_over_all_permutations(n):
    space = PopulationSpace(n, 2)
    x, y = clouds(4, n, 2, seed=10 + n), clouds(4, n, 2, seed=20 + n)
    u = space.log(x, y)
    for b in range(4):
        torch.testing.assert_close(u[b], brute_force_partner(x[b], y[b]) - x[b], atol=1e-14, rtol=0)


def test_log_broadcasts_over_leading_dimensions():
    space = PopulationSpace(5, 3)
    x, y = clouds(6, 5, 3, seed=3).reshape(2, 3, 5, 3), clouds(3, 5, 3, seed=4)
    u = space.log(x, y)
    assert u.shape == (2, 3, 5, 3)
    for i, j in itertools.product(range(2), range(3)):
        torch.testing.assert_close(u[i, j], brute_force_partner(x[i, j], y[j]) - x[i, j], atol=1e-14, rtol=0)
    pairwise = space.pairwise_dist(x.reshape(6, 5, 3), y)
    want = torch.stack([population_wasserstein(xi.expand(3, 5, 3), y) for xi in x.reshape(6, 5, 3)])
    torch.testing.assert_close(pairwise, want, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 3\)"):
        space.log(x, clouds(3, 4, 3, seed=5))


def test_tangent_basis_is_orthonormal_for_the_mean_metric():
    space = PopulationSpace(3, 2)
    x = clouds(4, 3, 2, seed=6)
    basis = space.tangent_basis(x)
    assert basis.shape == (4, 6, 3, 2)
    gram = space.inner(x[:, None, None], basis[:, :, None], basis[:, None, :])
    torch.testing.assert_close(gram, torch.eye(6, dtype=F64).expand(4, 6, 6), atol=1e-14, rtol=0)
    # the inner product is the mean over points: |u|^2 = (1/n) sum_i |u_i|^2
    u = clouds(4, 3, 2, seed=7)
    torch.testing.assert_close(space.norm(x, u) ** 2, (u ** 2).sum((1, 2)) / 3, atol=1e-14, rtol=0)


def test_geodesic_path_velocity_is_the_matched_displacement():
    """jvp and x1-anchored targets agree (the assignment recomputed at x_t finds the same partner:
    cyclical monotonicity of the optimal matching) and equal matched - x0 (brute force)."""
    space = PopulationSpace(5, 2)
    x0, x1 = clouds(8, 5, 2, seed=8), clouds(8, 5, 2, seed=9, shift=1.0)
    t = torch.rand(8, generator=torch.Generator().manual_seed(10), dtype=F64) * 0.98
    matched = torch.stack([brute_force_partner(a, b) for a, b in zip(x0, x1)])
    jvp = GeodesicPath(space, target="jvp").sample(x0, x1, t)
    anchored = GeodesicPath(space, target="x1").sample(x0, x1, t)
    torch.testing.assert_close(jvp.x_t, x0 + t[:, None, None] * (matched - x0), atol=1e-14, rtol=0)
    torch.testing.assert_close(jvp.dx_t, matched - x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(anchored.dx_t, matched - x0, atol=1e-10, rtol=0)


def test_euler_with_a_constant_field_moves_points_by_t_u():
    space = PopulationSpace(4, 3)
    x0, u = clouds(3, 4, 3, seed=11), clouds(3, 4, 3, seed=12)
    result = Euler().integrate(lambda x, t: u, x0, uniform_grid(7, 0.0, 0.6), space=space)
    torch.testing.assert_close(result.x, x0 + 0.6 * u, atol=1e-14, rtol=0)


@pytest.mark.parametrize("n, d", [(1, 1), (2, 1), (1, 2)])
def test_base_density_integrates_to_one_against_the_metric_volume(n, d):
    """Integrate exp(base_log_prob) sqrt(det G) over a grid, with G the Gram matrix of the
    coordinate vectors under ``inner`` (the Riemannian volume element, n^{-nd/2} here)."""
    space = PopulationSpace(n, d)
    eye = torch.eye(n * d, dtype=F64).reshape(n * d, n, d)
    volume_element = space.inner(None, eye[:, None], eye[None]).det().sqrt()
    axis = torch.linspace(-9.0, 9.0, 721, dtype=F64)
    grid = torch.stack(torch.meshgrid(*[axis] * (n * d), indexing="ij"), -1).reshape(-1, n, d)
    step = (axis[1] - axis[0]) ** (n * d)
    total = space.base_log_prob(grid).exp().sum() * volume_element * step
    assert abs(total.item() - 1) < 1e-9
    if n > 1:
        assert abs(volume_element.item() - 1) > 0.1   # the correction matters here


def test_base_log_prob_is_the_gaussian_of_the_points_plus_the_volume_correction():
    space = PopulationSpace(3, 2)
    x = space.random_base(1000, generator=torch.Generator().manual_seed(13), dtype=F64)
    assert x.shape == (1000, 3, 2)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum((1, 2))
    torch.testing.assert_close(space.base_log_prob(x), normal + 0.5 * 6 * math.log(3), atol=1e-12, rtol=0)
    # i.i.d. standard normal points
    assert abs(x.mean().item()) < 0.05 and abs(x.var().item() - 1) < 0.05


def test_ot_coupling_with_the_geodesic_cost_pairs_clouds_by_w2():
    space = PopulationSpace(4, 2)
    batch = 6
    x0, x1 = clouds(batch, 4, 2, seed=14), clouds(batch, 4, 2, seed=15) * 0.5
    x1 = x1 + torch.randn(batch, 1, 2, generator=torch.Generator().manual_seed(16), dtype=F64)
    y0, y1, _ = OTCoupling(cost="geodesic", space=space)(x0, x1, {})
    assert torch.equal(y1, x1)
    rows = [int(np.flatnonzero([torch.equal(r, c) for c in x0])[0]) for r in y0]
    assert sorted(rows) == list(range(batch))
    w2 = torch.stack([population_wasserstein(xi.expand(batch, 4, 2), x1) for xi in x0]).numpy()
    optimum = lp_transport(w2 ** 2, np.full(batch, 1 / batch), np.full(batch, 1 / batch))
    assert abs(np.mean(w2[rows, np.arange(batch)] ** 2) - optimum) < 1e-9
    independent = np.mean(np.diag(w2) ** 2)
    assert independent > optimum + 1e-3   # the pairing changed something


def test_population_space_rejects():
    with pytest.raises(ValueError, match="n_points"):
        PopulationSpace(0, 2)
    with pytest.raises(ValueError, match="dim"):
        PopulationSpace(3, 1.5)
    with pytest.raises(ValueError, match="u must have shape"):
        PopulationSpace(3, 2).proj_tangent(torch.zeros(3, 2), torch.zeros(2, 3))


def test_divergence_of_a_linear_field_is_its_trace():
    """q -> q M (the same linear map on every point) has divergence n trace(M) in any basis."""
    space = PopulationSpace(4, 3)
    m = torch.randn(3, 3, generator=torch.Generator().manual_seed(17), dtype=F64)
    x = clouds(5, 4, 3, seed=18)
    w, div = space.divergence(lambda q: q @ m, x)
    torch.testing.assert_close(w, x @ m, atol=1e-14, rtol=0)
    torch.testing.assert_close(div, torch.full((5,), 4 * m.trace().item(), dtype=F64), atol=1e-12, rtol=0)
