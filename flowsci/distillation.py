"""Flow-guided distillation (SlimFlow's FGD): an online teacher term for one-step distillation.

One-step distillation regresses the student's one-step map x1_hat = z + v_s(z, 0) on stored
pairs (:mod:`flowsci.reflow`). FGD adds a term on fresh noise z from the source, beyond the
stored pairs: the teacher finishes the student's own straight path with one Euler step,

    t' ~ U(t_min, t_max),   x' = z + t' v_s(z, 0),   x1_T = x' + (1 - t') v_T(x', t'),

with no gradient through x1_T, and the term is D(z + v_s(z, 0), x1_T). Time runs in our
convention, t = 0 source and t = 1 data (SlimFlow's too). With conditions and a guidance weight w != 1 the
teacher's velocity is the classifier-free-guided one, v_null + w (v_cond - v_null).

D is the objective's loss on the implied velocities at t = 0: v_s(z, 0) against x1_T - z (as
SlimFlow's code does). At t = 0 on the linear path a velocity v and its image z + v differ by
the fixed z, so MSE on velocities is MSE on images, and the FGD term is weighted like the
stored-pair term it is added to; ``objective.loss: {name: x1_space, base: ...}`` hands the
images z + v to its base loss (a perceptual loss, say).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flowsci.checkpoint import load_model
from flowsci.errors import CheckpointError, ConfigError
from flowsci.guidance import GuidedVelocity
from flowsci.losses import Loss
from flowsci.solvers import VelocityFn


@dataclasses.dataclass
class FlowGuidanceConfig:
    """YAML ``objective.flow_guidance``: flow-guided distillation from a teacher run."""

    teacher: str | None = None       # the teacher's run directory or checkpoint (EMA weights when present)
    weight: float = 1.0              # weight of the FGD term added to the loss on stored pairs
    t_min: float = 0.2               # the teacher takes over at t' ~ U(t_min, t_max)
    t_max: float = 0.8
    guidance: float = 1.0            # the teacher's CFG weight (conditional runs): that of the stored pairs


class FlowGuidedDistillation:
    """The FGD term of a student on fresh noise, with a frozen ``teacher`` v_T(x, t, **cond).

    The teacher may differ from the student in architecture and size; it is frozen, kept in
    eval mode and moved to the device and dtype of the noise on first use. ``null`` gives the
    null value of each condition (needed for ``guidance`` != 1).
    """

    def __init__(self, teacher: torch.nn.Module, weight: float = 1.0, t_min: float = 0.2,
                 t_max: float = 0.8, guidance: float = 1.0,
                 null: Mapping[str, float | int] | None = None):
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if not 0 <= t_min <= t_max <= 1:
            raise ValueError(f"t_min and t_max must satisfy 0 <= t_min <= t_max <= 1, got "
                             f"t_min={t_min}, t_max={t_max}")
        if not math.isfinite(guidance):
            raise ValueError(f"guidance must be a finite number, got {guidance}")
        if guidance != 1.0 and not null:
            raise ValueError(f"guidance={guidance} needs a conditional domain (one that declares the "
                             "null value of its conditions); use guidance=1 without conditions")
        self.teacher = teacher.requires_grad_(False).eval()
        self.weight, self.t_min, self.t_max = float(weight), float(t_min), float(t_max)
        self.guidance, self.null = float(guidance), dict(null or {})

    @classmethod
    def from_config(cls, cfg: FlowGuidanceConfig, null: Mapping[str, float | int] | None = None
                    ) -> FlowGuidedDistillation:
        """Load the teacher of ``cfg`` (EMA weights when the checkpoint has them); errors are
        ConfigErrors naming the ``objective.flow_guidance`` key."""
        where = "objective.flow_guidance"
        if not cfg.teacher:
            raise ConfigError(f"'{where}.teacher' is required: the teacher's run directory or checkpoint")
        path = Path(cfg.teacher)
        if not path.exists():
            raise ConfigError(f"'{where}.teacher': no run directory or checkpoint at {cfg.teacher!r}")
        try:
            teacher = load_model(path, ema=True)
        except CheckpointError as exc:
            raise ConfigError(f"'{where}.teacher': {exc}") from None
        try:
            return cls(teacher, weight=cfg.weight, t_min=cfg.t_min, t_max=cfg.t_max,
                       guidance=cfg.guidance, null=null)
        except ValueError as exc:
            raise ConfigError(f"'{where}': {exc}") from None

    def velocity(self, cond: Mapping[str, torch.Tensor]) -> VelocityFn:
        """The teacher's velocity v_T(x, t): guided when conditions and a weight != 1 are given."""
        if cond and self.guidance != 1.0:
            return GuidedVelocity(self.teacher, self.guidance, cond, self.null)
        return lambda x, t: self.teacher(x, t, **cond)

    @torch.no_grad()
    def target(self, z: torch.Tensor, v_student: torch.Tensor, cond: Mapping[str, torch.Tensor],
               generator: torch.Generator | None = None) -> torch.Tensor:
        """x1_T (B, *D): from z (B, *D) along the student's velocity v_student (B, *D) to
        x' = z + t' v_student, then one teacher Euler step to t = 1. t' (B,) is
        t_min + (t_max - t_min) u with u ~ U(0, 1) drawn from ``generator``; cond: (B, ...)."""
        self._place(z)
        u = torch.rand(z.shape[0], generator=generator, device=z.device, dtype=z.dtype)
        t = self.t_min + (self.t_max - self.t_min) * u
        s = t.reshape(-1, *[1] * (z.dim() - 1))
        x = z + s * v_student
        return x + (1 - s) * self.velocity(cond)(x, t)

    def loss(self, model: torch.nn.Module, z: torch.Tensor, cond: Mapping[str, torch.Tensor],
             loss_fn: Loss, path: Any) -> torch.Tensor:
        """Per-sample FGD loss (B,) of the student ``model`` on noise z (B, *D): ``loss_fn`` on
        the velocities v_s(z, 0) and x1_T - z at t = 0 (with x_t = z and ``path`` when the loss
        needs them). The gradient reaches the student through v_s(z, 0) only."""
        t0 = z.new_zeros(z.shape[0])
        v = model(z, t0, **cond)
        x1 = self.target(z, v.detach(), cond)
        context = {"x_t": z, "path": path} if loss_fn.needs_path else {}
        return loss_fn(v, x1 - z, t0, **context)

    def _place(self, z: torch.Tensor) -> None:
        """Move the teacher to the device and floating dtype of z."""
        param = next(self.teacher.parameters(), None)
        if param is not None and (param.device != z.device or param.dtype != z.dtype):
            self.teacher.to(device=z.device, dtype=z.dtype)
