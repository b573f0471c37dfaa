"""Geodesic paths on a Space, with a schedule kappa(t) per factor of the space.

x_t = exp(x0, kappa(t) log(x0, x1)): the geodesic from the source x0 (t = 0) to the target x1
(t = 1), travelled with the speed profile kappa (kappa(0) = 0, kappa(1) = 1). A product
space (SE(3)^N: translations and rotations) may give each factor its own kappa.

The regression target dx_t (a tangent vector at x_t) has three equivalent forms:

- ``jvp`` (default): the time derivative of t -> x_t by forward-mode autodiff
  (``torch.func.jvp``), mapped to the tangent representation with ``proj_tangent``;
- ``x1`` (x1-anchored; FrameFlow / ReQFlow form): dx_t = kappa'(t) / (1 - kappa(t)) log(x_t, x1);
- ``x0`` (x0-anchored; FoldFlow form): dx_t = -kappa'(t) / kappa(t) log(x_t, x0).

On a geodesic the velocity is parallel to log(x_t, x1) and to -log(x_t, x0) with the remaining
and travelled fractions of the arc, which gives the two closed forms; the tests check both
against the jvp. The closed forms are singular at one end (t = 1 for x1, t = 0 for x0), where
``sample`` moves t inside by one machine epsilon, as :class:`~flowsci.paths.AffinePath` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from flowsci.paths.path_sample import PathSample, check_time
from flowsci.spaces import Space

TARGETS = ("jvp", "x1", "x0")


class Kappa:
    """A schedule kappa(t) on [0, 1]: ``kappa(t)`` and ``d_kappa(t)`` for t (...,)."""

    def kappa(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        """kappa'(t) / (1 - kappa(t)): the velocity toward a predicted x1 (x1 = exp(x_t, v / rate))."""
        return self.d_kappa(t) / (1 - self.kappa(t))


