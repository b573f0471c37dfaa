"""Ensemble scores (CRPS, spread-skill) against closed forms, the relative-L2 loss against numpy."""

import math

import numpy as np
import pytest
import torch

from flowsci.ensemble_scores import crps, spread_skill_ratio
from flowsci_domains.turbulence.objectives import relative_l2


def gaussian_crps(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form CRPS of N(mu, sigma²) at y (Gneiting & Raftery 2007)."""
    z = (y - mu) / sigma
    normal = torch.distributions.Normal(0.0, 1.0)
    return sigma * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))


@pytest.mark.parametrize("members", [2, 5, 16])
def test_fair_crps_is_unbiased_for_the_gaussian_closed_form(members):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    mu = torch.randn(n, generator=g, dtype=torch.float64)
    sigma = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64) * 1.3
    ensemble = mu + sigma * torch.randn(members, n, generator=g, dtype=torch.float64)
    expected = gaussian_crps(mu, sigma, y).mean()
    # the fair estimator has no 1/M bias, so even two members match the closed form on average
    assert float(crps(ensemble, y)) == pytest.approx(float(expected), rel=6e-3)


def test_crps_of_a_point_ensemble_is_the_absolute_error():
    truth = torch.tensor([0.0, 1.0, -2.0])
    ensemble = torch.tensor([[0.5, 1.0, 1.0], [0.5, 1.0, 1.0]])
    assert float(crps(ensemble, truth)) == pytest.approx((0.5 + 0.0 + 3.0) / 3)


def test_spread_skill_is_one_when_the_truth_is_another_member_and_flags_overconfidence():
    g = torch.Generator().manual_seed(1)
    n, members = 100_000, 8
    mu = torch.randn(n, generator=g, dtype=torch.float64) * 3
    sigma = 0.2 + torch.rand(n, generator=g, dtype=torch.float64)
    draws = mu + sigma * torch.randn(members + 1, n, generator=g, dtype=torch.float64)
    assert float(spread_skill_ratio(draws[1:], draws[0])) == pytest.approx(1.0, abs=0.01)
    overconfident = mu + 0.5 * (draws[1:] - mu)
    assert float(spread_skill_ratio(overconfident, draws[0])) < 0.6


def test_scores_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        crps(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="do not match"):
        crps(torch.zeros(4, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="at least 2"):
        spread_skill_ratio(torch.zeros(1, 3), torch.zeros(3))


def test_relative_l2_matches_numpy_per_sample():
    rng = np.random.default_rng(0)
    prediction, target = rng.normal(size=(4, 2, 5, 6)), rng.normal(size=(4, 2, 5, 6))
    expected = [np.linalg.norm(prediction[i] - target[i]) / np.linalg.norm(target[i]) for i in range(4)]
    got = relative_l2(torch.from_numpy(prediction), torch.from_numpy(target))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
