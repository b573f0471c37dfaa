"""Oracle tests of the flow-matching engine: paths, time samplers, couplings, losses, solvers,
the flow-matching objective, metrics and the shared network blocks.

Every check compares against something independent of the implementation: finite
differences, closed-form solutions, scipy's assignment / statistics routines, or hand-worked
small examples (flow_engines.md §5, oracles O1, O5-O8, O12, O13).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats
import torch
from torch import nn

from flowsci.couplings import IndependentCoupling
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, sample
from flowsci.losses import MSELoss
from flowsci.metrics import straightness, wasserstein
from flowsci.nn.embeddings import SinusoidalTimeEmbedding
from flowsci.nn.mlp import VelocityMLP
from flowsci.paths import linear_path
from flowsci.solvers import Euler, uniform_grid
from flowsci.sources import StandardNormal
from flowsci.timesteps import UniformTime

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 2)])
def test_linear_path_endpoints(shape: tuple[int, ...]) -> None:
    x0, x1 = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    path = linear_path()
    b = shape[0]
    at0 = path.sample(x0, x1, torch.zeros(b, dtype=F64))
    at1 = path.sample(x0, x1, torch.ones(b, dtype=F64))
    torch.testing.assert_close(at0.x_t, x0, rtol=0, atol=0)
    torch.testing.assert_close(at1.x_t, x1, rtol=0, atol=0)
    assert at0.x_t.shape == at0.dx_t.shape == shape


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4)])
def test_linear_path_velocity_is_finite_difference(shape: tuple[int, ...]) -> None:
    """O1: dx_t equals the central difference (x_{t+h} - x_{t-h}) / 2h, per sample."""
    path = linear_path()
    x0, x1 = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    t = torch.rand(shape[0], dtype=F64) * 0.98 + 0.01
    h = 1e-5
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(path.sample(x0, x1, t).dx_t, fd, rtol=1e-6, atol=1e-8)


def test_linear_path_x_t_is_on_the_segment() -> None:
    """x_t divides the segment x0 -> x1 in the ratio t : (1 - t) (distances, not a formula)."""
    x0, x1 = torch.randn(7, 2, dtype=F64), torch.randn(7, 2, dtype=F64)
    t = torch.rand(7, dtype=F64)
    x_t = linear_path().sample(x0, x1, t).x_t
    d01 = (x1 - x0).norm(dim=1)
    torch.testing.assert_close((x_t - x0).norm(dim=1), t * d01)
    torch.testing.assert_close((x1 - x_t).norm(dim=1), (1 - t) * d01)


@pytest.mark.parametrize("t_shape", [(4, 1), (), (5,), (1,), (4, 2)])
def test_linear_path_rejects_t_of_wrong_shape(t_shape: tuple[int, ...]) -> None:
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    with pytest.raises(ValueError, match="shape"):
        linear_path().sample(x0, x1, torch.rand(t_shape))


# --- time samplers -------------------------------------------------------------------------


def test_uniform_time_range_and_shape() -> None:
    t = UniformTime()(10_000)
    assert t.shape == (10_000,)
    assert bool(((t >= 0) & (t <= 1)).all())
    assert UniformTime()(1).shape == (1,)


def test_uniform_time_reproducible_with_generator() -> None:
    a = UniformTime()(100, generator=torch.Generator().manual_seed(3))
    b = UniformTime()(100, generator=torch.Generator().manual_seed(3))
    c = UniformTime()(100, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_uniform_time_is_uniform_ks() -> None:
    t = UniformTime()(5_000, generator=torch.Generator().manual_seed(12345))
    result = scipy.stats.kstest(t.double().numpy(), "uniform")
    assert result.pvalue > 1e-3, result
    # and the test has power: the same numbers squared are far from uniform
    assert scipy.stats.kstest((t ** 2).double().numpy(), "uniform").pvalue < 1e-6


# --- couplings -----------------------------------------------------------------------------


def test_independent_coupling_keeps_pairs_and_extras() -> None:
    x0, x1 = torch.randn(6, 3), torch.randn(6, 3)
    extras = {"label": torch.arange(6), "cond": torch.randn(6, 4)}
    y0, y1, out = IndependentCoupling()(x0, x1, dict(extras))
    assert torch.equal(y0, x0) and torch.equal(y1, x1)
    assert set(out) == set(extras)
    for k in extras:
        assert torch.equal(out[k], extras[k])


def test_independent_coupling_rejects_mismatched_batches() -> None:
    with pytest.raises(ValueError, match="batch"):
        IndependentCoupling()(torch.randn(5, 2), torch.randn(4, 2), {})


# --- losses --------------------------------------------------------------------------------


def test_mse_loss_per_sample_hand_example() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, -1.0]])
    # sample 0: (1 + 4) / 2 = 2.5; sample 1: (0 + 16) / 2 = 8; sample 2: (1 + 1) / 2 = 1
    out = MSELoss()(pred, target, torch.rand(3))
    torch.testing.assert_close(out, torch.tensor([2.5, 8.0, 1.0]))


def test_mse_loss_reduces_all_non_batch_dims() -> None:
    pred = torch.zeros(2, 2, 3)
    target = torch.zeros(2, 2, 3)
    target[0, 1, 2] = 6.0          # one error of 6 among 6 entries: 36 / 6 = 6
    target[1] = 2.0                # every entry off by 2: 4
    out = MSELoss()(pred, target, torch.rand(2))
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([6.0, 4.0]))


# --- solvers -------------------------------------------------------------------------------


def _random_grid(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    inner = torch.sort(torch.rand(n - 1, generator=g, dtype=F64)).values
    return torch.cat([torch.zeros(1, dtype=F64), inner, torch.ones(1, dtype=F64)])


@pytest.mark.parametrize("grid", [uniform_grid(1), uniform_grid(7), _random_grid(13, 0),
                                  torch.tensor([0.2, 0.25, 0.9], dtype=F64)])
def test_euler_constant_velocity_is_exact(grid: torch.Tensor) -> None:
    a = torch.tensor([1.5, -2.0, 0.25], dtype=F64)
    x0 = torch.randn(4, 3, dtype=F64)
    result = Euler().integrate(lambda x, t: a.expand_as(x), x0, grid)
    span = float(grid[-1] - grid[0])
    torch.testing.assert_close(result.x, x0 + span * a, rtol=1e-12, atol=1e-12)


def test_euler_is_first_order_on_exponential_decay() -> None:
    """dx/dt = -x, x(1) = x0 e^{-1}: the global error halves when the steps double."""
    x0 = torch.tensor([[1.0], [-2.0]], dtype=F64)
    exact = x0 * math.exp(-1.0)
    errors = [float((Euler().integrate(lambda x, t: -x, x0, uniform_grid(n)).x - exact).abs().max())
              for n in (16, 32, 64, 128)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    for r in ratios:
        assert 1.85 < r < 2.15, (errors, ratios)
    assert errors[-1] < 5e-3


def test_euler_reverse_integrates_backwards_in_time() -> None:
    """dx/dt = -x on the decreasing grid 1 -> 0 from x(1) = e^{-1} x0 recovers x0 (first order)."""
    x0 = torch.tensor([[1.0, -3.0]], dtype=F64)
    x1 = x0 * math.exp(-1.0)
    errors = [float((Euler().integrate(lambda x, t: -x, x1, uniform_grid(n, 1.0, 0.0)).x - x0).abs().max())
              for n in (32, 64)]
    assert errors[1] < 0.03
    assert 1.8 < errors[0] / errors[1] < 2.2


def test_euler_reverse_inverts_constant_field_exactly() -> None:
    a = torch.tensor([0.3, -1.1], dtype=F64)
    x0 = torch.randn(5, 2, dtype=F64)
    grid = _random_grid(9, 1)
    fwd = Euler().integrate(lambda x, t: a.expand_as(x), x0, grid)
    back = Euler().integrate(lambda x, t: a.expand_as(x), fwd.x, grid.flip(0))
    torch.testing.assert_close(back.x, x0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [4, 10, 50])
def test_euler_reverse_of_linear_in_t_field(steps: int) -> None:
    """v = a t + b with N uniform steps. Forward Euler sums a t_n h over the left ends, backward
    over the right ends, so the round trip misses x0 by exactly -a h (h = 1/N), which vanishes
    as the grid is refined. A sign error in the reverse step would miss by about 2b."""
    a = torch.tensor([2.0, -1.0], dtype=F64)
    b = torch.tensor([0.5, 3.0], dtype=F64)
    x0 = torch.randn(3, 2, dtype=F64)

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return t[:, None] * a + b

    grid = uniform_grid(steps)
    fwd = Euler().integrate(field, x0, grid)
    # forward: x0 + b + a h^2 N(N-1)/2 = x0 + b + a (1 - h)/2
    h = 1.0 / steps
    torch.testing.assert_close(fwd.x, x0 + b + a * (1 - h) / 2, rtol=1e-12, atol=1e-12)
    back = Euler().integrate(field, fwd.x, grid.flip(0))
    torch.testing.assert_close(back.x, x0 - a * h, rtol=1e-12, atol=1e-12)


def test_euler_passes_grid_times_to_the_velocity() -> None:
    seen: list[torch.Tensor] = []

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return torch.zeros_like(x)

    grid = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F64)
    Euler().integrate(field, torch.zeros(3, 2, dtype=F64), grid)
    assert len(seen) == 3
    for t, expected in zip(seen, [0.0, 0.1, 0.5]):
        assert t.shape == (3,)
        torch.testing.assert_close(t, torch.full((3,), expected, dtype=F64))


@pytest.mark.parametrize("steps", [1, 5, 32])
def test_euler_nfe_and_trajectory(steps: int) -> None:
    x0 = torch.randn(4, 3)
    result = Euler().integrate(lambda x, t: torch.ones_like(x), x0, uniform_grid(steps), trajectory=True)
    assert result.nfe == steps
    assert result.trajectory is not None
    assert result.trajectory.shape == (steps + 1, 4, 3)
    assert torch.equal(result.trajectory[0], x0)
    assert torch.equal(result.trajectory[-1], result.x)
    assert result.times.shape == (steps + 1,)
    assert Euler().integrate(lambda x, t: x, x0, uniform_grid(steps)).trajectory is None


def test_euler_gradients() -> None:
    """O8: with v = a (a parameter), x1 = x0 + a so d sum(x1) / da = B per component;
    grad=False yields a result that is detached from a."""
    a = torch.tensor([0.5, -0.2], requires_grad=True)
    x0 = torch.randn(3, 2)
    field = lambda x, t: a.expand_as(x)  # noqa: E731
    grid = uniform_grid(8)

    detached = Euler().integrate(field, x0, grid)
    assert not detached.x.requires_grad
    with pytest.raises(RuntimeError):
        torch.autograd.grad(detached.x.sum(), a)

    result = Euler().integrate(field, x0, grid, grad=True)
    (g,) = torch.autograd.grad(result.x[0].sum(), a)  # one sample: d x1 / d a = identity
    torch.testing.assert_close(g, torch.ones(2))

    x0g = torch.randn(3, 2, requires_grad=True)
    out = Euler().integrate(lambda x, t: -x, x0g, grid, grad=True)
    (gx,) = torch.autograd.grad(out.x.sum(), x0g)  # d x1 / d x0 = (1 - h)^N
    torch.testing.assert_close(gx, torch.full((3, 2), (1 - 1 / 8) ** 8))


@pytest.mark.parametrize("grid", [[0.0, 0.5, 0.3, 1.0], [0.0, 0.5, 0.5, 1.0], [0.0], [], [1.0, 0.2, 0.4]])
def test_euler_rejects_invalid_grids(grid: list[float]) -> None:
    with pytest.raises(ValueError):
        Euler().integrate(lambda x, t: x, torch.zeros(2, 2), torch.tensor(grid, dtype=F64))


def test_uniform_grid() -> None:
    torch.testing.assert_close(uniform_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    torch.testing.assert_close(uniform_grid(2, 1.0, 0.0), torch.tensor([1.0, 0.5, 0.0], dtype=F64))
    with pytest.raises(ValueError):
        uniform_grid(0)


# --- the flow-matching objective -----------------------------------------------------------


class DiracVelocity(nn.Module):
    """The exact marginal velocity from N(0, I) at t = 0 to a Dirac at c at t = 1 along the
    linear path: x_t = (1 - t) x0 + t c, so x0 = (x_t - t c) / (1 - t) and
    u_t(x) = c - x0 = (c - x) / (1 - t)."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.register_buffer("c", c)
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        self.seen = dict(extras)
        assert t.shape == x.shape[:1]
        return (self.c - x) / (1 - t.reshape(-1, *[1] * (x.dim() - 1)))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _objective() -> FlowMatching:
    return FlowMatching.from_config(FlowMatchingConfig(), source=StandardNormal((3,)))