class LinearKappa(Kappa):
    """kappa(t) = t: constant speed along the geodesic."""

    def kappa(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "LinearKappa()"


class ExpKappa(Kappa):
    """kappa(t) = (1 - exp(-c t)) / (1 - exp(-c)) (``normalized``) or 1 - exp(-c t) (FrameFlow's
    sampling schedule, which never quite arrives: kappa(1) = 1 - e^{-c}, and whose rate
    kappa' / (1 - kappa) is the constant c)."""

    def __init__(self, rate: float = 10.0, normalized: bool = True):
        if not rate > 0:
            raise ValueError(f"the exp schedule needs rate > 0, got {rate}")
        self.c, self.normalized = float(rate), bool(normalized)
        self._norm = -math.expm1(-self.c) if normalized else 1.0

    def kappa(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self.c * t) / self._norm

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor:
        return self.c * torch.exp(-self.c * t) / self._norm

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        if not self.normalized:
            return torch.full_like(t, self.c)
        # c e^{-ct} / (e^{-ct} - e^{-c}) = c / (1 - e^{-c(1-t)})
        return self.c / -torch.expm1(-self.c * (1 - t))

    def __repr__(self) -> str:
        return f"ExpKappa(rate={self.c}, normalized={self.normalized})"


def make_kappa(spec: str | dict[str, Any] | Kappa) -> Kappa:
    """"linear", "exp", {"name": "exp", "rate": 10, "normalized": True} or a Kappa."""
    if isinstance(spec, Kappa):
        return spec
    params = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = params.pop("name", None)
    if name == "linear" and not params:
        return LinearKappa()
    if name == "exp":
        return ExpKappa(**params)
    raise ValueError(f"unknown schedule {spec!r}; valid: 'linear', 'exp' or "
                     "{name: exp, rate: c, normalized: bool}")


class GeodesicPath:
    """x_t = exp(x0, kappa(t) log(x0, x1)) on ``space``; see the module docstring.

    ``schedule``: one schedule for every factor, or a list with one per factor of the space
    (``space.n_factors``; e.g. ["linear", {"name": "exp", "rate": 10}] on SE(3)^N).
    x0, x1: (B, *point_shape); t: (B,); dx_t: (B, *tangent_shape).
    """

    def __init__(self, space: Space, schedule: str | dict | list = "linear", target: str = "jvp"):
        if not isinstance(space, Space):
            raise ValueError(f"space must be a flowsci.spaces.Space, got {type(space).__name__}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        specs = schedule if isinstance(schedule, list) else [schedule] * space.n_factors
        if len(specs) != space.n_factors:
            raise ValueError(f"schedule lists {len(specs)} entries but {space!r} has "
                             f"{space.n_factors} factor(s)")
        self.space, self.target = space, target
        self.kappas = [make_kappa(s) for s in specs]

    def __repr__(self) -> str:
        return f"GeodesicPath({self.space!r}, {self.kappas!r}, target={self.target!r})"

    def point(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, *point_shape) for t: (B,)."""
        return self._along(x0, self.space.log(x0, x1), t)

    def _along(self, x0: torch.Tensor, direction: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.space.exp(x0, self.space.scale_factors([k.kappa(t) for k in self.kappas], direction))

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        check_time(t, x0)
        margin = torch.finfo(t.dtype).eps
        if self.target == "x1":
            t = t.clamp(max=1 - margin)
        elif self.target == "x0":
            t = t.clamp(min=margin)
        direction = self.space.log(x0, x1)
        if self.target == "jvp":
            x_t, ambient = torch.func.jvp(lambda s: self._along(x0, direction, s), (t,),
                                          (torch.ones_like(t),))
            dx_t = self.space.proj_tangent(x_t, ambient)
        else:
            x_t = self._along(x0, direction, t)
            if self.target == "x1":
                dx_t = self.space.scale_factors([k.rate(t) for k in self.kappas], self.space.log(x_t, x1))
            else:
                dx_t = self.space.scale_factors([-k.d_kappa(t) / k.kappa(t) for k in self.kappas],
                                                self.space.log(x_t, x0))
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)


class RescheduledVelocity:
    """Sample with other per-factor schedules than the linear one a velocity was trained on.

    A field trained on the linear geodesic path predicts x1 as exp(x, (1 - t) v(x, t)); a
    schedule kappa moves toward that prediction with the velocity kappa'/(1 - kappa) log(x, x1),
    i.e. v scaled by (1 - t) kappa'(t)/(1 - kappa(t)) per factor. With FrameFlow's
    unnormalised exp schedule (``{name: exp, rate: 10, normalized: false}``) the rotations move
    with (1 - t) c v: fast early, slow late. Callable as v(x, t) for the solvers.
    """

    def __init__(self, velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], space: Space,
                 schedule: str | dict | list):
        specs = schedule if isinstance(schedule, list) else [schedule] * space.n_factors
        if len(specs) != space.n_factors:
            raise ValueError(f"schedule lists {len(specs)} entries but {space!r} has "
                             f"{space.n_factors} factor(s)")
        self.velocity_fn, self.space = velocity_fn, space
        self.kappas = [make_kappa(s) for s in specs]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        remaining = 1 - t
        scales = [torch.where(remaining > 0, remaining * k.rate(t.clamp(max=1 - 1e-6)), torch.zeros_like(t))
                  if not isinstance(k, LinearKappa) else torch.ones_like(t) for k in self.kappas]
        return self.space.scale_factors(scales, self.velocity_fn(x, t))


def geodesic_path(space: Space | None = None, schedule: str | dict | list = "linear",
                  target: str = "jvp") -> GeodesicPath:
    """Registry factory (``objective.path: {name: geodesic, schedule: ..., target: ...}``); the
    domain supplies ``space`` (``FlowMatching.from_config(..., space=...)``)."""
    if space is None:
        raise ValueError("the geodesic path needs the state space; this domain builds its objective "
                         "without one (FlowMatching.from_config(..., space=...))")
    return GeodesicPath(space, schedule=schedule, target=target)
