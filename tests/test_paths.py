"""Oracle tests of flowsci.paths: schedulers, affine paths and their converters, the post-hoc
schedule change and the Brownian-bridge path (independent oracles, as docs/design.md asks).

The oracles: central finite differences (path velocities, scheduler derivatives), closed forms
and scipy quadrature for the endpoints and the VP mapping, the defining 2x2 system of the path
and autograd of the exact mixture log-density for the score (converters), and the analytic
marginal velocity of a Gaussian source flowing to a weighted Dirac mixture, written here from
its formula (schedule change, transport), integrated with a local RK4 and compared pointwise,
at the end of the flow, and against the mixture weights (chi-square). The Brownian bridge is
compared with a bridge built from simulated Brownian motion (two-sample KS test).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from flowsci.paths import (
    AffinePath,
    CosineScheduler,
    LinearScheduler,
    LinearSigmaMinScheduler,
    PathSample,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    ScheduleTransformedVelocity,
    SchrodingerBridgePath,
    VPScheduler,
    bisect_snr_inverse,
    cosine_path,
    linear_path,
    polynomial_path,
    schrodinger_bridge_path,
    sigma_min_path,
    vp_path,
)
from flowsci.registry import Registry

F64 = torch.float64
H = 1e-5  # finite-difference step (float64)

SCHEDULERS: dict[str, Scheduler] = {
    "linear": LinearScheduler(),
    "cosine": CosineScheduler(),
    "poly0.5": PolynomialScheduler(n=0.5),
    "poly1": PolynomialScheduler(n=1),
    "poly3": PolynomialScheduler(n=3.0),
    "vp": VPScheduler(),
    "vp_mild": VPScheduler(beta_min=0.5, beta_max=5.0),
    "sigma_min": LinearSigmaMinScheduler(),
    "sigma_min_wide": LinearSigmaMinScheduler(sigma_min=0.2),
}
NAMES = list(SCHEDULERS)

# Weighted Dirac mixture in 2-D: the target of the analytic marginal velocity.
CENTERS = torch.tensor([[2.0, 0.5], [-1.5, 1.5], [0.0, -2.0]], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)

Coefficients = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def interior_times(n: int = 40, margin: float = 0.02) -> torch.Tensor:
    return torch.linspace(margin, 1 - margin, n, dtype=F64)


def from_scheduler(scheduler: Scheduler) -> Coefficients:
    def coefficients(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = scheduler(t)
        return c.alpha_t, c.sigma_t, c.d_alpha_t, c.d_sigma_t
    return coefficients


def linear_closed_form(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


def cosine_closed_form(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = 0.5 * math.pi
    return torch.sin(a * t), torch.cos(a * t), a * torch.cos(a * t), -a * torch.sin(a * t)


def mixture_velocity(coefficients: Coefficients, centers: torch.Tensor = CENTERS,
                     weights: torch.Tensor = WEIGHTS) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The analytic marginal velocity of x_t = sigma_t x0 + alpha_t x1, x0 ~ N(0, I),
    x1 ~ sum_i w_i delta(c_i): u_t(x) = sum_i p_i(x) (alpha'_t c_i + (sigma'_t / sigma_t)(x - alpha_t c_i)),
    p_i ∝ w_i exp(-|x - alpha_t c_i|^2 / (2 sigma_t^2)). x: (B, 2), t: (B,)."""
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma, d_alpha, d_sigma = (c[:, None, None] for c in coefficients(t))
        offset = x[:, None, :] - alpha * centers                       # (B, K, 2)
        logits = weights.log() - offset.pow(2).sum(-1) / (2 * sigma[..., 0] ** 2)
        p = torch.softmax(logits, dim=1)[..., None]
        return (p * (d_alpha * centers + (d_sigma / sigma) * offset)).sum(1)
    return velocity


