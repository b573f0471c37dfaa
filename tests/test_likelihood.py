"""Oracle tests of the flow log-likelihood (docs/design.md): closed-form Gaussian flows,
a matrix-logarithm formula for the Hutchinson estimate with a fixed probe, finite differences
and closed-form gradients."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch

from flowsci.divergence import draw_probes
from flowsci.likelihood import log_likelihood
from flowsci.registry import SOLVERS
from flowsci.solvers import (
    RK4,
    Dopri5,
    Euler,
    FixedStepSolver,
    Heun,
    Midpoint,
    Solver,
    uniform_grid,
)

F64 = torch.float64
FIXED: list[type[FixedStepSolver]] = [Euler, Midpoint, Heun, RK4]  # rf_solver2 is Midpoint


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) summed over the data dimensions: (B, *D) -> (B,)."""
    return torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)


class IsotropicGaussianFlow(torch.nn.Module):
    """The conditional OT path from N(0, I) to N(mu, s^2 I): x_t = (1 - t + t s) x0 + t mu, so
    dx_t/dt = (s - 1) x0 + mu with x0 = (x_t - t mu) / (1 - t + t s):
    v(x, t) = (s - 1)(x - t mu) / (1 - t + t s) + mu. mu: D-shaped, s: scalar parameters."""

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.mu = torch.nn.Parameter(mu.clone())
        self.s = torch.nn.Parameter(torch.tensor(s, dtype=mu.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *[1] * (x.dim() - 1))
        return (self.s - 1) * (x - t * self.mu) / (1 - t + t * self.s) + self.mu


class MatrixGaussianFlow:
    """x_t = M_t x0 + t mu with M_t = (1 - t) I + t S (S symmetric positive definite): N(0, I) at
    t = 0, N(mu, S^2) at t = 1; v(x, t) = (S - I) M_t^{-1} (x - t mu) + mu. Its Jacobian
    (S - I) M_t^{-1} is not diagonal, so Hutchinson estimates have non-zero variance."""

    def __init__(self, mu: torch.Tensor, S: torch.Tensor):
        self.mu, self.S = mu, S

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(len(self.mu), dtype=x.dtype)
        M = (1 - t)[:, None, None] * eye + t[:, None, None] * self.S
        y = torch.linalg.solve(M, (x - t[:, None] * self.mu)[..., None])[..., 0]
        return y @ (self.S - eye).T + self.mu

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.MultivariateNormal(self.mu,
                                                      covariance_matrix=self.S @ self.S.T).log_prob(x)


def _matrix_flow() -> MatrixGaussianFlow:
    S = torch.tensor([[1.6, 0.5, 0.0], [0.5, 0.9, 0.3], [0.0, 0.3, 1.3]], dtype=F64)
    return MatrixGaussianFlow(torch.tensor([0.5, -1.0, 2.0], dtype=F64), S)


# --- constant field ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver_cls", [*FIXED, Dopri5])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_constant_field(solver_cls: type[Solver], divergence: str) -> None:
    """v = a: x1 = x0 + a and the divergence vanishes, so log p1(x) = log p0(x - a)."""
    a = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.5, -0.7]], dtype=F64)
    x1 = torch.randn(5, 2, 3, dtype=F64)
    result = log_likelihood(lambda x, t: a.expand_as(x), x1, standard_normal_log_prob, solver=solver_cls(),
                            steps=4, divergence=divergence)
    torch.testing.assert_close(result.x0, x1 - a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.log_p, standard_normal_log_prob(x1 - a), rtol=1e-12, atol=1e-12)


def test_constant_field_gradient() -> None:
    """With a a parameter: d/da log N(x - a; 0, I) = x - a (the field does not depend on x)."""
    a = torch.tensor([0.3, -1.2], dtype=F64, requires_grad=True)
    x1 = torch.randn(4, 2, dtype=F64)
    result = log_likelihood(lambda x, t: a.expand_as(x), x1, standard_normal_log_prob, solver=RK4(),
                            steps=3, grad=True)
    (g,) = torch.autograd.grad(result.log_p.sum(), a)
    torch.testing.assert_close(g, (x1 - a.detach()).sum(0), rtol=1e-12, atol=1e-12)


# --- Gaussian flows ---------------------------------------------------------------------------


def test_isotropic_gaussian_flow_exact_divergence() -> None:
    """N(0, I) -> N(mu, s^2 I) on (2, 3)-shaped data: log p1 = log N(x; mu, s^2 I) to 1e-5 and
    x0 = (x1 - mu) / s."""
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.3, 0.0, -0.7]], dtype=F64)
    s = 1.7
    flow = IsotropicGaussianFlow(mu, s)
    x1 = mu + s * torch.randn(6, 2, 3, dtype=F64)
    result = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=20)
    closed = torch.distributions.Normal(mu, s).log_prob(x1).flatten(1).sum(1)
    torch.testing.assert_close(result.log_p, closed, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.x0, (x1 - mu) / s, rtol=0, atol=1e-6)
    assert not result.log_p.requires_grad


