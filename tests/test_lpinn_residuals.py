"""PINN residuals, models and the Lagrangian -> Eulerian map of the LPINN domain.

Oracles: exact solutions (zero residual), a manufactured characteristic map with a closed-form
residual, central finite differences, and exact periodicity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.lpinn.evaluation import error_metrics, lagrangian_to_eulerian, predict_eulerian
from flowsci_domains.lpinn.models import EulerianPINN, LagrangianPINN
from flowsci_domains.lpinn.problems import Problem
from flowsci_domains.lpinn.residuals import eulerian_residual, lagrangian_residuals


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """The residual oracles hold to 1e-10 in double precision."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def points(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * 2 * math.pi, torch.rand(n, generator=g)


@pytest.mark.parametrize("beta", [1.0, 30.0, 80.0])
def test_exact_lagrangian_convection_has_zero_residual(beta: float) -> None:
    xi, t = points()
    r_x, r_u, x, u = lagrangian_residuals(lambda a, s: (a + beta * s, torch.sin(a)), xi, t,
                                          Problem("convection", beta=beta))
    assert r_x.abs().max() < 1e-12 and r_u.abs().max() < 1e-12
    torch.testing.assert_close(x, xi + beta * t)


@pytest.mark.parametrize("diffusion", ["chain_rule", "label"])
def test_exact_lagrangian_convection_diffusion_has_zero_residual(diffusion: str) -> None:
    beta, nu = 20.0, 0.1
    xi, t = points()
    exact = lambda a, s: (a + beta * s, torch.exp(-nu * s) * torch.sin(a))  # noqa: E731
    r_x, r_u, _, _ = lagrangian_residuals(exact, xi, t, Problem("convection_diffusion", beta=beta, nu=nu),
                                          diffusion)
    assert r_x.abs().max() < 1e-12 and r_u.abs().max() < 1e-12


def test_chain_rule_diffusion_on_a_deforming_map() -> None:
    """x = ξ + 0.3 t sin ξ (monotone), u = cos x: u_xx = −cos x exactly, u_t|ξ = −0.3 sin ξ sin x."""
    nu, xi, t = 0.2, *points()
    fn = lambda a, s: (a + 0.3 * s * torch.sin(a), torch.cos(a + 0.3 * s * torch.sin(a)))  # noqa: E731
    problem = Problem("convection_diffusion", beta=0.0, nu=nu)
    _, r_u, x, _ = lagrangian_residuals(fn, xi, t, problem, "chain_rule")
    torch.testing.assert_close(r_u, -0.3 * torch.sin(xi) * torch.sin(x) + nu * torch.cos(x))
    _, r_label, _, _ = lagrangian_residuals(fn, xi, t, problem, "label")
    assert (r_label - r_u).abs().max() > 1e-2  # the authors' ∂²/∂ξ² is only exact for translations


def test_burgers_characteristic_speed_is_u() -> None:
    xi, t = points()
    r_x, _, _, u = lagrangian_residuals(lambda a, s: (a + torch.sin(a) * s, torch.sin(a)), xi, t,
                                        Problem("burgers"))
    assert r_x.abs().max() < 1e-12  # x_t = sin ξ = u


@pytest.mark.parametrize("beta", [1.0, 40.0])
def test_exact_eulerian_convection_has_zero_residual(beta: float) -> None:
    x, t = points()
    residual, _ = eulerian_residual(lambda a, s: torch.sin(a - beta * s), x, t,
                                    Problem("convection", beta=beta))
    assert residual.abs().max() < 1e-10