def test_flow_matching_loss_vanishes_for_exact_marginal_velocity() -> None:
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    x1 = c.expand(512, 3).clone()
    loss, logs = _objective().loss(DiracVelocity(c), {"x1": x1})
    assert loss.dim() == 0
    assert float(loss) < 1e-12
    assert isinstance(logs, dict)


def test_flow_matching_loss_of_zero_model_matches_closed_form() -> None:
    """v = 0: the loss is E mean_d (c_d - x0_d)^2 = mean_d c_d^2 + 1 for x0 ~ N(0, I)."""
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    n = 20_000
    loss, _ = _objective().loss(Zero(), {"x1": c.expand(n, 3).clone()})
    expected = float((c ** 2).mean()) + 1.0
    # per-sample value: mean over 3 dims of (c - z)^2; its std is below 3, so the SE is < 0.03
    assert abs(float(loss) - expected) < 0.1, (float(loss), expected)


def test_flow_matching_uses_given_x0_and_passes_extras() -> None:
    """With x0 in the batch the target is x1 - x0 exactly (a wrong model has a known loss)."""
    x0 = torch.randn(64, 3, dtype=F64)
    x1 = torch.randn(64, 3, dtype=F64)
    label = torch.arange(64)
    model = DiracVelocity(torch.zeros(3, dtype=F64))
    objective = FlowMatching.from_config(FlowMatchingConfig())  # no source: x0 must be used
    objective.loss(model, {"x0": x0, "x1": x1, "label": label})
    assert set(model.seen) == {"label"}
    assert torch.equal(model.seen["label"], label)
    loss, _ = objective.loss(Zero(), {"x0": x0, "x1": x1})
    torch.testing.assert_close(float(loss), float((x1 - x0).pow(2).mean()), rtol=1e-12, atol=0)


