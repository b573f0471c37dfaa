"""The population toolkit (padding, sampling, OT matching, McCann interpolation) against
scipy's LP and assignment solvers, brute force over permutations and padding invariance.

``scatter_padding`` (clouds at random positions among NaN padding) is reused by
test_population_distances.py.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.optimize import linear_sum_assignment, linprog

from flowsci.population import (
    assignment,
    barycentric_targets,
    gather_points,
    masked_mean,
    match_populations,
    mccann_interpolation,
    ot_plan,
    pad_populations,
    population_sizes,
    population_wasserstein,
    sample_indices,
    unpad,
)

F64 = torch.float64


def clouds_of(sizes, d: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=F64) for n in sizes]


def scatter_padding(clouds: list[torch.Tensor], n_total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n_total, d) with each cloud at random positions (in stored order) and NaN elsewhere."""
    g = torch.Generator().manual_seed(seed)
    points = torch.full((len(clouds), n_total, clouds[0].shape[1]), float("nan"), dtype=clouds[0].dtype)
    mask = torch.zeros(len(clouds), n_total, dtype=torch.bool)
    for b, cloud in enumerate(clouds):
        positions = torch.randperm(n_total, generator=g)[:cloud.shape[0]].sort().values
        points[b, positions] = cloud
        mask[b, positions] = True
    return points, mask


def lp_transport(cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The optimal transport cost by scipy's LP solver (HiGHS) on the marginal constraints."""
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))   # sum_j P_ij = a_i
    cols = np.kron(np.ones((1, n)), np.eye(m))   # sum_i P_ij = b_j
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method="highs")
    assert res.status == 0
    return res.fun


# --- batch -------------------------------------------------------------------------------

def test_pad_unpad_round_trip():
    clouds = clouds_of([3, 5, 1], 2, seed=0)
    points, mask = pad_populations(clouds)
    assert points.shape == (3, 5, 2) and mask.shape == (3, 5) and mask.dtype == torch.bool
    assert population_sizes(mask).tolist() == [3, 5, 1]
    assert (points[~mask] == 0).all()
    for got, want in zip(unpad(points, mask), clouds):
        assert torch.equal(got, want)
    points, mask = pad_populations(clouds, n_max=8)
    assert points.shape == (3, 8, 2)
    for got, want in zip(unpad(points, mask), clouds):
        assert torch.equal(got, want)
    assert [p.shape for p in unpad(points, None)] == [(8, 2)] * 3


@pytest.mark.parametrize("clouds, n_max, match", [
    ([], None, "clouds is empty"),
    ([torch.zeros(3, 2), torch.zeros(4, 3)], None, "share the point dimension"),
    ([torch.zeros(3, 2), torch.zeros(5, 2)], 4, "n_max"),
    ([torch.zeros(3)], None, r"clouds\[0\]"),
    ([torch.zeros(0, 2)], None, r"clouds\[0\]"),
])
def test_pad_populations_rejects(clouds, n_max, match):
    with pytest.raises(ValueError, match=match):
        pad_populations(clouds, n_max)


def test_masked_mean_matches_manual_mean():
    clouds = clouds_of([4, 1, 6], 6, seed=1)
    values, mask = scatter_padding(clouds, 11, seed=2)
    values = values.reshape(3, 11, 3, 2)
    want = torch.stack([c.reshape(-1, 3, 2).mean(0) for c in clouds])
    torch.testing.assert_close(masked_mean(values, mask), want, atol=1e-14, rtol=0)
    full = torch.randn(2, 5, 3, dtype=F64)
    torch.testing.assert_close(masked_mean(full, None), full.sum(1) / 5, atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="no valid point"):
        masked_mean(values, torch.zeros(3, 11, dtype=torch.bool))


def test_sample_indices_is_padding_invariant_and_uniform():
    clouds = clouds_of([4, 7, 1], 3, seed=3)
    packed, packed_mask = pad_populations(clouds)
    wide, wide_mask = pad_populations(clouds, n_max=14)
    scattered, scattered_mask = scatter_padding(clouds, 14, seed=4)
    picks = []
    for points, mask in [(packed, packed_mask), (wide, wide_mask), (scattered, scattered_mask)]:
        index = sample_indices(mask, 500, generator=torch.Generator().manual_seed(5))
        assert index.shape == (3, 500) and index.dtype == torch.long
        assert torch.gather(mask, 1, index).all()   # never a padded position
        picks.append(gather_points(points, index))
    torch.testing.assert_close(picks[1], picks[0], atol=0, rtol=0)
    torch.testing.assert_close(picks[2], picks[0], atol=0, rtol=0)

    # mask=None picks what an all-True mask picks
    full = clouds_of([6, 6], 2, seed=6)
    stacked = torch.stack(full)
    none = sample_indices(None, 50, n_points=6, generator=torch.Generator().manual_seed(7), batch_size=2)
    all_true = sample_indices(torch.ones(2, 6, dtype=torch.bool), 50,
                              generator=torch.Generator().manual_seed(7))
    assert torch.equal(none, all_true)
    assert gather_points(stacked, none).shape == (2, 50, 2)

    # uniform over the valid points: chi-square goodness of fit on 20000 draws
    index = sample_indices(scattered_mask, 20_000, generator=torch.Generator().manual_seed(8))
    for b, n in enumerate([4, 7, 1]):
        counts = torch.bincount(index[b], minlength=14)[scattered_mask[b]].numpy()
        assert counts.sum() == 20_000
        if n > 1:
            assert scipy.stats.chisquare(counts).pvalue > 1e-3


