"""The objective and sampler objects: every registered component composes with every other,
from YAML-style specs, and classifier-free guidance reaches the model."""

from __future__ import annotations

import pytest
import torch

from flowsci.config import SampleConfig
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.plugins import COUPLINGS, GRIDS, LOSSES, PATHS, SOLVERS, TIME_SAMPLERS
from flowsci.sources import StandardNormal

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
    objective = FlowMatching.from_config(cfg, source=StandardNormal((2,)))
    model = Recorder()
    loss, _ = objective.loss(model, {"x1": torch.randn(64, 2) + 3})
    loss.backward()
    assert torch.isfinite(loss) and model.net.weight.grad.abs().sum() > 0
    return loss


@pytest.mark.parametrize("name", PATHS.names())
def test_every_path_composes(name):
    _loss(path=spec(name))


@pytest.mark.parametrize("name", TIME_SAMPLERS.names())
def test_every_time_sampler_composes(name):
    _loss(timesteps=spec(name))


@pytest.mark.parametrize("name", [n for n in COUPLINGS.names() if n != "paired"])
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
    with pytest.raises(ConfigError, match=r"'objective.timesteps.mu' is not a parameter of time sampler 'logit_normal'"):
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
    tol = 0.1 if solver == "euler" else 1e-6
    assert torch.allclose(forward.x, exact, atol=tol)
    back = sampler.invert(field, forward.x)
    assert torch.allclose(back.x, x0, atol=2 * tol)
    assert forward.nfe > 0 and forward.times[0] == 0 and forward.times[-1] == 1