def test_flow_matching_without_x0_or_source_raises() -> None:
    with pytest.raises(ValueError, match="x0"):
        FlowMatching.from_config(FlowMatchingConfig()).loss(Zero(), {"x1": torch.randn(4, 3)})


def test_flow_matching_gradient_reaches_the_model() -> None:
    model = VelocityMLP(dim=3, width=16, depth=1, time_dim=8)
    loss, _ = _objective().loss(model, {"x1": torch.randn(32, 3)})
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_sampling_the_exact_dirac_field_lands_on_the_target(steps: int) -> None:
    """Euler on u = (c - x)/(1 - t) keeps x_n on the segment x0 -> c (the error shrinks by
    (1 - t_{n+1})/(1 - t_n) per step) and reaches c at the last step; never evaluates t = 1."""
    c = torch.tensor([3.0, -2.0, 1.0], dtype=F64)
    x0 = torch.randn(200, 3, dtype=F64)
    result = sample(DiracVelocity(c), x0, steps=steps, trajectory=True)
    assert result.nfe == steps
    torch.testing.assert_close(result.x, c.expand(200, 3), rtol=0, atol=1e-12)
    # the path is the straight constant-speed segment: straightness is zero
    assert straightness(result.trajectory) < 1e-20


# --- metrics: Wasserstein ------------------------------------------------------------------


