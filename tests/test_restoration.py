"""Oracle tests of PMRF (flowsci.restoration) and the concat-conditioned model (flowsci.nn.concat).

The Gaussian toy X ~ N(mu, Sx) in R^4, Y = H X + s N(0, I) has every quantity of the PMRF paper
in closed form: the posterior mean E[X|Y] = mu + G (Y - H mu), G = Sx H^T (H Sx H^T + s^2 I)^-1,
the MMSE tr(Sx - G H Sx), the law N(mu, G H Sx) of X*, W2 between Gaussians, and the rectified
flow of the jointly Gaussian coupling (X* + sigma_s eps, X), whose velocity E[X - Z0 | Z_t] is
linear in Z_t (integrated here by scipy's solve_ivp).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate import solve_ivp
from torch import nn

from flowsci.nn.concat import ConcatConditioned
from flowsci.nn.mlp import VelocityMLP
from flowsci.nn.unet import UNet
from flowsci.registry import build_model
from flowsci.restoration import PosteriorMean, fit_flow, fit_regression, pmrf_source, restore

F64 = torch.float64
D = 4
SIGMA_S = 0.1  # PMRF's source noise for most tasks


@dataclass
class GaussianToy:
    """Closed forms of the toy for an operator H (m, 4) and noise s; float64 tensors."""

    mu: torch.Tensor
    sx: torch.Tensor
    h: torch.Tensor
    s: float

    @property
    def gain(self) -> torch.Tensor:
        """G (4, m): E[X|Y] = mu + G (Y - H mu)."""
        noise = self.s**2 * torch.eye(self.h.shape[0], dtype=F64)
        return self.sx @ self.h.T @ torch.linalg.inv(self.h @ self.sx @ self.h.T + noise)

    @property
    def offset(self) -> torch.Tensor:
        return self.mu - self.gain @ self.h @ self.mu

    @property
    def posterior_mean_cov(self) -> torch.Tensor:
        """Cov(X*) = G H Sx (shrunk: Sx - Cov(X*) is the posterior covariance)."""
        return self.gain @ self.h @ self.sx

    @property
    def mmse(self) -> float:
        return float(torch.trace(self.sx - self.posterior_mean_cov))

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, 4), y (n, m)) in float32."""
        x = self.mu + torch.randn(n, D, generator=generator, dtype=F64) @ torch.linalg.cholesky(self.sx).T
        y = x @ self.h.T + self.s * torch.randn(n, self.h.shape[0], generator=generator, dtype=F64)
        return x.float(), y.float()


def _toy(h: torch.Tensor, s: float) -> GaussianToy:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, D, generator=g, dtype=F64)
    sx = a @ a.T / D + 0.2 * torch.eye(D, dtype=F64)  # non-diagonal
    return GaussianToy(mu=torch.tensor([1.0, -0.5, 0.3, 0.0], dtype=F64), sx=sx, h=h, s=s)


def _w2_squared(s0: np.ndarray, s1: np.ndarray) -> float:
    """W2^2 between Gaussians of equal means: tr(S0 + S1 - 2 (S1^1/2 S0 S1^1/2)^1/2)."""
    r = np.real(scipy.linalg.sqrtm(s1))
    return float(np.trace(s0 + s1 - 2 * np.real(scipy.linalg.sqrtm(r @ s0 @ r))))


def _rectified_flow_mse(toy: GaussianToy, sigma_s: float) -> float:
    """E||X - Z1||^2 of the exact rectified flow from Z0 = X* + sigma_s eps to X (centred: the
    means agree, so the velocity has no constant part). Cov(Z_t) and Cov(X - Z0, Z_t) give
    E[X - Z0 | Z_t = z] = C_vt C_tt^-1 z; the flow map is linear, Z1 = M Z0."""
    s00 = (toy.posterior_mean_cov + sigma_s**2 * torch.eye(D, dtype=F64)).numpy()
    s11, s01 = toy.sx.numpy(), toy.posterior_mean_cov.numpy()  # Cov(X*, X) = Cov(X*)

    def velocity(t: float, z: np.ndarray) -> np.ndarray:
        c_tt = (1 - t) ** 2 * s00 + t**2 * s11 + t * (1 - t) * (s01 + s01.T)
        c_vt = (1 - t) * s01.T + t * s11 - (1 - t) * s00 - t * s01
        return c_vt @ np.linalg.solve(c_tt, z)

    m = np.stack([solve_ivp(velocity, (0.0, 1.0), e, rtol=1e-10, atol=1e-12).y[:, -1] for e in np.eye(D)], 1)
    return float(np.trace(s11 - m @ s01 - s01.T @ m.T + m @ s00 @ m.T))


