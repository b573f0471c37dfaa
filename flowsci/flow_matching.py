"""The flow-matching objective, composed from a path, a time sampler, a coupling and a loss."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from flowsci.config import ObjectiveConfig
from flowsci.couplings import Coupling
from flowsci.losses import Loss
from flowsci.paths import AffinePath
from flowsci.plugins import COUPLINGS, LOSSES, PATHS, SOLVERS, TIME_SAMPLERS
from flowsci.solvers import Solver, SolverResult, VelocityFn, uniform_grid
from flowsci.sources import Source
from flowsci.timesteps import TimeSampler


@dataclasses.dataclass
class FlowMatchingConfig(ObjectiveConfig):
    """YAML ``objective:`` section of flow matching; each entry is a registered name or
    a mapping ``{name: ..., <parameters>}``."""

    path: str | dict[str, Any] = "linear"
    time_sampler: str | dict[str, Any] = "uniform"
    coupling: str | dict[str, Any] = "independent"
    loss: str | dict[str, Any] = "mse"


class FlowMatching:
    """Regress ``model(x_t, t, **extras)`` on the path velocity dx_t.

    A batch is a dict with the target ``x1`` (B, *D), optionally the source ``x0`` (otherwise
    drawn from ``source``), and any per-sample extras (conditions), which are passed to the
    model as keyword arguments and travel with x1 through the coupling.
    """

    def __init__(self, path: AffinePath, time_sampler: TimeSampler, coupling: Coupling,
                 loss: Loss, source: Source | None = None):
        self.path, self.time_sampler, self.coupling, self.loss_fn = path, time_sampler, coupling, loss
        self.source = source

    @classmethod
    def from_config(cls, cfg: FlowMatchingConfig, source: Source | None = None) -> FlowMatching:
        """Build each component from its registry."""
        return cls(path=PATHS.create(cfg.path, "objective.path"),
                   time_sampler=TIME_SAMPLERS.create(cfg.time_sampler, "objective.time_sampler"),
                   coupling=COUPLINGS.create(cfg.coupling, "objective.coupling"),
                   loss=LOSSES.create(cfg.loss, "objective.loss"),
                   source=source)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = batch["x1"]
        x0 = batch.get("x0")
        if x0 is None:
            if self.source is None:
                raise ValueError("the batch has no 'x0' and the objective has no source distribution")
            x0 = self.source.sample(x1.shape[0], device=x1.device).to(x1.dtype)
        extras = {k: v for k, v in batch.items() if k not in ("x0", "x1")}
        x0, x1, extras = self.coupling(x0, x1, extras)
        t = self.time_sampler(x1.shape[0], device=x1.device).to(x1.dtype)
        sample = self.path.sample(x0, x1, t)
        per_sample = self.loss_fn(model(sample.x_t, t, **extras), sample.dx_t, t)
        return per_sample.mean(), {}


def velocity_of(model: torch.nn.Module, **extras: torch.Tensor) -> VelocityFn:
    """The model as an ODE right-hand side v(x, t) with fixed conditions."""
    return lambda x, t: model(x, t, **extras)


def sample(model: torch.nn.Module, x0: torch.Tensor, *, steps: int = 100,
           solver: Solver | str = "euler", trajectory: bool = False,
           **extras: torch.Tensor) -> SolverResult:
    """Transport source samples x0 (B, *D) to t = 1 with ``steps`` solver steps."""
    solver = SOLVERS.create(solver, "solver") if isinstance(solver, str) else solver
    return solver.integrate(velocity_of(model, **extras), x0, uniform_grid(steps), trajectory=trajectory)