def _assignment_wp(x: torch.Tensor, y: torch.Tensor, p: int) -> float:
    cost = torch.cdist(x.double(), y.double()).pow(p).numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean()) ** (1 / p)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_wasserstein_equals_optimal_assignment(p: int, dim: int) -> None:
    x = torch.randn(60, dim, dtype=F64)
    y = 1.5 * torch.randn(60, dim, dtype=F64) + 0.7
    assert wasserstein(x, y, p=p) == pytest.approx(_assignment_wp(x, y, p), rel=1e-9)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_1d_sorted_formula(p: int) -> None:
    x = torch.randn(300, 1, dtype=F64)
    y = torch.rand(300, 1, dtype=F64) * 4 - 1
    sorted_wp = float((x.flatten().sort().values - y.flatten().sort().values).abs().pow(p).mean()) ** (1 / p)
    assert wasserstein(x, y, p=p) == pytest.approx(sorted_wp, rel=1e-9)


def test_wasserstein_1d_unequal_sizes_matches_scipy() -> None:
    x = torch.randn(150, 1, dtype=F64)
    y = torch.randn(230, 1, dtype=F64) * 0.5 + 1.0
    ref = scipy.stats.wasserstein_distance(x.flatten().numpy(), y.flatten().numpy())
    assert wasserstein(x, y, p=1) == pytest.approx(ref, rel=1e-9)