def test_eulerian_burgers_residual_against_finite_differences() -> None:
    nu, x, t = 0.05, *points(50)
    fn = lambda a, s: torch.exp(-s) * torch.sin(a) + 0.3 * torch.cos(2 * a + s)  # noqa: E731
    residual, _ = eulerian_residual(fn, x, t, Problem("burgers", nu=nu))
    h = 1e-4
    u = fn(x, t)
    u_t = (fn(x, t + h) - fn(x, t - h)) / (2 * h)
    u_x = (fn(x + h, t) - fn(x - h, t)) / (2 * h)
    u_xx = (fn(x + h, t) - 2 * u + fn(x - h, t)) / h**2
    torch.testing.assert_close(residual, u_t + u * u_x - nu * u_xx, atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [lambda: EulerianPINN(width=16, depth=3),
                                  lambda: LagrangianPINN(width=16, u_depth=3, x_depth=2, speed_scale=30.0),
                                  lambda: LagrangianPINN(width=16, u_depth=3, x_depth=2,
                                                         shared_weights=True)],
                         ids=["pinn", "lpinn", "lpinn-shared"])
def test_periodic_embedding_is_exact(make) -> None:
    model = make()
    t = torch.linspace(0, 1, 7)
    zero, two_pi = torch.zeros(7), torch.full((7,), 2 * math.pi)
    out_0, out_2pi = model(zero, t), model(two_pi, t)
    if model.formulation == "lagrangian":  # u periodic; x − ξ periodic
        assert torch.equal(out_0[1], out_2pi[1])
        assert torch.equal(out_0[0] - zero, out_2pi[0] - two_pi) or \
            (out_0[0] - zero - (out_2pi[0] - two_pi)).abs().max() < 1e-12
    else:
        assert torch.equal(out_0, out_2pi)


def test_shared_weights_variant_shares_layers() -> None:
    separate = LagrangianPINN(width=16, u_depth=3, x_depth=2)
    shared = LagrangianPINN(width=16, u_depth=3, x_depth=2, shared_weights=True)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(separate) - n(shared) == (3 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    with pytest.raises(ValueError, match="x_depth"):
        LagrangianPINN(u_depth=2, x_depth=3, shared_weights=True)


def test_exact_labels_make_the_initial_position_the_label_for_any_weights() -> None:
    torch.manual_seed(0)
    xi, zero = torch.rand(64) * 2 * math.pi, torch.zeros(64)
    exact = LagrangianPINN(width=16, u_depth=2, x_depth=2, speed_scale=30.0)
    soft = LagrangianPINN(width=16, u_depth=2, x_depth=2, speed_scale=30.0, exact_labels=False)
    assert torch.equal(exact(xi, zero)[0], xi)
    assert (soft(xi, zero)[0] - xi).abs().max() > 1e-3  # left to the initial-condition loss


def test_lagrangian_to_eulerian_recovers_the_convected_wave() -> None:
    beta, n = 30.0, 512
    labels, t = np.arange(n) * 2 * np.pi / n, np.linspace(0, 1, 9)
    x = labels[:, None] + beta * t[None]
    u = np.repeat(np.sin(labels)[:, None], len(t), axis=1)
    grid_x = np.arange(256) * 2 * np.pi / 256
    mapped = lagrangian_to_eulerian(x, u, grid_x)
    exact = np.sin(grid_x[:, None] - beta * t[None])
    assert np.abs(mapped - exact).max() < (2 * np.pi / n) ** 2 / 8 + 1e-12  # linear interpolation bound


def test_predict_eulerian_of_an_exact_lpinn() -> None:
    class Exact(torch.nn.Module):
        formulation = "lagrangian"

        def forward(self, xi: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return xi + 30.0 * t, torch.sin(xi)

    grid_x, grid_t = np.arange(128) * 2 * np.pi / 128, np.linspace(0, 1, 5)
    predicted = predict_eulerian(Exact(), grid_x, grid_t, label_refinement=4)
    metrics = error_metrics(predicted["u"], np.sin(grid_x[:, None] - 30 * grid_t[None]))
    assert metrics["rel_l2"] < 1e-3 and predicted["x_labels"].shape == (512, 5)


def test_error_metrics_measure_against_the_fluctuation() -> None:
    reference = 50.0 + np.sin(np.linspace(0, 6, 100))[:, None]
    metrics = error_metrics(reference + 0.01, reference, offset=50.0)
    assert metrics["linf"] == pytest.approx(0.01)
    assert metrics["rel_l2"] == pytest.approx(0.01 * 10 / np.linalg.norm(reference - 50.0), rel=1e-6)
