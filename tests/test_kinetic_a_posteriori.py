"""A-posteriori tools: window statistics and their comparison against hand-computed values, the
unrolled loss (zero for the reference closure itself, quadratic in a small perturbation of it) and
fine-tuning that recovers a perturbed Bingham-like closure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.kinetic.a_posteriori import (
    compare_statistics,
    fine_tune,
    simulate,
    unroll_targets,
    unrolled_loss,
    window_statistics,
)
from flowsci_domains.kinetic.active_suspension import ActiveSuspensionParams
from flowsci_domains.kinetic.closures import make_closure
from flowsci_domains.kinetic.learned import LearnedClosure2D

PARAMS = ActiveSuspensionParams(n=16, alpha=-4.0, zeta=1.0, d_r=0.25)


@pytest.fixture(scope="module")
def targets():
    return unroll_targets(make_closure("bingham2d", tol=0.05), PARAMS, seed=0, n_starts=4, start_every=40,
                          n_unroll=10, skip=200)


def test_window_statistics_and_comparison_by_hand():
    series = {"time": np.array([0.0, 1.0, 2.0, 3.0]), "mean_speed": np.array([9.0, 1.0, 2.0, 3.0]),
              "order_parameter": np.array([9.0, 0.2, 0.4, 0.6]),
              "spectrum": np.array([[0.0, 9.0, 9.0, 9.0], [0.0, 1.0, 2.0, 4.0], [0.0, 3.0, 2.0, 4.0],
                                    [0.0, 2.0, 2.0, 4.0]]),
              "wavenumber": np.array([0.0, 1.0, 2.0, 3.0])}
    stats = window_statistics(series, start_time=1.0)
    assert stats["mean_speed"] == pytest.approx(2.0) and stats["order_parameter"] == pytest.approx(0.4)
    np.testing.assert_allclose(stats["spectrum"], [0.0, 2.0, 2.0, 4.0])
    reference = {"mean_speed": 2.5, "order_parameter": 0.5, "wavenumber": stats["wavenumber"],
                 "spectrum": np.array([0.0, 1.0, 3.0, 100.0])}
    # n = 16, L = 2π·16/(3·2.5): k_max/3 = π n/L/3 = 2.5, so only the shells k = 1, 2 count
    out = compare_statistics(stats, reference, n=16, length=2 * math.pi * 16 / 7.5)
    assert out["mean_speed"] == pytest.approx(0.2) and out["order_parameter"] == pytest.approx(0.2)
    assert out["spectrum"] == pytest.approx(2.0)          # max(2/1, 3/2)


def test_simulate_records_the_run_and_stops_at_a_failure():
    series = simulate(make_closure("quadratic"), PARAMS, seed=1, n_steps=20, record_every=10)
    assert series["time"].tolist() == pytest.approx([0.0, 0.05, 0.1])
    assert series["steps"] == 20 and series["error"] is None
    assert series["spectrum"].shape == (3, len(series["wavenumber"]))

    def failing(D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(E.abs().max()) > 0.02:                   # the strain of the growing instability
            raise ValueError("strain out of range")
        return make_closure("bingham2d")(D, E)

    series = simulate(failing, PARAMS, seed=1, n_steps=400, record_every=10)
    assert 0 < series["steps"] < 400 and "strain out of range" in series["error"]
    assert len(series["time"]) == series["steps"] // 10 + 1


def test_unrolled_loss_is_zero_for_the_reference_and_quadratic_in_a_perturbation(targets):
    bingham = make_closure("bingham2d", tol=0.05)
    assert float(unrolled_loss(bingham, PARAMS, targets)) == 0.0

    def perturbed(eps: float):
        def closure(D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            SE, SD = bingham(D, E)
            return (1 + eps) * SE, SD
        return closure

    small, double = (float(unrolled_loss(perturbed(eps), PARAMS, targets)) for eps in (1e-3, 2e-3))
    assert small > 0 and double / small == pytest.approx(4.0, rel=1e-2)   # the error is linear in eps


def test_fine_tuning_lowers_the_unrolled_loss(targets):
    torch.manual_seed(0)
    closure = LearnedClosure2D(hidden=8, depth=1, tol=0.05)
    with torch.no_grad():
        closure.net[-1].bias.fill_(0.5)                   # a wrong fourth harmonic to start from
        before = float(unrolled_loss(closure, PARAMS, targets))
    losses = fine_tune(closure, PARAMS, targets, steps=15, lr=1e-2, batch_size=2, seed=0)
    with torch.no_grad():
        after = float(unrolled_loss(closure, PARAMS, targets))
    assert len(losses) == 15 and after < 0.2 * before
    assert not closure.training


def test_bad_input_raises_clear_errors(targets):
    closure = LearnedClosure2D(hidden=4, depth=1, tol=0.05)
    with pytest.raises(ValueError, match="batch_size = 9 exceeds the 4 start states"):
        fine_tune(closure, PARAMS, targets, steps=1, lr=1e-3, batch_size=9, seed=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        fine_tune(closure, PARAMS, targets, steps=1, lr=0.0, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="no trainable parameters to fit"):
        fine_tune(make_closure("quadratic"), PARAMS, targets, steps=1, lr=1e-3, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="n_unroll must be an integer >= 1"):
        unroll_targets(make_closure("quadratic"), PARAMS, seed=0, n_starts=1, start_every=1, n_unroll=0)
