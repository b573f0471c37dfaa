"""Fréchet distance of Gaussian fits and improved precision / recall (flowsci.feature_metrics),
against closed forms and scipy's matrix square root."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from flowsci.feature_metrics import frechet_distance, gaussian_frechet_distance, precision_recall


def test_commuting_covariances_give_the_sum_of_squared_root_differences():
    mean_a, mean_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1.0 + 4.0 + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = gaussian_frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_general_covariances_match_scipys_matrix_square_root():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(5), b @ b.T
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real  # the textbook form Tr((C_a C_b)^½)
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross)
    got = gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b)
    assert got == pytest.approx(expected, rel=1e-8)
    assert gaussian_frechet_distance(mean_b, cov_b, mean_a, cov_a) == pytest.approx(got, rel=1e-8)
    assert gaussian_frechet_distance(mean_a, cov_a, mean_a, cov_a) == pytest.approx(0.0, abs=1e-9)


def test_sample_fits_converge_to_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40_000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(40_000, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5]) + 1.0
    expected = 3.0 + (1.0 + 0.0 + 0.25)  # |Δm|² + Σ (1 - σ_b)²
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_frechet_distance_rejects_bad_features():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


def test_precision_and_recall_of_overlapping_and_disjoint_sets():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(300, 4, generator=g)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0}
    # generated samples cover only half of the real distribution: precise, but half the recall
    half = real[real[:, 0] > 0]
    scores = precision_recall(real, half, k=3)
    assert scores["precision"] == 1.0 and 0.35 < scores["recall"] < 0.75
