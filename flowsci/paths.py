"""Probability paths x_t = sigma_t * x0 + alpha_t * x1 between a source (t=0) and a target (t=1).

Time convention (DESIGN.md): t = 0 is the source, t = 1 the target; the regression target of
flow matching is the path velocity dx_t/dt = d_sigma_t * x0 + d_alpha_t * x1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SchedulerOutput:
    """alpha_t, sigma_t and their time derivatives, each shaped like t."""

    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    d_alpha_t: torch.Tensor
    d_sigma_t: torch.Tensor


class Scheduler(ABC):
    """Coefficients of an affine path; alpha_0 = 0, alpha_1 = 1, sigma_0 = 1, sigma_1 = 0."""

    @abstractmethod
    def __call__(self, t: torch.Tensor) -> SchedulerOutput: ...


class LinearScheduler(Scheduler):
    """Rectified flow / conditional OT: alpha_t = t, sigma_t = 1 - t."""

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        return SchedulerOutput(alpha_t=t, sigma_t=1 - t,
                               d_alpha_t=torch.ones_like(t), d_sigma_t=-torch.ones_like(t))


@dataclass(frozen=True)
class PathSample:
    """A point on the path and its velocity. x0, x1, x_t, dx_t: (B, *D); t: (B,)."""

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    dx_t: torch.Tensor


class AffinePath:
    """x_t = sigma_t x0 + alpha_t x1 for a given :class:`Scheduler`."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """x0, x1: (B, *D); t: (B,) in [0, 1]."""
        if t.shape != x0.shape[:1]:
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        c = self.scheduler(t.reshape(-1, *[1] * (x0.dim() - 1)))
        x_t = c.sigma_t * x0 + c.alpha_t * x1
        dx_t = c.d_sigma_t * x0 + c.d_alpha_t * x1
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)


def linear_path() -> AffinePath:
    """The rectified-flow path x_t = (1 - t) x0 + t x1, velocity x1 - x0."""
    return AffinePath(LinearScheduler())