@pytest.mark.parametrize("solver", [RK4(), Midpoint(), Dopri5(rtol=1e-8, atol=1e-8)],
                         ids=["rk4", "midpoint", "dopri5"])
def test_matrix_gaussian_flow_exact_divergence(solver: Solver) -> None:
    """N(0, I) -> N(mu, S^2) with a non-diagonal S: the exact trace gives the closed form."""
    flow = _matrix_flow()
    x1 = flow.mu + torch.randn(5, 3, dtype=F64) @ flow.S
    steps = 200 if isinstance(solver, Midpoint) else 20
    result = log_likelihood(flow, x1, standard_normal_log_prob, solver=solver, steps=steps)
    torch.testing.assert_close(result.log_p, flow.log_prob(x1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_with_one_fixed_probe_matches_the_matrix_logarithm(probe: str) -> None:
    """With one probe eps held along the trajectory, the estimate is log p0(x0) - eps^T L eps with
    L = int_0^1 (S - I) M_t^{-1} dt = log S (d/dt log M_t = (S - I) M_t^{-1}; S and M_t commute)."""
    flow = _matrix_flow()
    x1 = flow.mu + torch.randn(8, 3, dtype=F64) @ flow.S
    result = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=20,
                            divergence="hutchinson", probe=probe, generator=torch.Generator().manual_seed(7))
    eps = draw_probes(1, x1, probe, torch.Generator().manual_seed(7))[0]
    log_s = torch.from_numpy(scipy.linalg.logm(flow.S.numpy()).real)
    x0 = torch.linalg.solve(flow.S, (x1 - flow.mu).T).T
    expected = standard_normal_log_prob(x0) - ((eps @ log_s) * eps).sum(1)
    torch.testing.assert_close(result.log_p, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_and_averages_over_probes(probe: str) -> None:
    """The mean over 2000 independent estimates lies within 3 standard errors of the closed form;
    averaging 4 probes divides the variance by about 4."""
    flow = _matrix_flow()
    x1 = (flow.mu + torch.tensor([0.4, -0.8, 1.1], dtype=F64)).expand(2000, 3)
    closed = float(flow.log_prob(x1[:1]))
    variances = []
    for n_probes in (1, 4):
        seeded = torch.Generator().manual_seed(n_probes)
        est = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=10,
                             divergence="hutchinson", probe=probe, n_probes=n_probes, generator=seeded).log_p
        se = float(est.std()) / math.sqrt(len(est))
        assert se > 1e-3  # a random estimate, not the exact trace
        assert abs(float(est.mean()) - closed) < 3 * se, (float(est.mean()), closed, se)
        variances.append(float(est.var()))
    assert 2.5 < variances[0] / variances[1] < 6.5, variances


def test_rademacher_is_exact_for_an_isotropic_jacobian() -> None:
    """eps^T (c I) eps = c D for every sign vector: zero variance for the isotropic flow."""
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    flow = IsotropicGaussianFlow(mu, 0.6)
    x1 = mu + 0.6 * torch.randn(4, 3, dtype=F64)
    exact = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=10)
    hutch = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=10,
                           divergence="hutchinson")
    torch.testing.assert_close(hutch.log_p, exact.log_p, rtol=0, atol=1e-12)


# --- gradients --------------------------------------------------------------------------------


def test_gradients_match_closed_form_and_finite_differences() -> None:
    """log N(x; mu, s^2 I): d/dmu = (x - mu)/s^2, d/ds = -D/s + |x - mu|^2/s^3, d/dx = -(x - mu)/s^2;
    the autograd gradient of the discretised log-likelihood also matches its central difference."""
    mu0 = torch.tensor([[0.5, -1.0], [0.3, 0.2]], dtype=F64)
    flow = IsotropicGaussianFlow(mu0, 1.4)
    x1 = (mu0 + 1.4 * torch.randn(3, 2, 2, dtype=F64)).requires_grad_(True)
    result = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=16, grad=True)
    g_mu, g_s, g_x = torch.autograd.grad(result.log_p.sum(), [flow.mu, flow.s, x1])
    r = (x1 - mu0).detach()
    s, dim = 1.4, 4
    torch.testing.assert_close(g_mu, r.sum(0) / s**2, rtol=0, atol=1e-6)
    expected_s = -len(r) * dim / s + float((r**2).sum()) / s**3  # summed over the batch
    assert float(g_s) == pytest.approx(expected_s, abs=1e-5)
    torch.testing.assert_close(g_x, -r / s**2, rtol=0, atol=1e-6)

    def total(mu: torch.Tensor) -> float:
        probe = IsotropicGaussianFlow(mu, 1.4)
        result = log_likelihood(probe, x1.detach(), standard_normal_log_prob, solver=RK4(), steps=16)
        return float(result.log_p.sum())

    eps = 1e-6
    for idx in [(0, 0), (1, 1)]:
        bump = torch.zeros_like(mu0)
        bump[idx] = eps
        fd = (total(mu0 + bump) - total(mu0 - bump)) / (2 * eps)
        assert float(g_mu[idx]) == pytest.approx(fd, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_gradient_matches_finite_differences(probe: str) -> None:
    """With the probes fixed by the seed, d/ds of the estimate equals its central difference."""
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    x1 = mu + torch.randn(4, 3, dtype=F64)

    def estimate(s: float, grad: bool) -> tuple[torch.Tensor, IsotropicGaussianFlow]:
        flow = IsotropicGaussianFlow(mu, s)
        out = log_likelihood(flow, x1, standard_normal_log_prob, solver=Heun(), steps=12,
                             divergence="hutchinson", probe=probe, n_probes=2,
                             generator=torch.Generator().manual_seed(3), grad=grad)
        return out.log_p.sum(), flow

    value, flow = estimate(1.3, True)
    (g,) = torch.autograd.grad(value, flow.s)
    assert torch.isfinite(g)
    eps = 1e-6
    fd = (float(estimate(1.3 + eps, False)[0]) - float(estimate(1.3 - eps, False)[0])) / (2 * eps)
    assert float(g) == pytest.approx(fd, rel=1e-6)


def test_no_graph_without_grad_and_works_under_no_grad() -> None:
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    flow = IsotropicGaussianFlow(mu, 1.5)
    x1 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    free = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=5)
    assert not free.log_p.requires_grad and not free.x0.requires_grad
    with torch.no_grad():
        for divergence in ("exact", "hutchinson"):
            quiet = log_likelihood(flow, x1, standard_normal_log_prob, solver=RK4(), steps=5,
                                   divergence=divergence, grad=True)
            assert not quiet.log_p.requires_grad
            torch.testing.assert_close(quiet.log_p, free.log_p, rtol=0, atol=1e-12)