def test_sample_indices_rejects():
    with pytest.raises(ValueError, match="n_points"):
        sample_indices(None, 3)
    with pytest.raises(ValueError, match="batch_size"):
        sample_indices(None, 3, n_points=4)
    with pytest.raises(ValueError, match="m must be"):
        sample_indices(torch.ones(2, 3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="bool tensor"):
        sample_indices(torch.ones(2, 3), 4)


# --- OT plans ----------------------------------------------------------------------------

def test_exact_plan_is_the_lp_optimum_with_the_right_marginals():
    g = torch.Generator().manual_seed(10)
    x, y = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)
    a, b = torch.rand(5, generator=g, dtype=F64) + 0.1, torch.rand(7, generator=g, dtype=F64) + 0.1
    plan = ot_plan(x, y, 3 * a, b, method="exact")   # weights are normalised
    assert plan.shape == (5, 7) and plan.dtype == F64 and (plan >= 0).all()
    a, b = (a / a.sum()).numpy(), (b / b.sum()).numpy()
    np.testing.assert_allclose(plan.sum(1).numpy(), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0).numpy(), b, atol=1e-12)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1).numpy()
    assert abs((plan.numpy() * cost).sum() - lp_transport(cost, a, b)) < 1e-9
    # uniform default
    uniform = ot_plan(x, y)
    np.testing.assert_allclose(uniform.sum(1).numpy(), np.full(5, 0.2), atol=1e-12)
    np.testing.assert_allclose(uniform.sum(0).numpy(), np.full(7, 1 / 7), atol=1e-12)


def test_exact_plan_between_equal_uniform_sets_is_the_assignment_permutation():
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(9, 2, generator=g, dtype=F64), torch.randn(9, 2, generator=g, dtype=F64)
    plan = ot_plan(x, y, method="exact") * 9
    ones = plan.round()   # n times a permutation plan is a 0/1 matrix with one 1 per row and column
    torch.testing.assert_close(plan, ones, atol=1e-12, rtol=0)
    assert ((ones == 0) | (ones == 1)).all() and (ones.sum(0) == 1).all() and (ones.sum(1) == 1).all()
    cost = ((x[:, None] - y[None]) ** 2).sum(-1).numpy()
    _, cols = linear_sum_assignment(cost)
    assert plan.argmax(1).tolist() == cols.tolist()
    torch.testing.assert_close(barycentric_targets(y, plan / 9), y[cols], atol=1e-14, rtol=0)


def test_sinkhorn_plan_is_close_to_the_exact_one():
    g = torch.Generator().manual_seed(12)
    x, y = torch.randn(20, 2, generator=g, dtype=F64), torch.randn(30, 2, generator=g, dtype=F64) + 1
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    exact = (ot_plan(x, y, method="exact") * cost).sum()
    reg = 0.005
    plan = ot_plan(x, y, method="sinkhorn", reg=reg, max_iter=20_000)
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(20, 1 / 20), atol=1e-6)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(30, 1 / 30), atol=1e-6)
    entropic = (plan * cost).sum()
    # <C, P_eps> - <C, P*> <= eps (H(P_eps) - H(P*)) <= eps log(n m), eps = reg max C
    assert exact - 1e-9 <= entropic <= exact + reg * cost.max() * math.log(20 * 30)
    assert entropic - exact < 0.02 * exact   # and in practice much closer
    # auto: exact up to max_exact points, sinkhorn beyond
    torch.testing.assert_close(ot_plan(x, y, max_exact=30), ot_plan(x, y, method="exact"), atol=0, rtol=0)
    torch.testing.assert_close(ot_plan(x, y, reg=0.05, max_exact=29),
                               ot_plan(x, y, method="sinkhorn", reg=0.05), atol=0, rtol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "emd"}, "method must be one of"),
    ({"reg": 0.0}, "reg must be"),
    ({"max_exact": 0}, "max_exact"),
    ({"a": torch.tensor([1.0, -1.0, 1.0])}, "a must be"),
    ({"b": torch.ones(3)}, "b must be"),
])
def test_ot_plan_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ot_plan(torch.randn(3, 2), torch.randn(4, 2), **kwargs)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_assignment_is_optimal_by_brute_force(n):
    g = torch.Generator().manual_seed(20 + n)
    x, y = torch.randn(3, n, 2, generator=g, dtype=F64), torch.randn(3, n, 2, generator=g, dtype=F64)
    perm = assignment(x, y)
    assert perm.shape == (3, n) and perm.dtype == torch.long
    for b in range(3):
        assert sorted(perm[b].tolist()) == list(range(n))
        best = min(sum(float(((x[b, i] - y[b, s[i]]) ** 2).sum()) for i in range(n))
                   for s in itertools.permutations(range(n)))
        got = float(((x[b] - y[b, perm[b]]) ** 2).sum())
        assert abs(got - best) < 1e-12


