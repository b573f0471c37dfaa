"""Losses: MSE, pseudo-Huber, per-time weights, regression in x1-space.

Oracles: hand-computed values, the asymptotes of pseudo-Huber, the papers' losses written in
their own convention (SD3's weighted eps-loss, 2-RF++'s (1 - t) Huber and LPIPS/t terms with
tau = 1 - t noise; Esser et al. 2024, §2; Lee, Lin & Fanti 2024) and Monte Carlo identities with tolerances
from the standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import scipy.integrate
import torch

from flowsci.errors import ConfigError
from flowsci.losses import MSELoss, PseudoHuberLoss, Weighted, X1SpaceLoss
from flowsci.paths import AffinePath, linear_path
from flowsci.timesteps import CosMapTime, UniformTime

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LinearPathOracle:
    """The linear path's velocity -> x1 converter, by hand: x_t = (1-t) x0 + t x1 and
    v = x1 - x0 give x1 = x_t + (1 - t) v."""

    def velocity_to_x1(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_t + (1 - t).reshape(-1, *[1] * (v.dim() - 1)) * v


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *[1] * (x.dim() - 1))


# --- MSE -------------------------------------------------------------------------------------


def test_mse_hand_values() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], dtype=F64)
    target = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, -1.0]], dtype=F64)
    # sample 0: (1 + 4) / 2 = 2.5; sample 1: (0 + 16) / 2 = 8; sample 2: (1 + 1) / 2 = 1
    out = MSELoss()(pred, target, torch.rand(3, dtype=F64))
    torch.testing.assert_close(out, torch.tensor([2.5, 8.0, 1.0], dtype=F64))


def test_mse_reduces_all_non_batch_dims() -> None:
    pred, target = torch.zeros(2, 2, 3, dtype=F64), torch.zeros(2, 2, 3, dtype=F64)
    target[0, 1, 2] = 6.0          # one error of 6 among 6 entries: 36 / 6 = 6
    target[1] = 2.0                # every entry off by 2: 4
    out = MSELoss()(pred, target, torch.rand(2, dtype=F64))
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([6.0, 4.0], dtype=F64))


# --- pseudo-Huber ------------------------------------------------------------------------------


def test_pseudo_huber_hand_values() -> None:
    pred = torch.tensor([[[3.0, 0.0], [4.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=F64)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=F64)
    # sample 0: |e| = 5, D = 4, c = 1: (sqrt(26) - 1) / 4; sample 1: no error
    out = PseudoHuberLoss(c=1.0)(pred, target, torch.rand(2, dtype=F64))
    torch.testing.assert_close(out, torch.tensor([(math.sqrt(26) - 1) / 4, 0.0], dtype=F64))


def test_pseudo_huber_default_c_is_0p00054_d() -> None:
    """D = 1000 entries, |e| = 1: c = 0.54, loss = (sqrt(1 + 0.54^2) - 0.54) / 1000."""
    pred = torch.zeros(1, 10, 100, dtype=F64)
    pred[0, 3, 7] = 1.0
    out = PseudoHuberLoss()(pred, torch.zeros_like(pred), torch.rand(1, dtype=F64))
    torch.testing.assert_close(out, torch.tensor([(math.sqrt(1.2916) - 0.54) / 1000], dtype=F64))


def test_pseudo_huber_asymptotes() -> None:
    """|e| << c: |e|^2 / (2 c D) (MSE-like); |e| >> c: |e| / D (L2-norm-like). The relative
    errors of these approximations are about |e|^2 / (4 c^2) and c / |e|."""
    e = torch.randn(5, 3, 4, dtype=F64, generator=_gen(0))
    norm2 = e.pow(2).flatten(1).sum(1)
    dim, c = 12, 0.7
    loss = PseudoHuberLoss(c=c)
    small = loss(1e-5 * e, torch.zeros_like(e), torch.rand(5, dtype=F64))
    torch.testing.assert_close(small, 1e-10 * norm2 / (2 * c * dim), rtol=1e-8, atol=0)
    large = loss(1e5 * e, torch.zeros_like(e), torch.rand(5, dtype=F64))
    torch.testing.assert_close(large, 1e5 * norm2.sqrt() / dim, rtol=1e-5, atol=0)


def test_pseudo_huber_is_accurate_for_tiny_errors_in_float32() -> None:
    """sqrt(|e|^2 + c^2) - c cancels in float32 for |e| << c; the loss must not."""
    e = torch.full((2, 8), 1e-4)
    out32 = PseudoHuberLoss(c=1.0)(e, torch.zeros_like(e), torch.rand(2))
    out64 = PseudoHuberLoss(c=1.0)(e.double(), torch.zeros(2, 8, dtype=F64), torch.rand(2, dtype=F64))
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=0)


def test_pseudo_huber_gradient_is_finite_at_zero_error() -> None:
    pred = torch.zeros(3, 4, dtype=F64, requires_grad=True)
    PseudoHuberLoss(c=0.1)(pred, torch.zeros(3, 4, dtype=F64), torch.rand(3, dtype=F64)).sum().backward()
    assert pred.grad is not None and torch.equal(pred.grad, torch.zeros(3, 4, dtype=F64))


@pytest.mark.parametrize("c", [0.0, -1.0, math.nan, math.inf])
def test_pseudo_huber_rejects_bad_c(c: float) -> None:
    with pytest.raises(ValueError, match="c must be"):
        PseudoHuberLoss(c=c)


# --- weights: the papers' losses in their convention --------------------------------------------


def _sd3_setup(seed: int) -> tuple[torch.Tensor, ...]:
    """SD3 convention: data x, noise eps, tau in (0, 1), z = (1 - tau) x + tau eps."""
    g = _gen(seed)
    x, eps = torch.randn(64, 2, 3, dtype=F64, generator=g), torch.randn(64, 2, 3, dtype=F64, generator=g)
    tau = torch.rand(64, dtype=F64, generator=g).clamp(1e-3, 1 - 1e-3)
    z = (1 - _bcast(tau, x)) * x + _bcast(tau, x) * eps
    v_pred_theirs = torch.randn(64, 2, 3, dtype=F64, generator=g)       # a model's output
    return x, eps, tau, z, v_pred_theirs


def test_rf_weight_reproduces_sd3s_weighted_eps_loss() -> None:
    """SD3: L = -1/2 w_tau lambda'_tau |eps_hat - eps|^2 with w_RF = tau / (1 - tau) and
    lambda = log((1 - tau)^2 / tau^2) (differentiated numerically here); eps_hat = z + (1-tau) v."""
    x, eps, tau, z, v_theirs = _sd3_setup(0)
    h = 1e-6
    lam = lambda s: torch.log((1 - s) ** 2 / s ** 2)  # noqa: E731
    dlam = (lam(tau + h) - lam(tau - h)) / (2 * h)
    eps_hat = z + (1 - _bcast(tau, x)) * v_theirs
    sd3 = -0.5 * (tau / (1 - tau)) * dlam * (eps_hat - eps).pow(2).flatten(1).mean(1)
    # ours: t = 1 - tau, velocities flip sign (target x - eps)
    out = Weighted(MSELoss(), "rf")(-v_theirs, x - eps, 1 - tau)
    torch.testing.assert_close(out, sd3, rtol=1e-6, atol=0)


def test_two_rf_weight_reproduces_2rfpp_huber_term() -> None:
    """2-RF++: (1 - tau) Huber(v_hat, eps - x), Huber(a, b) = (sqrt(|a-b|^2 + c^2) - c) / D."""
    x, eps, tau, z, v_theirs = _sd3_setup(1)
    c, dim = 0.3, 6
    huber = ((v_theirs - (eps - x)).pow(2).flatten(1).sum(1) + c * c).sqrt().sub(c) / dim
    theirs = (1 - tau) * huber
    out = Weighted(PseudoHuberLoss(c=c), "two_rf")(-v_theirs, x - eps, 1 - tau)
    torch.testing.assert_close(out, theirs, rtol=1e-10, atol=1e-14)


def test_two_rf_divt_x1_space_reproduces_2rfpp_perceptual_term() -> None:
    """2-RF++: LPIPS(x_hat, x) / tau with x_hat = z - tau v_hat; MSE stands in for LPIPS."""
    x, eps, tau, z, v_theirs = _sd3_setup(2)
    x_hat = z - _bcast(tau, x) * v_theirs
    theirs = (x_hat - x).pow(2).flatten(1).mean(1) / tau
    loss = Weighted(X1SpaceLoss(MSELoss()), "two_rf_divt")
    out = loss(-v_theirs, x - eps, 1 - tau, x_t=z, path=LinearPathOracle())
    torch.testing.assert_close(out, theirs, rtol=1e-10, atol=1e-12)


def test_unbounded_weight_is_clamped_at_max_weight() -> None:
    pred, target = torch.ones(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    out = Weighted(MSELoss(), "two_rf_divt", max_weight=50.0)(pred, target, t)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 50.0], dtype=F64))


def _mc(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def test_cosmap_weight_on_uniform_times_equals_cosmap_sampling() -> None:
    """E_{t~U}[w_cosmap(t) f(t)] = E_{t~CosMap}[f(t)] = int f p_cosmap (SD3: Esser et al.
    2024, §3.1); f(t) = exp(2t) is fed through the loss as an MSE."""
    n = 40_000

    def f(t: torch.Tensor) -> torch.Tensor:
        return torch.exp(2 * t)

    def as_mse_inputs(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = f(t).sqrt().reshape(-1, 1, 1).expand(-1, 2, 2)
        return pred, torch.zeros_like(pred)

    exact = scipy.integrate.quad(lambda s: math.exp(2 * s) * 2 / (math.pi - 2 * math.pi * s
                                                                  + 2 * math.pi * s * s), 0, 1)[0]
    t_u = UniformTime()(n, generator=_gen(3)).double()
    weighted, se_w = _mc(Weighted(MSELoss(), "cosmap")(*as_mse_inputs(t_u), t_u))
    sampled, se_s = _mc(f(CosMapTime()(n, generator=_gen(4)).double()))
    assert abs(weighted - exact) < 4 * se_w
    assert abs(sampled - exact) < 4 * se_s
    # power: without the weight the uniform average is a different number
    plain, se_p = _mc(MSELoss()(*as_mse_inputs(t_u), t_u))
    assert abs(plain - exact) > 8 * se_p


def test_weighted_with_a_callable_and_nested_specs() -> None:
    pred, target = torch.full((2, 3), 2.0, dtype=F64), torch.zeros(2, 3, dtype=F64)
    t = torch.tensor([0.2, 0.6], dtype=F64)
    out = Weighted("mse", lambda s: 10 * s)(pred, target, t)
    torch.testing.assert_close(out, torch.tensor([8.0, 24.0], dtype=F64))
    out = Weighted({"name": "mse"}, "two_rf")(pred, target, t)
    torch.testing.assert_close(out, torch.tensor([0.8, 2.4], dtype=F64))
    out = Weighted(Weighted(MSELoss(), "two_rf"), "two_rf")(pred, target, t)   # weights compose
    torch.testing.assert_close(out, 4 * t ** 2)


@pytest.mark.parametrize("build, error, match", [
    (lambda: Weighted(MSELoss(), "sd3"), ValueError, "weight must be one of"),
    (lambda: Weighted(MSELoss(), 3.0), ValueError, "weight must be a name"),
    (lambda: Weighted(MSELoss(), "uniform", max_weight=0.0), ValueError, "max_weight"),
    (lambda: Weighted("no_such_loss"), ConfigError, "unknown loss"),
    (lambda: X1SpaceLoss({"name": "mse", "c": 1.0}), ConfigError, "not a parameter"),
])
def test_loss_parameter_validation(build: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# --- x1-space regression -----------------------------------------------------------------------


def _linear_batch(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    x0, x1 = torch.randn(32, 3, 4, dtype=F64, generator=g), torch.randn(32, 3, 4, dtype=F64, generator=g)
    t = torch.rand(32, dtype=F64, generator=g)
    x_t = (1 - _bcast(t, x0)) * x0 + _bcast(t, x0) * x1
    v_hat = torch.randn(32, 3, 4, dtype=F64, generator=g)
    return x0, x1, t, x_t, v_hat


def test_x1_space_loss_compares_data_predictions() -> None:
    x0, x1, t, x_t, v_hat = _linear_batch(5)
    out = X1SpaceLoss(MSELoss())(v_hat, x1 - x0, t, x_t=x_t, path=LinearPathOracle())
    x1_hat = x_t + (1 - _bcast(t, x0)) * v_hat
    torch.testing.assert_close(out, (x1_hat - x1).pow(2).flatten(1).mean(1))
    # for MSE on the linear path this is (1 - t)^2 times the velocity MSE
    torch.testing.assert_close(out, (1 - t) ** 2 * MSELoss()(v_hat, x1 - x0, t))


def test_x1_space_pseudo_huber_sees_scaled_errors() -> None:
    """Pseudo-Huber is not a weight: in x1-space its argument is (1 - t) (v_hat - v)."""
    x0, x1, t, x_t, v_hat = _linear_batch(6)
    out = X1SpaceLoss(PseudoHuberLoss(c=0.5))(v_hat, x1 - x0, t, x_t=x_t, path=LinearPathOracle())
    norm = ((1 - t) * (v_hat - (x1 - x0)).flatten(1).norm(dim=1))
    torch.testing.assert_close(out, ((norm ** 2 + 0.25).sqrt() - 0.5) / 12)


def test_x1_space_loss_declares_and_requires_the_path() -> None:
    x0, x1, t, x_t, v_hat = _linear_batch(7)
    assert X1SpaceLoss().needs_path and Weighted(X1SpaceLoss(), "two_rf").needs_path
    assert not MSELoss().needs_path and not Weighted(PseudoHuberLoss()).needs_path
    with pytest.raises(ValueError, match="needs the keywords x_t= .* and path="):
        X1SpaceLoss()(v_hat, x1 - x0, t)
    with pytest.raises(ValueError, match="velocity_to_x1"):
        X1SpaceLoss()(v_hat, x1 - x0, t, x_t=x_t, path=object())


@pytest.mark.skipif(not hasattr(AffinePath, "velocity_to_x1"),
                    reason="flowsci.paths has no velocity_to_x1 converter yet")
def test_x1_space_loss_with_the_engines_linear_path() -> None:
    x0, x1, t, x_t, v_hat = _linear_batch(8)
    loss = X1SpaceLoss(MSELoss())
    out = loss(v_hat, x1 - x0, t, x_t=x_t, path=linear_path())
    torch.testing.assert_close(out, loss(v_hat, x1 - x0, t, x_t=x_t, path=LinearPathOracle()))