@pytest.fixture(scope="module")
def blurred() -> dict:
    """A non-square operator (3 × 4, rank 3: X* lives on a 3-D affine subspace), training and test
    draws, and a linear posterior-mean model fitted by fit_regression."""
    h = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -0.5], [0.0, 1.0, 0.0, 1.0]], dtype=F64)
    toy = _toy(h, s=1.0)
    g = torch.Generator().manual_seed(1)
    x, y = toy.draw(4000, g)
    x_test, y_test = toy.draw(10000, g)
    torch.manual_seed(0)
    linear = nn.Linear(3, D)
    losses = fit_regression(linear, y, x, steps=200, batch_size=1000, lr=0.05, seed=0, progress=False)
    return {"toy": toy, "x": x, "y": y, "x_test": x_test, "y_test": y_test, "linear": linear,
            "losses": losses}


def test_regression_recovers_the_closed_form_posterior_mean(blurred):
    toy, linear = blurred["toy"], blurred["linear"]
    # Monte-Carlo tolerance: least squares on 4000 draws has coefficient errors ~ 0.01
    assert torch.allclose(linear.weight.double(), toy.gain, atol=0.05)
    assert torch.allclose(linear.bias.double(), toy.offset, atol=0.05)
    with torch.no_grad():
        predicted = linear(blurred["y_test"]).double()
    exact = toy.offset + blurred["y_test"].double() @ toy.gain.T
    assert (predicted - exact).square().sum(1).mean().sqrt() < 0.05
    mse = float((predicted - blurred["x_test"].double()).square().sum(1).mean())
    assert mse == pytest.approx(toy.mmse, rel=0.05)
    assert np.mean(blurred["losses"][-10:]) * D == pytest.approx(toy.mmse, rel=0.1)  # per-entry loss


def test_pmrf_recovers_the_data_law_at_about_the_optimal_mse(blurred):
    toy, linear = blurred["toy"], blurred["linear"]
    with torch.no_grad():
        estimates, estimates_test = linear(blurred["y"]), linear(blurred["y_test"])
    torch.manual_seed(1)
    flow = VelocityMLP(D, width=64, depth=3)
    flow = fit_flow(flow, pmrf_source(estimates, SIGMA_S), blurred["x"], steps=600, batch_size=256, lr=3e-3,
                    seed=0, progress=False)
    rows = torch.arange(len(estimates_test))
    z0 = pmrf_source(estimates_test, SIGMA_S)(rows, torch.Generator().manual_seed(5))
    restored = restore(flow, z0, steps=25).double()

    shrunk = torch.linalg.norm(toy.posterior_mean_cov - toy.sx)
    assert torch.linalg.norm(torch.cov(restored.T) - toy.sx) < 0.25 * shrunk
    assert torch.allclose(restored.mean(0), toy.mu, atol=0.1)

    mse = float((restored - blurred["x_test"].double()).square().sum(1).mean())
    optimal = toy.mmse + _w2_squared(toy.posterior_mean_cov.numpy(), toy.sx.numpy())
    posterior_sampling = 2 * toy.mmse
    assert optimal < 0.7 * posterior_sampling  # the toy separates the two
    assert mse < 0.8 * posterior_sampling
    assert mse == pytest.approx(optimal, rel=0.1)
    assert mse == pytest.approx(_rectified_flow_mse(toy, SIGMA_S), rel=0.1)