def mixture_log_density(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log sum_i w_i N(x; alpha c_i, sigma^2 I) in 2-D, x: (B, 2), alpha, sigma: (B,)."""
    offset = x[:, None, :] - alpha[:, None, None] * CENTERS
    variance = sigma[:, None] ** 2
    log_normal = -offset.pow(2).sum(-1) / (2 * variance) - torch.log(2 * math.pi * variance)
    return torch.logsumexp(WEIGHTS.log() + log_normal, dim=1)


def rk4(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
        times: torch.Tensor) -> torch.Tensor:
    """Classical RK4 over the grid ``times`` (a local integrator, independent of flowsci.solvers)."""
    def v(y: torch.Tensor, s: float) -> torch.Tensor:
        return velocity(y, torch.full((y.shape[0],), s, dtype=F64))

    for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
        h = t_next - t
        k1 = v(x, t)
        k2 = v(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = v(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = v(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def flow_grid(t_end: float) -> torch.Tensor:
    """0 -> 0.9 in steps of 0.01, then steps shrinking geometrically in 1 - t down to 1 - t_end
    (the field stiffens like 1 / sigma_t near t = 1); t_end = 1 ends with one step of 1e-6."""
    uniform = torch.linspace(0.0, 0.9, 91, dtype=F64)
    gap_end = max(1.0 - t_end, 1e-6)
    steps = math.ceil(math.log(0.1 / gap_end) / -math.log(0.9))
    tail = 1 - torch.logspace(math.log10(0.1), math.log10(gap_end), steps + 1, dtype=F64)
    grid = torch.cat([uniform[:-1], tail])
    return torch.cat([grid, torch.ones(1, dtype=F64)]) if t_end == 1.0 else grid


# --- schedulers -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine", "poly0.5", "poly1", "poly3"])
def test_endpoints_are_exact(name: str) -> None:
    c = SCHEDULERS[name](torch.tensor([0.0, 1.0], dtype=F64))
    expected = {"alpha_t": [0.0, 1.0], "sigma_t": [1.0, 0.0]}
    for field, values in expected.items():
        torch.testing.assert_close(getattr(c, field), torch.tensor(values, dtype=F64), rtol=0, atol=0)


def test_sigma_min_endpoints() -> None:
    c = LinearSigmaMinScheduler(sigma_min=0.2)(torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(c.alpha_t, torch.tensor([0.0, 1.0], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(c.sigma_t, torch.tensor([1.0, 0.2], dtype=F64), rtol=0, atol=1e-16)


@pytest.mark.parametrize("beta_min,beta_max", [(0.1, 20.0), (0.5, 5.0)])
def test_vp_is_ddpm_integrated_rate_in_our_direction(beta_min: float, beta_max: float) -> None:
    """alpha_t = exp(-1/2 int_0^{1-t} beta), integrated by scipy quadrature; sigma^2 + alpha^2 = 1;
    exact at t = 1, alpha_0 = exp(-(beta_min + beta_max) / 4) > 0 at the noise end."""
    scheduler = VPScheduler(beta_min=beta_min, beta_max=beta_max)
    t = torch.linspace(0, 1, 11, dtype=F64)
    c = scheduler(t)
    expected = [math.exp(-0.5 * scipy.integrate.quad(lambda s: beta_min + s * (beta_max - beta_min),
                                                     0, 1 - ti)[0]) for ti in t.tolist()]
    torch.testing.assert_close(c.alpha_t, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(c.alpha_t ** 2 + c.sigma_t ** 2, torch.ones_like(t), rtol=1e-14, atol=0)
    assert c.alpha_t[-1].item() == 1.0 and c.sigma_t[-1].item() == 0.0
    assert c.alpha_t[0].item() == pytest.approx(math.exp(-(beta_min + beta_max) / 4), rel=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_are_finite_differences(name: str) -> None:
    scheduler, t = SCHEDULERS[name], interior_times()
    c, up, down = scheduler(t), scheduler(t + H), scheduler(t - H)
    torch.testing.assert_close(c.d_alpha_t, (up.alpha_t - down.alpha_t) / (2 * H), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(c.d_sigma_t, (up.sigma_t - down.sigma_t) / (2 * H), rtol=1e-6, atol=1e-9)


def test_infinite_derivatives_at_singular_ends_are_reported_not_hidden() -> None:
    assert VPScheduler()(torch.tensor([1.0], dtype=F64)).d_sigma_t.item() == -math.inf
    assert PolynomialScheduler(n=0.5)(torch.tensor([0.0], dtype=F64)).d_alpha_t.item() == math.inf
    assert VPScheduler().singular_times == (1.0,) and PolynomialScheduler(n=0.5).singular_times == (0.0,)
    assert PolynomialScheduler(n=2).singular_times == () == LinearScheduler().singular_times


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("path,end", [(vp_path(), 1.0), (polynomial_path(0.5), 0.0)])
def test_sample_steps_off_a_singular_end_by_one_machine_epsilon(path: AffinePath, end: float,
                                                                 dtype: torch.dtype) -> None:
    eps = torch.finfo(dtype).eps
    x0, x1 = torch.randn(2, 3, dtype=dtype), torch.randn(2, 3, dtype=dtype)
    s = path.sample(x0, x1, torch.tensor([end, 0.5], dtype=dtype))
    assert s.t.tolist() == [1 - eps if end == 1.0 else eps, 0.5]
    assert bool(torch.isfinite(s.dx_t).all())
    torch.testing.assert_close(s.x_t[0], (x1 if end == 1.0 else x0)[0], rtol=0, atol=20 * math.sqrt(eps))


class SqrtScheduler(Scheduler):
    """alpha = 1 - sqrt(1 - t), sigma = sqrt(1 - t): infinite derivatives at t = 1, not declared."""

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        sigma = torch.sqrt(1 - t)
        return SchedulerOutput(alpha_t=1 - sigma, sigma_t=sigma,
                               d_alpha_t=0.5 / sigma, d_sigma_t=-0.5 / sigma)


def test_undeclared_infinite_derivative_raises() -> None:
    with pytest.raises(ValueError, match=r"sample .* undefined at t = \[1.0\]"):
        AffinePath(SqrtScheduler()).sample(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_snr_increases_and_its_inverse_round_trips(name: str) -> None:
    scheduler = SCHEDULERS[name]
    t = torch.linspace(0, 1, 201, dtype=F64)
    c = scheduler(t)
    snr = c.alpha_t / c.sigma_t
    assert bool((snr.diff() > 0).all())
    torch.testing.assert_close(scheduler.snr_inverse(snr), t, rtol=0, atol=1e-6)
    torch.testing.assert_close(scheduler.snr(t), snr, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_snr_inverse_matches_bisection(name: str) -> None:
    scheduler = SCHEDULERS[name]
    snr = scheduler.snr(interior_times(25, 0.01))
    torch.testing.assert_close(scheduler.snr_inverse(snr), bisect_snr_inverse(scheduler, snr),
                               rtol=0, atol=1e-12)


class SmoothstepScheduler(Scheduler):
    """alpha = 3t^2 - 2t^3, sigma = 1 - alpha: no closed-form SNR inverse is written, so bisection runs."""

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        alpha = t * t * (3 - 2 * t)
        d_alpha = 6 * t * (1 - t)
        return SchedulerOutput(alpha_t=alpha, sigma_t=1 - alpha, d_alpha_t=d_alpha, d_sigma_t=-d_alpha)


def test_default_snr_inverse_bisects_any_scheduler() -> None:
    scheduler = SmoothstepScheduler()
    t = torch.linspace(0, 1, 101, dtype=F64)
    torch.testing.assert_close(scheduler.snr_inverse(scheduler.snr(t)), t, rtol=0, atol=1e-12)
    t32 = t.to(torch.float32)
    assert scheduler.snr_inverse(scheduler.snr(t32)).dtype == torch.float32


@pytest.mark.parametrize("scheduler,snr", [(VPScheduler(), 1e-3), (LinearSigmaMinScheduler(0.2), 5.5),
                                           (LinearScheduler(), -1.0), (CosineScheduler(), math.nan)])
def test_snr_inverse_rejects_values_outside_the_range(scheduler: Scheduler, snr: float) -> None:
    with pytest.raises(ValueError, match="snr must lie in"):
        scheduler.snr_inverse(torch.tensor([1.0, snr], dtype=F64))


# --- path velocities are finite differences of the path ------------------------------------


PATHS = {name: AffinePath(s) for name, s in SCHEDULERS.items()}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(40, 3), (40, 2, 3)])
def test_affine_velocity_is_finite_difference(name: str, shape: tuple[int, ...]) -> None:
    path = PATHS[name]
    x0, x1 = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    t = interior_times(shape[0])
    fd = (path.sample(x0, x1, t + H).x_t - path.sample(x0, x1, t - H).x_t) / (2 * H)
    torch.testing.assert_close(path.sample(x0, x1, t).dx_t, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 2.0])
def test_bridge_velocity_is_finite_difference_for_fixed_noise(sigma: float) -> None:
    path = SchrodingerBridgePath(sigma)
    x0, x1, eps = (torch.randn(40, 2, 3, dtype=F64) for _ in range(3))
    t = interior_times(40)
    fd = (path.sample(x0, x1, t + H, noise=eps).x_t - path.sample(x0, x1, t - H, noise=eps).x_t) / (2 * H)
    torch.testing.assert_close(path.sample(x0, x1, t, noise=eps).dx_t, fd, rtol=1e-6, atol=1e-8)


# --- the linear path by hand ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 2)])
def test_linear_path_ends_exactly_at_x0_and_x1(shape: tuple[int, ...]) -> None:
    x0, x1 = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    path, b = linear_path(), shape[0]
    at0 = path.sample(x0, x1, torch.zeros(b, dtype=F64))
    at1 = path.sample(x0, x1, torch.ones(b, dtype=F64))
    torch.testing.assert_close(at0.x_t, x0, rtol=0, atol=0)
    torch.testing.assert_close(at1.x_t, x1, rtol=0, atol=0)
    assert at0.x_t.shape == at0.dx_t.shape == shape


def test_linear_path_x_t_is_on_the_segment() -> None:
    """x_t divides the segment x0 -> x1 in the ratio t : (1 - t) (distances, not a formula)."""
    x0, x1 = torch.randn(7, 2, dtype=F64), torch.randn(7, 2, dtype=F64)
    t = torch.rand(7, dtype=F64)
    x_t = linear_path().sample(x0, x1, t).x_t
    d01 = (x1 - x0).norm(dim=1)
    torch.testing.assert_close((x_t - x0).norm(dim=1), t * d01)
    torch.testing.assert_close((x1 - x_t).norm(dim=1), (1 - t) * d01)


# --- converters -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_converters_recover_the_true_sample(name: str) -> None:
    """Given the exact (x_t, dx_t) of a path sample, every converter returns the true x0, x1, dx_t."""
    path = PATHS[name]
    x0, x1 = torch.randn(30, 2, 2, dtype=F64), torch.randn(30, 2, 2, dtype=F64)
    t = interior_times(30, 0.05)
    s = path.sample(x0, x1, t)
    close = {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(path.velocity_to_x1(s.dx_t, s.x_t, t), x1, **close)
    torch.testing.assert_close(path.velocity_to_x0(s.dx_t, s.x_t, t), x0, **close)
    torch.testing.assert_close(path.x1_to_velocity(x1, s.x_t, t), s.dx_t, **close)
    torch.testing.assert_close(path.x0_to_velocity(x0, s.x_t, t), s.dx_t, **close)
    torch.testing.assert_close(path.x1_to_x0(x1, s.x_t, t), x0, **close)
    torch.testing.assert_close(path.x0_to_x1(x0, s.x_t, t), x1, **close)


@pytest.mark.parametrize("name", NAMES)
def test_converters_round_trip(name: str) -> None:
    path = PATHS[name]
    v, x_t = torch.randn(30, 3, dtype=F64), torch.randn(30, 3, dtype=F64)
    t = interior_times(30, 0.05)
    close = {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(path.x1_to_velocity(path.velocity_to_x1(v, x_t, t), x_t, t), v, **close)
    torch.testing.assert_close(path.x0_to_velocity(path.velocity_to_x0(v, x_t, t), x_t, t), v, **close)
    torch.testing.assert_close(path.score_to_velocity(path.velocity_to_score(v, x_t, t), x_t, t), v, **close)


@pytest.mark.parametrize("name", ["linear", "cosine", "poly3", "vp", "sigma_min_wide"])
def test_converters_give_the_posterior_mean_and_the_exact_score(name: str) -> None:
    """For the Gaussian source -> Dirac mixture, the analytic velocity converts to the posterior
    mean E[x1 | x_t] = sum_i p_i c_i, and to the score = autograd of the exact mixture log-density."""
    scheduler, path = SCHEDULERS[name], PATHS[name]
    t = interior_times(30, 0.1)
    x = (2 * torch.randn(30, 2, dtype=F64)).requires_grad_(True)
    c = scheduler(t)
    score = torch.autograd.grad(mixture_log_density(x, c.alpha_t, c.sigma_t).sum(), x)[0]
    x = x.detach()
    velocity = mixture_velocity(from_scheduler(scheduler))(x, t)
    torch.testing.assert_close(path.velocity_to_score(velocity, x, t), score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.score_to_velocity(score, x, t), velocity, rtol=1e-9, atol=1e-9)
    offset = x[:, None, :] - c.alpha_t[:, None, None] * CENTERS
    p = torch.softmax(WEIGHTS.log() - offset.pow(2).sum(-1) / (2 * c.sigma_t[:, None] ** 2), dim=1)
    torch.testing.assert_close(path.velocity_to_x1(velocity, x, t), p @ CENTERS, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path,method,t", [
    (linear_path(), "x1_to_velocity", 1.0), (linear_path(), "x1_to_x0", 1.0),
    (linear_path(), "velocity_to_score", 1.0), (linear_path(), "x0_to_velocity", 0.0),
    (linear_path(), "x0_to_x1", 0.0), (linear_path(), "score_to_velocity", 0.0),
    (polynomial_path(2), "velocity_to_x1", 0.0), (polynomial_path(2), "velocity_to_x0", 0.0),
    (vp_path(), "velocity_to_x1", 1.0), (vp_path(), "x1_to_velocity", 1.0),
])
def test_converters_refuse_times_where_they_are_undefined(path: AffinePath, method: str, t: float) -> None:
    a, x_t = torch.randn(3, 2, dtype=F64), torch.randn(3, 2, dtype=F64)
    times = torch.tensor([0.5, t, 0.25], dtype=F64)
    with pytest.raises(ValueError, match=rf"{method} .* undefined at t = \[{t}\]"):
        getattr(path, method)(a, x_t, times)


def test_time_of_the_wrong_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        cosine_path().velocity_to_x1(torch.randn(4, 2), torch.randn(4, 2), torch.rand(4, 1))


@pytest.mark.parametrize("t_shape", [(4, 1), (), (5,), (1,), (4, 2)])
def test_sample_rejects_time_of_the_wrong_shape(t_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        linear_path().sample(torch.randn(4, 2), torch.randn(4, 2), torch.rand(t_shape))


# --- post-hoc schedule change ---------------------------------------------------------------


@pytest.mark.parametrize("original,closed_form,new", [
    ("linear", linear_closed_form, "cosine"), ("linear", linear_closed_form, "vp"),
    ("linear", linear_closed_form, "poly3"), ("linear", linear_closed_form, "sigma_min_wide"),
    ("cosine", cosine_closed_form, "linear"), ("cosine", cosine_closed_form, "poly0.5"),
])
def test_transformed_field_is_the_new_paths_marginal_velocity(original: str, closed_form: Coefficients,
                                                              new: str) -> None:
    """Transforming the analytic field of one path gives, pointwise, the analytic field of the other
    (both are E[dy | y] for the same coupling), for any data shape of the batch."""
    transformed = ScheduleTransformedVelocity(mixture_velocity(closed_form),
                                              SCHEDULERS[original], SCHEDULERS[new])
    r = interior_times(50, 0.03)
    y = 1.5 * torch.randn(50, 2, dtype=F64)
    expected = mixture_velocity(from_scheduler(SCHEDULERS[new]))(y, r)
    torch.testing.assert_close(transformed(y, r), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("new,snr_to_r", [
    ("cosine", lambda snr: 2 / math.pi * math.atan(snr)),
    ("poly3", lambda snr: (snr / (1 + snr)) ** (1 / 3)),
])
def test_transformed_flow_lands_where_the_original_does(new: str, snr_to_r: Callable[[float], float]) -> None:
    """Integrate the analytic linear-path field and its transform to the new schedule from the
    same x0; at times of equal SNR the states are y = c x with c = sigma_new / sigma_linear, and
    both end within 1e-3 of each other (the end is t = 1 - 1e-4, before the 1 / sigma_t singularity)."""
    x0 = torch.randn(64, 2, dtype=F64)
    t_end = 1 - 1e-4
    snr_end = t_end / (1 - t_end)
    r_end = snr_to_r(snr_end)
    scheduler = SCHEDULERS[new]
    original_end = rk4(mixture_velocity(linear_closed_form), x0, flow_grid(t_end))
    transformed = ScheduleTransformedVelocity(mixture_velocity(linear_closed_form),
                                              LinearScheduler(), scheduler)
    new_end = rk4(transformed, x0, flow_grid(r_end))
    scale = scheduler(torch.tensor(r_end, dtype=F64)).sigma_t.item() / (1 - t_end)
    torch.testing.assert_close(new_end, scale * original_end, rtol=0, atol=1e-6)
    torch.testing.assert_close(new_end, original_end, rtol=0, atol=1e-3)


def test_transform_refuses_snr_outside_the_original_range() -> None:
    """A VP-trained field never saw SNR < SNR_VP(0) > 0, which the linear path has near r = 0."""
    transformed = ScheduleTransformedVelocity(lambda x, t: x, VPScheduler(), LinearScheduler())
    with pytest.raises(ValueError, match="snr must lie in"):
        transformed(torch.randn(2, 3, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64))


def test_transform_refuses_a_new_schedule_with_infinite_velocity() -> None:
    transformed = ScheduleTransformedVelocity(lambda x, t: x, LinearScheduler(), VPScheduler())
    with pytest.raises(ValueError, match=r"infinite derivatives at t = \[1.0\]"):
        transformed(torch.randn(2, 3, dtype=F64), torch.tensor([0.5, 1.0], dtype=F64))


# --- the analytic marginal velocity transports the source onto the data ---------------------


@pytest.mark.parametrize("name", ["linear", "cosine", "poly1", "poly3", "vp", "sigma_min"])
def test_analytic_flow_lands_on_the_data(name: str) -> None:
    """Integrate u_t from N(0, I): every end point lies within 1e-2 of a Dirac location, and the
    mass reaching each Dirac matches its weight (chi-square). Affine paths with sigma_1 = 0 end at
    t = 1 - 1e-6, before u_t's 1 / sigma_t singularity, where the distance to the data is at most
    sigma_t |x0| + (1 - alpha_t) |x1| (largest for VP: sigma ~ sqrt(beta_min 1e-6) = 3e-4); the
    sigma_min path has no singularity (sigma_1 = 1e-4) and runs to t = 1. (Polynomial n < 1 is left
    out: its velocity is infinite at the start, t = 0.) On the way, at t = 1/2, the flow's samples
    must follow the exact marginal sum_i w_i N(alpha_t c_i, sigma_t^2 I) (KS test of two 1-D
    projections against the mixture CDF), which the attraction onto the Diracs near t = 1 would
    otherwise hide. (Statistical, so it sees gross errors only; the single-Dirac test below and
    the finite-difference tests pin the derivatives to 1e-6.)"""
    scheduler = SCHEDULERS[name]
    t_end = 1.0 if name == "sigma_min" else 1 - 1e-6
    grid = flow_grid(t_end)
    half = int(torch.searchsorted(grid, torch.tensor(0.5, dtype=F64)))
    x = rk4(mixture_velocity(from_scheduler(scheduler)), torch.randn(2000, 2, dtype=F64), grid[:half + 1])
    c = scheduler(grid[half])
    for direction in (torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.6, -0.8], dtype=F64)):
        means, scale = (c.alpha_t * CENTERS @ direction).numpy(), c.sigma_t.item()

        def cdf(z: np.ndarray, means: np.ndarray = means, scale: float = scale) -> np.ndarray:
            return sum(w * scipy.stats.norm.cdf(z, m, scale) for w, m in zip(WEIGHTS.tolist(), means))

        assert scipy.stats.kstest((x @ direction).numpy(), cdf).pvalue > 1e-3
    x = rk4(mixture_velocity(from_scheduler(scheduler)), x, grid[half:])
    distance, nearest = torch.cdist(x, CENTERS).min(dim=1)
    assert distance.max().item() < 1e-2
    counts = torch.bincount(nearest, minlength=len(CENTERS)).to(F64)
    assert scipy.stats.chisquare(counts.numpy(), (WEIGHTS * len(x)).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("name", [n for n in NAMES if n != "poly0.5"])
def test_single_dirac_flow_follows_the_conditional_path(name: str) -> None:
    """With one Dirac c as the target, the marginal flow is the conditional path itself: from
    x(0) = sigma_0 eps + alpha_0 c it passes through x_t = sigma_t eps + alpha_t c (alpha_0 > 0 for
    VP), checked at t = 1/2 and at the end of the grid of the transport test above."""
    scheduler, center = SCHEDULERS[name], torch.tensor([[1.5, -0.5]], dtype=F64)
    velocity = mixture_velocity(from_scheduler(scheduler), center, torch.ones(1, dtype=F64))
    grid = flow_grid(1.0 if name.startswith("sigma_min") else 1 - 1e-6)
    half = int(torch.searchsorted(grid, torch.tensor(0.5, dtype=F64)))
    eps = torch.randn(64, 2, dtype=F64)
    start = scheduler(grid[0])
    x = start.sigma_t * eps + start.alpha_t * center
    for times in (grid[:half + 1], grid[half:]):
        x = rk4(velocity, x, times)
        c = scheduler(times[-1])
        torch.testing.assert_close(x, c.sigma_t * eps + c.alpha_t * center, rtol=0, atol=1e-7)


# --- Schrodinger bridge ---------------------------------------------------------------------


def test_bridge_velocity_has_the_drift_form() -> None:
    """dx_t = x1 - x0 + (1 - 2t) / (2 t (1 - t)) (x_t - mu_t), the bridge SDE's drift form."""
    path = SchrodingerBridgePath(0.7)
    x0, x1 = torch.randn(20, 3, dtype=F64), torch.randn(20, 3, dtype=F64)
    t = interior_times(20)
    s = path.sample(x0, x1, t)
    tb = t[:, None]
    mean = (1 - tb) * x0 + tb * x1
    torch.testing.assert_close(s.dx_t, x1 - x0 + (1 - 2 * tb) / (2 * tb * (1 - tb)) * (s.x_t - mean))


def test_bridge_marginal_matches_a_simulated_brownian_bridge() -> None:
    """x_t against a bridge built from Brownian motion B = x0 + sigma W conditioned on B_1 = x1:
    x0 + sigma W_t - t (x0 + sigma W_1 - x1), W_t ~ N(0, t), W_1 - W_t ~ N(0, 1 - t) independent."""
    n, sigma, t = 4000, 0.8, 0.3
    x0, x1 = torch.full((n, 1), -1.0, dtype=F64), torch.full((n, 1), 2.0, dtype=F64)
    sample = SchrodingerBridgePath(sigma).sample(x0, x1, torch.full((n,), t, dtype=F64),
                                                 generator=torch.Generator().manual_seed(1))
    rng = torch.Generator().manual_seed(2)
    w_t = math.sqrt(t) * torch.randn(n, generator=rng, dtype=F64)
    w_1 = w_t + math.sqrt(1 - t) * torch.randn(n, generator=rng, dtype=F64)
    bridge = -1.0 + sigma * w_t - t * (-1.0 + sigma * w_1 - 2.0)
    assert scipy.stats.ks_2samp(sample.x_t[:, 0].numpy(), bridge.numpy()).pvalue > 1e-3


def test_bridge_noise_argument_generator_and_recorded_noise() -> None:
    path = schrodinger_bridge_path(0.5)
    x0, x1, t = torch.randn(6, 2, 2), torch.randn(6, 2, 2), torch.rand(6)
    first = path.sample(x0, x1, t, generator=torch.Generator().manual_seed(3))
    again = path.sample(x0, x1, t, generator=torch.Generator().manual_seed(3))
    other = path.sample(x0, x1, t, generator=torch.Generator().manual_seed(4))
    assert isinstance(first.noise, torch.Tensor) and first.noise.shape == x0.shape
    torch.testing.assert_close(again.x_t, first.x_t, rtol=0, atol=0)
    assert not torch.allclose(other.x_t, first.x_t)
    replay = path.sample(x0, x1, t, noise=first.noise)
    torch.testing.assert_close(replay.x_t, first.x_t, rtol=0, atol=0)
    assert replay.noise is first.noise
    with pytest.raises(ValueError, match="noise must have the shape"):
        path.sample(x0, x1, t, noise=torch.randn(6, 4))


def test_bridge_without_noise_is_the_linear_path() -> None:
    """sigma = 0 needs no clamp: equal to the linear path at every t, the ends included."""
    x0, x1 = torch.randn(8, 3, dtype=F64), torch.randn(8, 3, dtype=F64)
    t = torch.cat([torch.tensor([0.0, 1.0], dtype=F64), torch.rand(6, dtype=F64)])
    bridge, linear = SchrodingerBridgePath(0.0).sample(x0, x1, t), linear_path().sample(x0, x1, t)
    torch.testing.assert_close(bridge.x_t, linear.x_t, rtol=0, atol=0)
    torch.testing.assert_close(bridge.dx_t, linear.dx_t, rtol=0, atol=0)
    assert linear.noise is None


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_bridge_ends_are_clamped_by_one_machine_epsilon(dtype: torch.dtype) -> None:
    eps = torch.finfo(dtype).eps
    x0, x1 = torch.randn(2, 3, dtype=dtype), torch.randn(2, 3, dtype=dtype)
    s = SchrodingerBridgePath(1.0).sample(x0, x1, torch.tensor([0.0, 1.0], dtype=dtype))
    assert s.t.tolist() == [eps, 1 - eps]
    assert bool(torch.isfinite(s.dx_t).all())
    torch.testing.assert_close(s.x_t, torch.stack([x0[0], x1[1]]), rtol=0, atol=10 * math.sqrt(eps))


# --- parameters and the registry ------------------------------------------------------------


@pytest.mark.parametrize("build,parameter", [
    (lambda: PolynomialScheduler(n=0), "n"), (lambda: PolynomialScheduler(n=-1.5), "n"),
    (lambda: polynomial_path(math.nan), "n"),
    (lambda: VPScheduler(beta_min=20.0, beta_max=0.1), "beta_min"),
    (lambda: VPScheduler(beta_min=1.0, beta_max=1.0), "beta_min"),
    (lambda: VPScheduler(beta_min=0.0), "beta_min"), (lambda: vp_path(beta_max=math.inf), "beta_max"),
    (lambda: LinearSigmaMinScheduler(sigma_min=0.0), "sigma_min"),
    (lambda: LinearSigmaMinScheduler(sigma_min=1.0), "sigma_min"),
    (lambda: sigma_min_path(-0.1), "sigma_min"),
    (lambda: SchrodingerBridgePath(-0.5), "sigma"), (lambda: schrodinger_bridge_path(math.nan), "sigma"),
    (lambda: AffinePath("linear"), "scheduler"),
    (lambda: ScheduleTransformedVelocity(lambda x, t: x, LinearScheduler(), "cosine"), "new"),
])
def test_invalid_parameters_raise(build: Callable[[], object], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        build()


def test_factories_build_from_plain_keyword_arguments() -> None:
    registry: Registry[object] = Registry("path", "flowsci.test_paths.unused_group")
    for name, factory in {"linear": linear_path, "vp": vp_path, "cosine": cosine_path,
                          "polynomial": polynomial_path, "sigma_min": sigma_min_path,
                          "schrodinger_bridge": schrodinger_bridge_path}.items():
        registry.register(name, factory)
    vp = registry.create({"name": "vp", "beta_min": 0.5, "beta_max": 5.0}, "objective.path")
    assert vp.scheduler == VPScheduler(beta_min=0.5, beta_max=5.0)
    assert registry.create({"name": "polynomial", "n": 2}, "p").scheduler == PolynomialScheduler(n=2)
    assert registry.create("sigma_min", "p").scheduler == LinearSigmaMinScheduler(1e-4)
    assert registry.create({"name": "schrodinger_bridge", "sigma": 0.2}, "p").sigma == 0.2
    sample = registry.create("cosine", "p").sample(torch.zeros(2, 1), torch.ones(2, 1), torch.ones(2))
    assert isinstance(sample, PathSample) and sample.x_t.tolist() == [[1.0], [1.0]]