def test_wasserstein_gaussian_samples_close_to_closed_form() -> None:
    """1-D N(0, 1) vs N(1, 3^2): W2^2 = (m1 - m2)^2 + (s1 - s2)^2 = 5. With 1500 points per
    side the empirical W2 fluctuates with std ~0.065 (simulated over 400 seeds, mostly through
    the sample moments), so the tolerance is 0.25 (~4 sigma). W1 would be ~1.79, W2^2 = 5."""
    g = torch.Generator().manual_seed(7)
    n = 1500
    x = torch.randn(n, 1, generator=g, dtype=F64)
    y = 1.0 + 3.0 * torch.randn(n, 1, generator=g, dtype=F64)
    assert abs(wasserstein(x, y) - math.sqrt(5.0)) < 0.25


def test_wasserstein_gelbrich_lower_bound() -> None:
    """For any two measures, W2^2 >= |m1 - m2|^2 + Bures(S1, S2)^2 with their own means and
    covariances, with equality for Gaussians; empirical Gaussian samples sit just above it."""
    g = torch.Generator().manual_seed(11)
    n = 400
    x = torch.randn(n, 2, generator=g, dtype=F64) @ torch.tensor([[1.0, 0.3], [0.0, 0.6]], dtype=F64)
    y = torch.randn(n, 2, generator=g, dtype=F64) * torch.tensor([2.0, 0.5], dtype=F64) + torch.tensor([1.0, -2.0], dtype=F64)
    xa, ya = x.numpy(), y.numpy()
    s1, s2 = np.cov(xa.T, bias=True), np.cov(ya.T, bias=True)
    r1 = scipy.linalg.sqrtm(s1).real
    bures2 = np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    bound = math.sqrt(float(np.sum((xa.mean(0) - ya.mean(0)) ** 2) + bures2))
    w2 = wasserstein(x, y)
    assert w2 >= bound - 1e-9
    assert w2 < bound + 0.3


def test_wasserstein_symmetric_and_permutation_invariant() -> None:
    x = torch.randn(80, 3, dtype=F64)
    y = torch.randn(50, 3, dtype=F64) + 1
    for p in (1, 2):
        assert wasserstein(x, y, p) == pytest.approx(wasserstein(y, x, p), rel=1e-10)
        assert wasserstein(x, y, p) == pytest.approx(wasserstein(x[torch.randperm(80)], y, p), rel=1e-10)


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_identical_sets_is_zero(p: int) -> None:
    """An exact LP on the |x - y|^p cost gives exactly 0 on identical sets (the diagonal
    cost is 0), for both a shared tensor and a copy. Points of moderate size (|x| ~ 20): a
    cost from |x|^2 + |y|^2 - 2 x.y leaves rounding ~1e-13 on the diagonal, i.e. ~3e-7 after
    the square root."""
    x = 3 * torch.randn(100, 2, dtype=F64) + 20
    assert wasserstein(x, x, p) < 1e-12
    assert wasserstein(x, x.clone(), p) < 1e-12


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_of_a_translate_is_the_shift(p: int) -> None:
    """W_p(mu, mu + v) = |v| for every p >= 1 (identity coupling; Jensen + the dual bound).
    The cloud sits at an offset of 1e4 with spread ~1 and |v| = 1e-3: a cost built from
    differences x - y is exact to ~1e-12 here; one built from |x|^2 + |y|^2 - 2 x.y loses
    about eps * |x|^2 = 2e-8 in each squared distance and cannot resolve |v|^2 = 1e-6."""
    x = torch.randn(100, 2, dtype=F64) + 1e4
    v = torch.tensor([6e-4, -8e-4], dtype=F64)
    assert wasserstein(x, x + v, p) == pytest.approx(1e-3, rel=1e-6)
    # and at the origin
    assert wasserstein(x - 1e4, x - 1e4 + v, p) == pytest.approx(1e-3, rel=1e-6)