def test_assignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        assignment(torch.randn(2, 3, 2), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match=r"\(B, N, d\)"):
        assignment(torch.randn(3, 2), torch.randn(3, 2))


# --- matching populations ----------------------------------------------------------------

def test_match_populations_equal_sizes_is_the_optimal_permutation():
    x0, x1 = torch.stack(clouds_of([8, 8], 2, seed=30)), torch.stack(clouds_of([8, 8], 2, seed=31)) + 2
    matched = match_populations(x0, x1)
    for b in range(2):
        cost = ((x0[b, :, None] - x1[b, None]) ** 2).sum(-1).numpy()
        _, cols = linear_sum_assignment(cost)
        torch.testing.assert_close(matched[b], x1[b, cols], atol=1e-14, rtol=0)


def test_match_populations_unequal_sizes_and_padding_invariance():
    sources, targets = clouds_of([5, 9, 1], 2, seed=32), clouds_of([7, 3, 4], 2, seed=33)
    x0, m0 = pad_populations(sources)
    x1, m1 = pad_populations(targets)
    matched = match_populations(x0, x1, m0, m1)
    for b, tgt in enumerate(targets):
        got = matched[b][m0[b]]
        # the plan's column marginal is uniform: the matched targets average to y's mean
        torch.testing.assert_close(got.mean(0), tgt.mean(0), atol=1e-12, rtol=0)
        # each target is a convex combination of y: inside its bounding box
        assert (got >= tgt.min(0).values - 1e-12).all() and (got <= tgt.max(0).values + 1e-12).all()
    assert torch.equal(matched[~m0], x0[~m0])   # padded rows: zero displacement

    s0, sm0 = scatter_padding(sources, 18, seed=34)
    s1, sm1 = scatter_padding(targets, 14, seed=35)
    scattered = match_populations(s0, s1, sm0, sm1)
    for b in range(3):
        torch.testing.assert_close(scattered[b][sm0[b]], matched[b][m0[b]], atol=1e-14, rtol=0)
    torch.testing.assert_close(scattered[~sm0], s0[~sm0], equal_nan=True, atol=0, rtol=0)


def test_mccann_interpolation_is_a_constant_speed_w2_geodesic():
    """W2(p_s, p_t) = |t - s| W2(p_0, p_1), with W2 from an independent exact LP."""
    x0 = torch.stack(clouds_of([10, 10], 2, seed=40))
    x1 = torch.stack(clouds_of([10, 10], 2, seed=41)) * 0.5 + torch.tensor([3.0, -1.0], dtype=F64)
    matched = match_populations(x0, x1)
    total = population_wasserstein(x0, x1)
    assert (total > 1).all()
    # endpoints: p_0 = x0, p_1 is x1 (as a measure)
    torch.testing.assert_close(mccann_interpolation(x0, matched, 0.0), x0, atol=0, rtol=0)
    assert population_wasserstein(mccann_interpolation(x0, matched, 1.0), x1).max() < 1e-7
    for s, t in [(0.0, 0.3), (0.2, 0.9), (0.5, 0.6), (0.1, 1.0)]:
        ps, pt = mccann_interpolation(x0, matched, s), mccann_interpolation(x0, matched, t)
        torch.testing.assert_close(population_wasserstein(ps, pt), abs(t - s) * total, atol=1e-7, rtol=1e-7)
    # one t per population
    t = torch.tensor([0.25, 0.75], dtype=F64)
    pt = mccann_interpolation(x0, matched, t)
    torch.testing.assert_close(population_wasserstein(x0, pt), t * total, atol=1e-7, rtol=1e-7)
    with pytest.raises(ValueError, match="t must be"):
        mccann_interpolation(x0, matched, torch.tensor([0.5]))
