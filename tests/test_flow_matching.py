"""The objective and sampler objects: every registered component composes with every other,
from YAML-style specs, and classifier-free guidance reaches the model; the loss and the sampler
against the exact marginal velocity to a Dirac and closed-form losses of fixed models."""

from __future__ import annotations

import pytest
import torch

from flowsci.config import SampleConfig
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler, sample
from flowsci.metrics import straightness
from flowsci.nn.mlp import VelocityMLP
from flowsci.registry import COUPLINGS, GRIDS, LOSSES, PATHS, SOLVERS, TIME_SAMPLERS
from flowsci.sources import StandardNormal
from flowsci.spaces import Euclidean

F64 = torch.float64

# Components that need parameters to be built from a bare name get them here.
PARAMS = {"discrete": {"values": [0.0, 0.5]}, "polynomial": {"n": 2},
          "schrodinger_bridge": {"sigma": 0.5}}


def spec(name: str) -> dict:
    return {"name": name, **PARAMS.get(name, {})}


class Recorder(torch.nn.Module):
    """A small conditional velocity network that records the labels it was given."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 2)
        self.labels: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        if y is not None:
            self.labels.append(y)
        return self.net(torch.cat([x, t[:, None]], dim=1))


def _loss(**components) -> torch.Tensor:
    cfg = FlowMatchingConfig(**components)
    # the space goes only to the components that take one (the geodesic path)
    # and a feature network to the losses that take one (perceptual_huber)
    objective = FlowMatching.from_config(cfg, source=StandardNormal((2,)), space=Euclidean(2),
                                         features=lambda x: [x, x.tanh()])
    model = Recorder()
    loss, _ = objective.loss(model, {"x1": torch.randn(64, 2) + 3})
    loss.backward()
    assert torch.isfinite(loss) and model.net.weight.grad.abs().sum() > 0
    return loss


class DiracVelocity(torch.nn.Module):
    """The exact marginal velocity from N(0, I) at t = 0 to a Dirac at c at t = 1 along the
    linear path: x_t = (1 - t) x0 + t c, so x0 = (x_t - t c) / (1 - t) and
    u_t(x) = c - x0 = (c - x) / (1 - t). Records the conditions it was given."""

    def __init__(self, c):
        super().__init__()
        self.register_buffer("c", c)
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, x, t, **extras):
        self.seen = dict(extras)
        assert t.shape == x.shape[:1]
        return (self.c - x) / (1 - t.reshape(-1, *[1] * (x.dim() - 1)))


class Zero(torch.nn.Module):
    def forward(self, x, t, **extras):
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", PATHS.names())
def test_every_path_composes(name):
    _loss(path=spec(name))


@pytest.mark.parametrize("name", TIME_SAMPLERS.names())
def test_every_time_sampler_composes(name):
    _loss(timesteps=spec(name))


@pytest.mark.parametrize("name", [n for n in COUPLINGS.names() if not COUPLINGS.get(n).needs_batch_x0])
def test_every_coupling_composes(name):
    _loss(coupling=spec(name))


def test_paired_coupling_needs_stored_x0():
    objective = FlowMatching.from_config(FlowMatchingConfig(coupling="paired"), source=StandardNormal((2,)))
    with pytest.raises(ValueError, match="the batch needs an 'x0'"):
        objective.loss(Recorder(), {"x1": torch.randn(4, 2)})
    loss, _ = objective.loss(Recorder(), {"x0": torch.randn(4, 2), "x1": torch.randn(4, 2)})
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_composes(name):
    _loss(loss=spec(name))


def test_bad_component_parameters_name_the_key():
    with pytest.raises(ConfigError, match=r"'objective.timesteps.mu' is not a parameter of time "
                                          r"sampler 'logit_normal'"):
        FlowMatching.from_config(FlowMatchingConfig(timesteps={"name": "logit_normal", "mu": 1.0}))
    with pytest.raises(ConfigError, match=r"'objective.coupling': unknown coupling 'otx'"):
        FlowMatching.from_config(FlowMatchingConfig(coupling="otx"))


def test_condition_dropout_reaches_the_model():
    objective = FlowMatching.from_config(FlowMatchingConfig(p_uncond=0.25), source=StandardNormal((2,)),
                                         null={"y": -1})
    model = Recorder()
    torch.manual_seed(0)
    objective.loss(model, {"x1": torch.randn(8000, 2), "y": torch.randint(0, 3, (8000,))})
    assert abs((model.labels[0] == -1).float().mean().item() - 0.25) < 0.02
    with pytest.raises(ConfigError, match="p_uncond > 0 needs a conditional domain"):
        FlowMatching.from_config(FlowMatchingConfig(p_uncond=0.1))


@pytest.mark.parametrize("solver", SOLVERS.names())
@pytest.mark.parametrize("grid", GRIDS.names())
def test_every_solver_and_grid_sample_and_invert(solver, grid):
    """A velocity linear in t, v = a + b t, is integrated exactly by every method of order >= 2
    on any grid: x1 = x0 + a + b/2; inversion goes back (Euler: to within its step error)."""
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25])
    field = lambda x, t, **_: (a + b * t[:, None]).expand_as(x).to(x.dtype)  # noqa: E731
    sampler = Sampler.from_config(SampleConfig(solver=solver, steps=8, grid=grid))
    x0 = torch.randn(5, 2, dtype=torch.float64)
    forward = sampler.sample(field, x0)
    exact = x0 + a + b / 2
    tol = 0.1 if solver in ("euler", "ddim", "anchored") else 1e-6  # the first-order methods
    assert torch.allclose(forward.x, exact, atol=tol)
    back = sampler.invert(field, forward.x)
    assert torch.allclose(back.x, x0, atol=2 * tol)
    assert forward.nfe > 0 and forward.times[0] == 0 and forward.times[-1] == 1


# --- the loss and the sampler against exact fields -------------------------------------------


def _objective() -> FlowMatching:
    return FlowMatching.from_config(FlowMatchingConfig(), source=StandardNormal((3,)))


def test_loss_vanishes_for_the_exact_marginal_velocity():
    torch.manual_seed(0)
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    loss, logs = _objective().loss(DiracVelocity(c), {"x1": c.expand(512, 3).clone()})
    assert loss.dim() == 0
    assert float(loss) < 1e-12
    assert isinstance(logs, dict)


def test_loss_of_the_zero_model_matches_the_closed_form():
    """v = 0: the loss is E mean_d (c_d - x0_d)^2 = mean_d c_d^2 + 1 for x0 ~ N(0, I)."""
    torch.manual_seed(0)
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    loss, _ = _objective().loss(Zero(), {"x1": c.expand(20_000, 3).clone()})
    expected = float((c ** 2).mean()) + 1.0
    # per-sample value: mean over 3 dims of (c - z)^2, variance (4 c^2 + 2) summed / 9 = 3, so
    # the standard error is 0.012 and the tolerance 8 of them
    assert abs(float(loss) - expected) < 0.1, (float(loss), expected)


def test_loss_uses_the_given_x0_and_passes_the_other_keys_to_the_model():
    """With x0 in the batch the target is x1 - x0 exactly (a wrong model has a known loss)."""
    x0, x1 = torch.randn(64, 3, dtype=F64), torch.randn(64, 3, dtype=F64)
    label = torch.arange(64)
    model = DiracVelocity(torch.zeros(3, dtype=F64))
    objective = FlowMatching.from_config(FlowMatchingConfig())  # no source: x0 must be used
    objective.loss(model, {"x0": x0, "x1": x1, "label": label})
    assert set(model.seen) == {"label"}
    assert torch.equal(model.seen["label"], label)
    loss, _ = objective.loss(Zero(), {"x0": x0, "x1": x1})
    torch.testing.assert_close(float(loss), float((x1 - x0).pow(2).mean()), rtol=1e-12, atol=0)


def test_loss_without_x0_or_source_raises():
    with pytest.raises(ValueError, match="no 'x0' and the objective has no source"):
        FlowMatching.from_config(FlowMatchingConfig()).loss(Zero(), {"x1": torch.randn(4, 3)})


def test_loss_gradient_reaches_every_parameter_of_the_model():
    torch.manual_seed(0)
    model = VelocityMLP(dim=3, width=16, depth=1, time_dim=8)
    loss, _ = _objective().loss(model, {"x1": torch.randn(32, 3)})
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_sampling_the_exact_dirac_field_lands_on_the_target(steps):
    """Euler on u = (c - x)/(1 - t) keeps x_n on the segment x0 -> c (the error shrinks by
    (1 - t_{n+1})/(1 - t_n) per step) and reaches c at the last step; never evaluates t = 1."""
    c = torch.tensor([3.0, -2.0, 1.0], dtype=F64)
    x0 = torch.randn(200, 3, dtype=F64)
    result = sample(DiracVelocity(c), x0, steps=steps, trajectory=True)
    assert result.nfe == steps
    torch.testing.assert_close(result.x, c.expand(200, 3), rtol=0, atol=1e-12)
    # the path is the straight constant-speed segment: straightness is zero
    assert straightness(result.trajectory) < 1e-20