def test_wasserstein_rejects_p_below_one() -> None:
    with pytest.raises(ValueError):
        wasserstein(torch.randn(3, 2), torch.randn(3, 2), p=0)


# --- metrics: straightness -----------------------------------------------------------------


def test_straightness_zero_for_straight_constant_speed() -> None:
    t = torch.linspace(0, 1, 51, dtype=F64)[:, None, None]
    x0, x1 = torch.randn(1, 6, 3, dtype=F64), torch.randn(1, 6, 3, dtype=F64)
    assert straightness((1 - t) * x0 + t * x1) < 1e-20


def test_straightness_straight_but_accelerating() -> None:
    """x(t) = t^2 v: S = int_0^1 |2 t v - v|^2 dt = |v|^2 / 3 (a straight line is not enough)."""
    n = 2000
    t = torch.linspace(0, 1, n + 1, dtype=F64)[:, None, None]
    v = torch.tensor([[[1.0, 2.0]]], dtype=F64)
    s = straightness(t ** 2 * v)
    # increments/dt equal x'(t) at the midpoints exactly for a quadratic; the midpoint rule on
    # (2t - 1)^2 then errs by -h^2/3, a relative error h^2 = 2.5e-7 here
    assert s == pytest.approx(5.0 / 3.0, rel=1e-6)


def test_straightness_quarter_circle() -> None:
    """x(t) = r (cos(pi t/2), sin(pi t/2)): |x'|^2 = r^2 pi^2/4, x1 - x0 = r(-1, 1) and
    int x'.(x1 - x0) dt = |x1 - x0|^2, so S = r^2 (pi^2/4 - 2); averaged over two radii."""
    n = 1000
    t = torch.linspace(0, 1, n + 1, dtype=F64)
    unit = torch.stack([torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)], dim=-1)  # (n+1, 2)
    radii = torch.tensor([1.0, 2.0], dtype=F64)
    traj = unit[:, None, :] * radii[None, :, None]  # (n+1, 2, 2)
    expected = float((radii ** 2).mean()) * (math.pi ** 2 / 4 - 2)
    assert straightness(traj) == pytest.approx(expected, rel=1e-5)
    # a coarse grid converges to the same value (second order in h)
    coarse = straightness(traj[::100])
    assert abs(coarse - expected) / expected < 0.05


def test_straightness_needs_two_states() -> None:
    with pytest.raises(ValueError):
        straightness(torch.zeros(1, 3, 2))


# --- nn blocks -----------------------------------------------------------------------------


def test_sinusoidal_embedding_shapes_and_values() -> None:
    emb = SinusoidalTimeEmbedding(16)
    t = torch.rand(7)
    out = emb(t)
    assert out.shape == (7, 16)
    # half sines, half cosines of the same angles: sin^2 + cos^2 = 1 per frequency
    torch.testing.assert_close(out[:, :8] ** 2 + out[:, 8:] ** 2, torch.ones(7, 8))
    assert emb(torch.tensor(0.3)).shape == (1, 16)
    # t = 0 gives zero angles: sines 0, cosines 1
    torch.testing.assert_close(emb(torch.zeros(1)), torch.cat([torch.zeros(1, 8), torch.ones(1, 8)], dim=1))
    # distinct times are distinguishable
    pair = emb(torch.tensor([0.2, 0.2001]))
    assert (pair[0] - pair[1]).abs().max() > 1e-3
    with pytest.raises(ValueError):
        SinusoidalTimeEmbedding(15)


def test_velocity_mlp_shapes_and_time_broadcast() -> None:
    model = VelocityMLP(dim=3, width=32, depth=2, time_dim=8)
    x = torch.randn(5, 3)
    out = model(x, torch.full((5,), 0.4))
    assert out.shape == (5, 3)
    torch.testing.assert_close(model(x, torch.tensor(0.4)), out)
    assert not torch.allclose(model(x, torch.tensor(0.1)), model(x, torch.tensor(0.9)))
    # samples are processed independently: one row alone gives the same output
    torch.testing.assert_close(model(x[2:3], torch.tensor([0.4])), out[2:3])
    with pytest.raises(ValueError):
        VelocityMLP(dim=3, depth=0)
