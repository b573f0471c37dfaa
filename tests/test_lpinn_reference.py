"""The reference solvers of the LPINN domain against closed forms and independent methods."""

from __future__ import annotations

import numpy as np
import pytest

from flowsci_domains.lpinn.problems import Problem
from flowsci_domains.lpinn.reference import (
    burgers_cole_hopf_sine,
    burgers_spectral,
    convection_diffusion_exact,
    grid,
    reference_solution,
)


def test_grid_is_periodic_without_endpoint() -> None:
    x, t = grid(8, 5, 2.0)
    assert x[0] == 0 and np.isclose(x[-1] + x[1], 2 * np.pi) and t[0] == 0 and t[-1] == 2.0


@pytest.mark.parametrize("beta, nu", [(30.0, 0.0), (7.0, 0.05)])
def test_convection_diffusion_matches_closed_form(beta: float, nu: float) -> None:
    x, t = grid(64, 11)
    u = convection_diffusion_exact(np.sin(x), beta, nu, t)
    exact = np.exp(-nu * t)[None] * np.sin(x[:, None] - beta * t[None])
    np.testing.assert_allclose(u, exact, atol=1e-12)


def test_spectral_burgers_matches_cole_hopf() -> None:
    """u0 = sin x, nu = 0.01 up to the steepest time t = 1, on the 256-point evaluation grid."""
    x, t = grid(256, 21)
    spectral = burgers_spectral(np.sin(np.arange(1024) * 2 * np.pi / 1024), 0.01, t)[::4]
    exact = burgers_cole_hopf_sine(x, t, 0.01)
    assert np.abs(spectral - exact).max() < 1e-4
    assert np.abs(np.diff(exact[:, -1])).max() > 0.1  # a steep front: the test is not trivial


@pytest.mark.parametrize("offset", [10.0, 50.0])
def test_burgers_with_offset_converges_under_refinement(offset: float) -> None:
    problem = Problem("burgers", nu=0.01, offset=offset)
    coarse = reference_solution(problem, 128, 11, n_modes=512)
    fine = reference_solution(problem, 128, 11, n_modes=1024)
    assert np.abs(coarse - fine).max() < 1e-4
    # the mean of u is conserved (= C); on the subsampled grid up to the front's sampling error
    np.testing.assert_allclose(fine.mean(axis=0), offset, atol=1e-5)


def test_galilean_shift_matches_cole_hopf_in_moving_frame() -> None:
    """u(x, t) = C + v(x − C t, t) with v the C = 0 solution: checked against Cole–Hopf at x − C t."""
    offset, x, t = 3.0, *grid(256, 6)
    u = reference_solution(Problem("burgers", nu=0.05, offset=offset), 256, 6, n_modes=512)
    for j, tj in enumerate(t):
        shifted = np.mod(x - offset * tj, 2 * np.pi)
        exact = burgers_cole_hopf_sine(shifted, np.array([tj]), 0.05)[:, 0]
        assert np.abs(u[:, j] - offset - exact).max() < 1e-6


def test_reference_rejects_modes_not_multiple_of_grid() -> None:
    with pytest.raises(ValueError, match="multiple"):
        reference_solution(Problem("burgers"), 100, 5, n_modes=256)