# --- NFE, solver choice, grids, validation ---------------------------------------------------


@pytest.mark.parametrize("solver_cls", FIXED)
def test_nfe_is_steps_times_evaluations_per_step(solver_cls: type[FixedStepSolver]) -> None:
    calls = []

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return torch.tanh(x) * (1 + t[:, None])

    result = log_likelihood(field, torch.randn(3, 2, dtype=F64), standard_normal_log_prob,
                            solver=solver_cls(), steps=7)
    assert result.nfe == len(calls) == 7 * solver_cls.nfe_per_step


def test_solver_by_name_and_grid_in_either_order() -> None:
    flow = _matrix_flow()
    x1 = torch.randn(4, 3, dtype=F64)
    reference = log_likelihood(flow, x1, standard_normal_log_prob, solver=Euler(), steps=6).log_p
    by_name = log_likelihood(flow, x1, standard_normal_log_prob, solver="euler", steps=6).log_p
    increasing = log_likelihood(flow, x1, standard_normal_log_prob, solver=Euler(),
                                times=uniform_grid(6)).log_p
    torch.testing.assert_close(by_name, reference, rtol=0, atol=0)
    torch.testing.assert_close(increasing, reference, rtol=0, atol=1e-14)
    if "rk4" in SOLVERS:  # the default solver, once its entry point is installed
        default = log_likelihood(flow, x1, standard_normal_log_prob, steps=6).log_p
        torch.testing.assert_close(default, log_likelihood(flow, x1, standard_normal_log_prob,
                                                           solver=RK4(), steps=6).log_p, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"divergence": "trace"}, "divergence"),
    ({"probe": "uniform", "divergence": "hutchinson"}, "probe"),
    ({"n_probes": 0, "divergence": "hutchinson"}, "n_probes"),
    ({"steps": 4, "times": uniform_grid(4)}, "steps or times"),
    ({"times": uniform_grid(4, 0.0, 0.5)}, "times"),
    ({"times": torch.tensor([1.0, 0.2, 0.6, 0.0])}, "times"),
    ({"steps": 0}, "steps"),
])
def test_invalid_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_likelihood(lambda x, t: x, torch.zeros(2, 3), standard_normal_log_prob, solver=Euler(), **kwargs)


def test_invalid_shapes_raise() -> None:
    with pytest.raises(ValueError, match="x1"):
        log_likelihood(lambda x, t: x, torch.zeros(3), standard_normal_log_prob, solver=Euler(), steps=2)
    with pytest.raises(ValueError, match="source_log_prob"):
        log_likelihood(lambda x, t: x, torch.zeros(2, 3), lambda x: x.sum(), solver=Euler(), steps=2)


def test_learned_source_density_is_detached_without_grad() -> None:
    """A source log density with parameters joins the graph only when grad=True."""
    scale = torch.tensor(1.3, dtype=F64, requires_grad=True)
    source = lambda x: torch.distributions.Normal(0.0, scale).log_prob(x).sum(1)  # noqa: E731
    x1 = torch.randn(3, 2, dtype=F64)
    assert not log_likelihood(lambda x, t: -x, x1, source, solver=Euler(), steps=2).log_p.requires_grad
    assert log_likelihood(lambda x, t: -x, x1, source, solver=Euler(), steps=2, grad=True).log_p.requires_grad
