"""Population distances against scipy's LP solver, closed forms (sorted samples in 1-D,
translations, point masses, Szekely's CDF formula), a plain numpy double loop, scipy's
pearsonr, and padding invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from test_population_toolkit import clouds_of, lp_transport, scatter_padding

from flowsci.population import (
    MFM_GAMMAS,
    feature_correlation_r,
    pad_populations,
    population_energy_distance,
    population_mmd,
    population_wasserstein,
)

F64 = torch.float64


def batch(clouds: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(clouds)


# --- Wasserstein -------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_matches_the_lp(p):
    x, y = batch(clouds_of([4, 4], 2, seed=0)), batch(clouds_of([6, 6], 2, seed=1))
    got = population_wasserstein(x, y, p=p)
    assert got.shape == (2,) and got.dtype == F64
    for b in range(2):
        cost = np.linalg.norm(x[b, :, None].numpy() - y[b, None].numpy(), axis=-1) ** p
        want = lp_transport(cost, np.full(4, 1 / 4), np.full(6, 1 / 6)) ** (1 / p)
        assert abs(got[b].item() - want) < 1e-9


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_in_1d_is_the_sorted_sample_formula(p):
    x, y = batch(clouds_of([50, 50], 1, seed=2)), batch(clouds_of([50, 50], 1, seed=3)) * 2 + 0.5
    want = (x.sort(1).values - y.sort(1).values).abs().pow(p).mean((1, 2)) ** (1 / p)
    torch.testing.assert_close(population_wasserstein(x, y, p=p), want, atol=1e-10, rtol=0)


def test_wasserstein_to_a_translate_is_the_shift_length():
    x = batch(clouds_of([40, 40], 3, seed=4))
    c = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.1, 0.0]], dtype=F64)
    for p in (1, 2):
        torch.testing.assert_close(population_wasserstein(x, x + c[:, None], p=p), c.norm(dim=1),
                                   atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="p must be"):
        population_wasserstein(x, x, p=0)


# --- MMD ---------------------------------------------------------------------------------

def mmd_by_loops(x: np.ndarray, y: np.ndarray, gammas) -> float:
    """The biased MMD^2 V-statistic written as plain loops over all pairs, then its root."""
    def k(a, b):
        return sum(math.exp(-g * float(np.sum((a - b) ** 2))) for g in gammas) / len(gammas)
    kxx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    kyy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return math.sqrt(max(kxx + kyy - 2 * kxy, 0.0))


def test_mmd_matches_a_double_loop():
    x, y = batch(clouds_of([5, 5], 3, seed=5)), batch(clouds_of([4, 4], 3, seed=6)) + 0.3
    for gammas in (MFM_GAMMAS, (0.7,)):
        got = population_mmd(x, y, gammas=gammas)
        for b in range(2):
            assert abs(got[b].item() - mmd_by_loops(x[b].numpy(), y[b].numpy(), gammas)) < 1e-12


def test_mmd_is_zero_on_identical_sets_symmetric_and_positive_otherwise():
    x, y = batch(clouds_of([30, 30], 2, seed=7)), batch(clouds_of([20, 20], 2, seed=8)) + 1
    assert (population_mmd(x, x) == 0).all()
    torch.testing.assert_close(population_mmd(x, y), population_mmd(y, x), atol=1e-15, rtol=0)
    assert (population_mmd(x, y) > 0.1).all()
    # a permuted copy is the same measure
    assert population_mmd(x, x[:, torch.randperm(30)]).max() < 1e-7
    with pytest.raises(ValueError, match="gammas"):
        population_mmd(x, y, gammas=(1.0, -1.0))


# --- energy distance ---------------------------------------------------------------------

def energy_1d_from_cdfs(x: np.ndarray, y: np.ndarray) -> float:
    """Szekely: in 1-D the energy distance is 2 * integral (F_x - F_y)^2 over the line."""
    grid = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), grid[:-1], side="right") / len(x)
    fy = np.searchsorted(np.sort(y), grid[:-1], side="right") / len(y)
    return 2 * float(np.sum((fx - fy) ** 2 * np.diff(grid)))


def test_energy_distance_closed_forms():
    # two point masses: 2 |a - b|
    a, b = torch.tensor([[[1.0, 2.0, -1.0]]], dtype=F64), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64)
    torch.testing.assert_close(population_energy_distance(a, b), 2 * (a - b).norm(dim=-1).flatten(),
                               atol=1e-14, rtol=0)
    # 1-D: twice the integrated squared difference of the empirical CDFs
    x, y = batch(clouds_of([13, 13], 1, seed=9)), batch(clouds_of([8, 8], 1, seed=10)) * 1.5
    got = population_energy_distance(x, y)
    for i in range(2):
        assert abs(got[i].item() - energy_1d_from_cdfs(x[i, :, 0].numpy(), y[i, :, 0].numpy())) < 1e-12


def test_energy_distance_is_nonnegative_and_zero_on_identical_sets():
    x, y = batch(clouds_of([25] * 4, 3, seed=11)), batch(clouds_of([15] * 4, 3, seed=12))
    assert (population_energy_distance(x, y) > 0).all()
    assert (population_energy_distance(x, x) == 0).all()
    torch.testing.assert_close(population_energy_distance(x, y), population_energy_distance(y, x),
                               atol=1e-14, rtol=0)


# --- padding invariance ------------------------------------------------------------------

@pytest.mark.parametrize("distance", [
    lambda *a: population_wasserstein(*a, p=1),
    lambda *a: population_wasserstein(*a, p=2),
    population_mmd,
    population_energy_distance,
], ids=["w1", "w2", "mmd", "energy"])
def test_distances_are_padding_invariant(distance):
    xs, ys = clouds_of([6, 1, 9], 2, seed=13), clouds_of([4, 7, 2], 2, seed=14)
    px, pmx = pad_populations(xs)
    py, pmy = pad_populations(ys)
    packed = distance(px, py, pmx, pmy)
    sx, smx = scatter_padding(xs, 18, seed=15)
    sy, smy = scatter_padding(ys, 14, seed=16)
    scattered = distance(sx, sy, smx, smy)
    torch.testing.assert_close(scattered, packed, atol=0, rtol=0)
    # and equal to each population on its own, unpadded
    alone = torch.cat([distance(x[None], y[None]) for x, y in zip(xs, ys)])
    torch.testing.assert_close(packed, alone, atol=0, rtol=0)


# --- feature correlation r ---------------------------------------------------------------

def test_feature_correlation_r_is_one_under_feature_rescaling():
    g = torch.Generator().manual_seed(17)
    x = torch.randn(200, 5, generator=g, dtype=F64) @ torch.randn(5, 5, generator=g, dtype=F64)
    y = x * torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0], dtype=F64) + torch.randn(5, generator=g, dtype=F64)
    assert abs(feature_correlation_r(x, y) - 1) < 1e-12


def test_feature_correlation_r_matches_scipy_pearsonr():
    g = torch.Generator().manual_seed(18)
    mixing = torch.randn(6, 6, generator=g, dtype=F64)
    x = torch.randn(300, 6, generator=g, dtype=F64) @ mixing
    y = (torch.randn(150, 6, generator=g, dtype=F64)
         @ (mixing + 0.8 * torch.randn(6, 6, generator=g, dtype=F64)))
    rows, cols = np.triu_indices(6, k=1)
    want = scipy.stats.pearsonr(np.corrcoef(x.numpy(), rowvar=False)[rows, cols],
                                np.corrcoef(y.numpy(), rowvar=False)[rows, cols]).statistic
    got = feature_correlation_r(x, y)
    assert abs(got - want) < 1e-12
    assert 0 < got < 1


def test_feature_correlation_r_is_r_not_r_squared():
    """x = (z1 + z2, z1, z2) has pair correlations ~(0.71, 0.71, 0); negating the first
    feature negates the first two, so the two vectors are anti-correlated: r ~ -1 (r^2 ~ +1)."""
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(19), dtype=F64)
    x = torch.stack([z[:, 0] + z[:, 1], z[:, 0], z[:, 1]], 1)
    y = x * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    assert feature_correlation_r(x, y) < -0.99


def test_feature_correlation_r_rejects():
    with pytest.raises(ValueError, match="d >= 3"):
        feature_correlation_r(torch.randn(20, 2), torch.randn(20, 2))
    x = torch.randn(20, 4)
    x[:, 2] = 1.0
    with pytest.raises(ValueError, match="constant feature"):
        feature_correlation_r(x, torch.randn(20, 4))
    with pytest.raises(ValueError, match="same number of features"):
        feature_correlation_r(torch.randn(20, 4), torch.randn(20, 3))