def test_posterior_mean_starts_as_the_identity_and_fits_a_masked_operator():
    lifted = torch.randn(2, 1, 8, 8)
    for net in ({"name": "unet", "params": {"width": 8, "multipliers": [1]}},
                build_model("unet", {"channels": 1, "width": 8, "multipliers": [1]})):
        f = PosteriorMean(net, channels=1) if isinstance(net, dict) else PosteriorMean(net)
        assert torch.equal(f(lifted), lifted)

    # masked operator with zero fill: y_lifted = (x1, x2, x3, 0) + noise on the kept entries
    toy = _toy(torch.eye(D, dtype=F64)[:3], s=0.5)
    x, y = toy.draw(4000, torch.Generator().manual_seed(2))
    x_test, y_test = toy.draw(10000, torch.Generator().manual_seed(3))

    def lift(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, torch.zeros(len(v), 1)], dim=1)

    torch.manual_seed(0)
    model = PosteriorMean({"name": "mlp_velocity", "params": {"width": 32, "depth": 2}}, dim=D)
    fit_regression(model, lift(y), x, steps=300, batch_size=500, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():
        mse = float((model(lift(y_test)) - x_test).square().sum(1).mean())
    assert toy.mmse < 0.5 * float(torch.trace(toy.sx))  # the observation carries information
    assert mse == pytest.approx(toy.mmse, rel=0.1)


def test_posterior_mean_rejects_a_bad_spec():
    with pytest.raises(ValueError, match="net must be"):
        PosteriorMean({"params": {}})
    with pytest.raises(ValueError, match="disagrees"):
        PosteriorMean({"name": "unet", "params": {"channels": 3}}, channels=1)
    with pytest.raises(ValueError, match="not a built model"):
        PosteriorMean(nn.Linear(2, 2), channels=1)


class _Recorder(nn.Module):
    """v(x, t, observation) = A x; records its inputs."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.detach().clone(), t.clone(), observation.clone()))
        return self.linear(x)


def test_fit_flow_draws_fresh_sources_for_the_steps_rows():
    n, steps, batch = 50, 6, 8
    codes = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)  # row i -> (i, i)
    draws: list[tuple[torch.Tensor, torch.Tensor]] = []
    noisy = pmrf_source(torch.zeros(n, 2), 1.0)

    def sources(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = noisy(rows, generator)
        draws.append((rows.clone(), noise))
        return codes[rows] + 1e-3 * noise

    model = _Recorder()
    observation = -codes[:, :1]
    # at t = 0 the linear path's x_t is the source itself, so the model sees each step's x0
    fit_flow(model, sources, torch.randn(n, 2), conditions={"observation": observation}, steps=steps,
             batch_size=batch, lr=1e-3, seed=0, timesteps={"name": "discrete", "values": [0.0]}, ema=0.0,
             progress=False)
    assert len(draws) == len(model.calls) == steps
    for (rows, noise), (x, t, obs) in zip(draws, model.calls):
        assert rows.shape == (batch,) and len(set(rows.tolist())) == batch  # without replacement
        assert 0 <= rows.min() <= rows.max() < n
        assert torch.equal(t, torch.zeros(batch))
        assert torch.allclose(x, codes[rows] + 1e-3 * noise)
        assert torch.equal(obs, observation[rows])
    noises = torch.cat([noise for _, noise in draws])
    assert len(torch.unique(noises[:, 0])) == steps * batch  # no step reuses another's noise
    assert not all(torch.equal(draws[0][0], rows) for rows, _ in draws[1:])


def test_fits_are_deterministic_for_a_seed_and_leave_the_global_stream_alone():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    initial = VelocityMLP(2, width=16, depth=1)

    def run(seed: int) -> nn.Module:
        return fit_flow(copy.deepcopy(initial), pmrf_source(torch.zeros_like(x), 1.0), x, steps=5,
                        batch_size=16, lr=1e-2, seed=seed, progress=False)

    state = torch.get_rng_state()
    first, again, other = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))

    linear = nn.Linear(2, 2)
    fits = [copy.deepcopy(linear) for _ in range(2)]
    histories = [fit_regression(m, x, x.flip(1), steps=5, batch_size=16, lr=1e-2, seed=4, progress=False)
                 for m in fits]
    assert histories[0] == histories[1] and torch.equal(fits[0].weight, fits[1].weight)


def test_fit_flow_returns_the_ema_and_rejects_bad_arguments():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    model = VelocityMLP(2, width=8, depth=1)
    averaged = fit_flow(model, pmrf_source(x, 0.1), x, steps=3, batch_size=8, lr=1e-2, seed=0, progress=False)
    assert averaged is not model and not averaged.training
    # three updates with the warm-up decay min(0.999, (1 + n) / (10 + n)) differ from the last weights
    assert not torch.equal(averaged.net[0].weight, model.net[0].weight)
    source = pmrf_source(x, 0.1)
    with pytest.raises(ValueError, match="ema"):
        fit_flow(model, source, x, steps=1, batch_size=8, lr=1e-2, seed=0, ema=1.0, progress=False)
    with pytest.raises(ValueError, match="observation must have one row per target"):
        fit_flow(model, source, x, conditions={"observation": x[:5]}, steps=1, batch_size=8, lr=1e-2, seed=0,
                 progress=False)
    with pytest.raises(ValueError, match="sources returned shape"):
        fit_flow(model, pmrf_source(x[:, :1], 0.1), x, steps=1, batch_size=8, lr=1e-2, seed=0, progress=False)
    with pytest.raises(ValueError, match="steps and batch_size"):
        fit_regression(nn.Linear(2, 2), x, x, steps=0, batch_size=8, lr=1e-2, seed=0, progress=False)
    with pytest.raises(ValueError, match="sigma_s"):
        pmrf_source(x, -0.1)


def test_pmrf_source_is_the_estimate_plus_scaled_noise():
    estimates = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    rows = torch.tensor([1, 0]).repeat(20000)
    z0 = pmrf_source(estimates, 0.3)(rows, torch.Generator().manual_seed(0))
    noise = z0 - estimates[rows]
    assert noise.mean().abs() < 0.01 and noise.std() == pytest.approx(0.3, rel=0.02)


def test_restore_integrates_from_the_source_with_the_conditions():
    # v = observation (constant in x and t): x(1) = x0 + observation for any solver
    def velocity(x: torch.Tensor, t: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        return observation * (1.0 + 0.0 * x)

    x0, observation = torch.randn(3, 2), torch.randn(3, 2)
    for solver in ("euler", "heun"):
        out = restore(velocity, x0, steps=4, solver=solver, observation=observation)
        assert torch.allclose(out, x0 + observation, atol=1e-6)


def _concat(channels: int = 2, observation_channels: int = 1) -> ConcatConditioned:
    return ConcatConditioned({"name": "unet", "params": {"width": 8, "multipliers": [1, 2], "heads": 2}},
                             observation_channels=observation_channels, channels=channels)


def test_concat_conditioned_uses_the_observation():
    torch.manual_seed(0)
    model = _concat()
    assert model.backbone.stem.in_channels == 3 and model.backbone.head[-1].out_channels == 2
    x, t = torch.randn(4, 2, 8, 8), torch.rand(4)
    observations = torch.randn(2, 4, 1, 8, 8)
    assert torch.equal(model(x, t, observation=observations[0]), torch.zeros(4, 2, 8, 8))  # zero head

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(x, t, observation=observations[0]) - torch.randn(4, 2, 8, 8)).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        first, second = (model(x, t, observation=o) for o in observations)
    assert first.shape == (4, 2, 8, 8)
    assert (first - second).abs().max() > 1e-4


def test_concat_conditioned_shape_errors_are_clear():
    model = _concat()
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)
    with pytest.raises(ValueError, match="needs the condition 'observation'"):
        model(x, t)
    for shape in [(2, 2, 8, 8), (2, 1, 4, 4), (3, 1, 8, 8)]:
        with pytest.raises(ValueError, match=r"observation must have shape \(2, 1, 8, 8\)"):
            model(x, t, observation=torch.randn(shape))
    with pytest.raises(ValueError, match=r"x must be \(B, 2, H, W\)"):
        model(torch.randn(2, 3, 8, 8), t, observation=torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="backbone.params.channels is set by concat_conditioned"):
        ConcatConditioned({"name": "unet", "params": {"channels": 3}}, observation_channels=1)
    with pytest.raises(ValueError, match="has no out_channels"):
        ConcatConditioned({"name": "mlp_velocity", "params": {"dim": 4}}, observation_channels=1)


def test_concat_conditioned_is_a_registered_model():
    model = build_model("concat_conditioned", {"backbone": {"name": "unet", "params": {"width": 8}},
                                               "observation_channels": 2, "channels": 1})
    assert isinstance(model, ConcatConditioned)
    out = model(torch.randn(1, 1, 6, 6), torch.rand(1), observation=torch.randn(1, 2, 6, 6))
    assert out.shape == (1, 1, 6, 6)


def test_unet_out_channels():
    small = {"width": 8, "multipliers": [1, 2], "heads": 2}
    out = UNet(channels=3, out_channels=1, **small)(torch.randn(2, 3, 8, 8), torch.rand(2))
    assert out.shape == (2, 1, 8, 8)
    # parameter counts of the UNet before out_channels existed (recorded from that version)
    assert sum(p.numel() for p in UNet(channels=1, **small).parameters()) == 35233
    assert sum(p.numel() for p in UNet(channels=3, width=8, multipliers=[1, 2, 2], blocks=2, attention=False,
                                       num_classes=10).parameters()) == 80275
    default, explicit = UNet(channels=3, **small), UNet(channels=3, out_channels=3, **small)
    assert ({k: v.shape for k, v in default.state_dict().items()}
            == {k: v.shape for k, v in explicit.state_dict().items()})
    with pytest.raises(ValueError, match="out_channels"):
        UNet(channels=1, out_channels=0)
