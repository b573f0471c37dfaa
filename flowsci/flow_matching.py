"""The flow-matching objective and the sampler: the two objects a domain composes.

:class:`FlowMatching` composes a path, a coupling, a timestep sampler, a loss, optional
condition dropout (classifier-free guidance) and an optional flow-guided distillation term
(:mod:`flowsci.distillation`); :class:`Sampler` composes a solver, a time grid
and a guidance weight. Both are built from YAML (``objective:`` and ``sample:`` sections)
through the registries, or directly in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowsci.config import ObjectiveConfig, SampleConfig
from flowsci.couplings import Coupling
from flowsci.distillation import FlowGuidanceConfig, FlowGuidedDistillation
from flowsci.grids import reverse
from flowsci.guidance import ConditionDropout, GuidedVelocity
from flowsci.losses import Loss
from flowsci.paths.geodesic import RescheduledVelocity
from flowsci.registry import COUPLINGS, GRIDS, LOSSES, PATHS, SOLVERS, TIME_SAMPLERS
from flowsci.solvers import Solver, SolverResult, VelocityFn
from flowsci.sources import Source
from flowsci.spaces import Euclidean, Space
from flowsci.timesteps import TimeSampler


@dataclasses.dataclass
class FlowMatchingConfig(ObjectiveConfig):
    """YAML ``objective:`` section of flow matching; each component is a registered name or a
    mapping ``{name: ..., <parameters>}`` (see ``flowsci list``)."""

    path: str | dict[str, Any] = "linear"
    timesteps: str | dict[str, Any] = "uniform"
    coupling: str | dict[str, Any] = "independent"
    loss: str | dict[str, Any] = "mse"
    p_uncond: float = 0.0            # condition dropout for classifier-free guidance
    # one-step distillation with an online teacher term (SlimFlow's FGD), e.g.
    # {teacher: RUN_DIR, weight: 1.0, t_min: 0.2, t_max: 0.8, guidance: 1.0}; null: none
    flow_guidance: FlowGuidanceConfig | None = None


class FlowMatching:
    """Regress ``model(x_t, t, **cond)`` on the path velocity dx_t.

    A batch is a dict with the target ``x1`` (B, *D), optionally the source ``x0`` (otherwise
    drawn from ``source``), and per-sample conditions (B, ...) passed to the model as keyword
    arguments; conditions travel with x1 through the coupling.

    With ``flow_guidance`` the loss adds its weighted FGD term on fresh source noise (one-step
    distillation, :mod:`flowsci.distillation`); the batch's conditions (after condition
    dropout) go with the noise.
    """

    def __init__(self, path: Any, timesteps: TimeSampler, coupling: Coupling, loss: Loss,
                 source: Source | None = None, dropout: ConditionDropout | None = None,
                 flow_guidance: FlowGuidedDistillation | None = None):
        if flow_guidance is not None and source is None:
            raise ValueError("flow-guided distillation draws fresh noise: it needs the source")
        if coupling.solves_plan and hasattr(coupling, "set_progress"):
            # pairing ahead (flowsci.pairing) pairs batch k + 1 while step k runs
            raise ValueError(f"{type(coupling).__name__} follows the training progress, so it must "
                             "pair inline: solves_plan must be False")
        self.path, self.timesteps, self.coupling, self.loss_fn = path, timesteps, coupling, loss
        self.source, self.dropout, self.flow_guidance = source, dropout, flow_guidance

    @classmethod
    def from_config(cls, cfg: FlowMatchingConfig, source: Source | None = None,
                    null: Mapping[str, float | int] | None = None,
                    space: Space | None = None, features: Callable | None = None) -> FlowMatching:
        """Build each component from its registry; ``null`` gives the null value of each
        condition for classifier-free guidance (needed when ``cfg.p_uncond > 0``). ``space``
        (default: Euclidean) goes to the components that take one (the geodesic path, the
        geodesic OT cost); on a non-Euclidean space a path that cannot take it is an error.
        ``features``: the domain's feature network, for a loss that takes one (``perceptual_huber``).
        ``cfg.flow_guidance`` loads its teacher here (Euclidean spaces only)."""
        from flowsci.errors import ConfigError

        dropout = None
        if cfg.p_uncond > 0:
            if not null:
                raise ConfigError("objective.p_uncond > 0 needs a conditional domain (one that "
                                  "declares the null value of its conditions)")
            dropout = ConditionDropout(cfg.p_uncond, null)
        on_space = {"space": space} if space is not None else {}
        path = PATHS.create(cfg.path, "objective.path", optional=on_space)
        if (space is not None and not isinstance(space, Euclidean)
                and getattr(path, "space", None) is not space):
            raise ConfigError(f"objective.path {cfg.path!r} is a Euclidean path; on {space!r} use "
                              "'geodesic' ({name: geodesic, schedule: linear|exp})")
        flow_guidance = None
        if cfg.flow_guidance is not None:
            if source is None:
                raise ConfigError("objective.flow_guidance draws fresh noise from the source, and this "
                                  "domain gives flow matching none")
            if space is not None and not isinstance(space, Euclidean):
                raise ConfigError(f"objective.flow_guidance steps along straight lines (x' = z + t' v), "
                                  f"which leave {space!r}; it needs a Euclidean domain")
            flow_guidance = FlowGuidedDistillation.from_config(cfg.flow_guidance, null=null)
        return cls(path=path,
                   timesteps=TIME_SAMPLERS.create(cfg.timesteps, "objective.timesteps"),
                   coupling=COUPLINGS.create(cfg.coupling, "objective.coupling", optional=on_space),
                   loss=LOSSES.create(cfg.loss, "objective.loss",
                                      optional={"features": features} if features is not None else None),
                   source=source, dropout=dropout, flow_guidance=flow_guidance)

    @property
    def costly_pairing(self) -> bool:
        """True when the coupling solves a transport problem per batch: the Trainer then pairs
        each batch ahead of its step (:mod:`flowsci.pairing`)."""
        return self.coupling.solves_plan

    def set_progress(self, step: int, total: int) -> None:
        """The training step about to run (0-based) of ``total``, called by the Trainer before
        each step; passed on to a coupling that follows it (annealing reflow)."""
        if hasattr(self.coupling, "set_progress"):
            self.coupling.set_progress(step, total)

    def pair(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
        """The batch's pairs: x0 (B, *D) drawn from the source when the batch has none, then
        coupled with x1 (B, *D); conditions (B, ...) follow their x1. Random numbers come from
        ``generator`` (torch's global stream when None)."""
        x1 = batch["x1"]
        x0 = batch.get("x0")
        if x0 is None:
            if self.coupling.needs_batch_x0:
                raise ValueError(f"{type(self.coupling).__name__} pairs stored (x0, x1): the batch needs "
                                 "an 'x0' (e.g. data.pairs = a reflow pair store)")
            if self.source is None:
                raise ValueError("the batch has no 'x0' and the objective has no source distribution")
            x0 = self.source.sample(x1.shape[0], generator=generator, device=x1.device).to(x1.dtype)
        cond = {k: v for k, v in batch.items() if k not in ("x0", "x1")}
        x0, x1, cond = self.coupling(x0, x1, cond, generator)
        return {"x0": x0, "x1": x1, **cond}

    def paired_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a batch that :meth:`pair` has already paired; with flow guidance, plus
        its weighted FGD term (logs: ``pair_loss``, ``fgd_loss``)."""
        x0, x1 = batch["x0"], batch["x1"]
        cond = {k: v for k, v in batch.items() if k not in ("x0", "x1")}
        if self.dropout is not None:
            cond = self.dropout(cond)
        t = self.timesteps(x1.shape[0], device=x1.device).to(x1.dtype)
        sample = self.path.sample(x0, x1, t)
        t = sample.t  # a path may move t off a singular end point by one machine epsilon
        pred = model(sample.x_t, t, **cond)
        context = {"x_t": sample.x_t, "path": self.path} if self.loss_fn.needs_path else {}
        loss = self.loss_fn(pred, sample.dx_t, t, **context).mean()
        if self.flow_guidance is None:
            return loss, {}
        z = self.source.sample(x1.shape[0], device=x1.device).to(x1.dtype)
        fgd = self.flow_guidance.loss(model, z, cond, self.loss_fn, self.path).mean()
        logs = {"pair_loss": float(loss.detach()), "fgd_loss": float(fgd.detach())}
        return loss + self.flow_guidance.weight * fgd, logs

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Pair the batch (:meth:`pair`, global random stream), then :meth:`paired_loss`."""
        return self.paired_loss(model, self.pair(batch))


class Sampler:
    """Transport source samples to t = 1 (``sample``) or data back to t = 0 (``invert``), on
    ``space`` when one is given (the solver then keeps the state on it)."""

    def __init__(self, solver: Solver, steps: int = 100, grid: Callable[[int], torch.Tensor] | None = None,
                 guidance: float = 1.0, null: Mapping[str, float | int] | None = None,
                 space: Space | None = None, schedule: str | dict | list | None = None):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if schedule is not None and space is None:
            raise ValueError("a sampling schedule needs the space (its factors): pass space=...")
        self.solver, self.steps, self.guidance, self.space = solver, steps, guidance, space
        self.schedule = schedule
        self.grid = grid if grid is not None else GRIDS.create("uniform", "sample.grid")
        self.null = dict(null or {})

    @classmethod
    def from_config(cls, cfg: SampleConfig, null: Mapping[str, float | int] | None = None,
                    space: Space | None = None) -> Sampler:
        from flowsci.errors import ConfigError

        if cfg.schedule is not None and space is None:
            raise ConfigError("sample.schedule needs a domain on a space with factors (e.g. SE(3)^N); "
                              "this domain samples in Euclidean space")
        return cls(solver=SOLVERS.create(cfg.solver, "sample.solver"), steps=cfg.steps,
                   grid=GRIDS.create(cfg.grid, "sample.grid"), guidance=cfg.guidance, null=null, space=space,
                   schedule=cfg.schedule)

    def velocity(self, model: torch.nn.Module, **cond: torch.Tensor) -> VelocityFn:
        """The velocity v(x, t): guided when conditions and a weight != 1 are given, rescheduled
        per factor when ``schedule`` is set."""
        if cond and self.guidance != 1.0:
            velocity = GuidedVelocity(model, self.guidance, cond, self.null)
        else:
            def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return model(x, t, **cond)
        if self.schedule is not None:
            return RescheduledVelocity(velocity, self.space, self.schedule)
        return velocity

    def sample(self, model: torch.nn.Module, x0: torch.Tensor, *, steps: int | None = None,
               trajectory: bool = False, **cond: torch.Tensor) -> SolverResult:
        """x0: (B, *D) at t = 0 -> SolverResult with x at t = 1."""
        return self.solver.integrate(self.velocity(model, **cond), x0, self.grid(steps or self.steps),
                                     space=self.space, trajectory=trajectory)

    def invert(self, model: torch.nn.Module, x1: torch.Tensor, *, steps: int | None = None,
               trajectory: bool = False, **cond: torch.Tensor) -> SolverResult:
        """x1: (B, *D) at t = 1 -> SolverResult with x at t = 0 (the same grid, reversed)."""
        return self.solver.integrate(self.velocity(model, **cond), x1,
                                     reverse(self.grid(steps or self.steps)),
                                     space=self.space, trajectory=trajectory)


def sample(model: torch.nn.Module, x0: torch.Tensor, *, steps: int = 100, solver: Solver | str = "euler",
           trajectory: bool = False, **cond: torch.Tensor) -> SolverResult:
    """Shortcut: transport x0 (B, *D) to t = 1 with ``steps`` steps of ``solver`` on a uniform grid."""
    solver = SOLVERS.create(solver, "solver") if isinstance(solver, str) else solver
    return Sampler(solver, steps).sample(model, x0, trajectory=trajectory, **cond)
