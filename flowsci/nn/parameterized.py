"""A backbone that predicts epsilon, the data or diffusion's v, seen by the engine as a velocity field.

Diffusion models are trained and shipped in other parameterizations than the velocity (Ho et
al. 2020: epsilon; Salimans & Ho 2022: v; Rectified Diffusion (Wang et al. 2024) keeps whichever
its teacher had). :class:`Parameterized` (registered model ``parameterized``) wraps any registered
backbone and turns its prediction into the velocity dx_t of an affine path
x_t = sigma_t x0 + alpha_t x1 (t = 0 source / noise, t = 1 data; docs/design.md), so every
sampler, guidance and the reflow pair generator use it unchanged:

    model: {name: parameterized, prediction: epsilon, path: vp,
            backbone: {name: unet, params: {...}}}

Predictions, in our convention (x0 is the Gaussian source epsilon, x1 the data, which DDPM papers
call x_0; alpha_t, sigma_t are DDPM's alpha_t and sigma_t):

- ``epsilon``: x0;
- ``x1``: the data x1 ("x0-prediction" in DDPM papers);
- ``v``: Salimans & Ho's v = alpha_t x0 - sigma_t x1 (on vp the velocity is -D_t v,
  D_t = sigma_t alpha'_t - alpha_t sigma'_t);
- ``velocity``: dx_t itself (the wrapper then only adds :meth:`~Parameterized.predict` and
  :meth:`~Parameterized.endpoints`).

Valid times. The prediction determines (x0_hat, x1_hat, velocity) at every t in [0, 1] except
at an end where a conversion divides by zero or needs an infinite derivative: t = 1 on ``vp``
for every prediction (sigma'_1 = -inf: the velocity of a VP trajectory grows like
1 / sqrt(1 - t) and is infinite at the data end), t = 0 on ``linear`` / ``cosine`` for
``epsilon`` (alpha_0 = 0: pure noise says nothing of x1), t = 1 on ``linear`` for ``x1``.
These ends are listed in ``singular_ends``; a time *equal* to one of them is replaced by
t_eps inside the interval (default 1e-3, the end time of Song et al.'s VP probability-flow
sampler), for the backbone and the conversion alike. Only solvers ask for such times (Heun's,
RK4's and dopri5's last stage at t = 1, inversion's first evaluation at t = 1, sampling's first
at t = 0). Every other time is converted exactly where it is: training never meets a singular
end, since :meth:`flowsci.paths.AffinePath.sample` moves t off it by one machine epsilon, and
on vp the maps epsilon <-> velocity stay well conditioned up to that time (D_t = alpha'_t / sigma_t
grows as fast as sigma'_t), so a loss that converts the velocity back at the same t
(``x0_space``, ``x1_space``) sees the backbone's own prediction up to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowsci.paths import AffinePath
from flowsci.paths.path_sample import check_time, per_sample
from flowsci.registry import PATHS, build_model

PREDICTIONS = ("epsilon", "x1", "v", "velocity")


class Parameterized(nn.Module):
    """v(x, t, **cond): the path velocity implied by ``backbone(x, t, **cond)``'s ``prediction``.

    ``backbone``: {name: a registered model, params: {...}} called as backbone(x, t, **cond) with
    x: (B, *D), t: (B,) and returning (B, *D). ``path``: a registered affine path, by name or
    {name: ..., <parameters>} (the objective's ``path``; they must agree). ``t_eps``: how far
    inside [0, 1] a time at a singular end is moved (see the module docstring). ``inputs``: the
    arguments a domain derives from its data (toy2d's ``dim``, the images' ``channels``,
    ``num_classes``, ``context_dim``); they go to the backbone with ``backbone.params``.
    """

    def __init__(self, backbone: dict, prediction: str, path: str | dict, t_eps: float = 1e-3,
                 **inputs: Any):
        super().__init__()
        if not isinstance(backbone, dict) or set(backbone) - {"name", "params"} or "name" not in backbone:
            raise ValueError(f"backbone must be {{name: MODEL, params: {{...}}}}, got {backbone!r}")
        params = dict(backbone.get("params", {}))
        for key, value in inputs.items():
            if params.setdefault(key, value) != value:
                raise ValueError(f"backbone.params.{key} = {params[key]!r} disagrees with {key} = {value!r} "
                                 "given by the domain; remove it from backbone.params")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        if isinstance(t_eps, bool) or not (isinstance(t_eps, (int, float)) and 0 < t_eps < 0.5):
            raise ValueError(f"t_eps must be a number in (0, 0.5), got {t_eps!r}")
        self.path = PATHS.create(path, "model.path")
        if not isinstance(self.path, AffinePath):
            raise ValueError(f"path must be an affine path (linear, vp, cosine, polynomial, sigma_min), "
                             f"got {path!r}")
        self.prediction, self.t_eps = prediction, float(t_eps)
        self.singular_ends = _singular_ends(self.path, prediction)
        self.backbone = build_model(backbone["name"], params)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        """x: (B, *D), t: (B,) -> the velocity dx_t (B, *D)."""
        t = self._time(t, x)
        pred = self.backbone(x, t, **cond)
        if self.prediction == "velocity":
            return pred
        if self.prediction == "epsilon":
            return self.path.x0_to_velocity(pred, x, t)
        if self.prediction == "x1":
            return self.path.x1_to_velocity(pred, x, t)
        x0_hat, x1_hat = self._endpoints(pred, x, t)
        c = self.path.scheduler(per_sample(t, x))
        if not bool((torch.isfinite(c.d_sigma_t) & torch.isfinite(c.d_alpha_t)).all()):
            raise ValueError(f"Parameterized: {self.path!r} has infinite derivatives at t = {t.tolist()[:5]}")
        return c.d_sigma_t * x0_hat + c.d_alpha_t * x1_hat

    def predict(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        """The backbone's raw prediction (B, *D) at x: (B, *D), t: (B,)."""
        return self.backbone(x, self._time(t, x), **cond)

    def endpoints(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, x1_hat), each (B, *D): the source (epsilon) and data estimates at x: (B, *D), t: (B,)."""
        t = self._time(t, x)
        return self._endpoints(self.backbone(x, t, **cond), x, t)

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What an exact backbone predicts for the pair x0, x1: (B, *D) at t: (B,) -> (B, *D)."""
        if self.prediction == "epsilon":
            return x0
        if self.prediction == "x1":
            return x1
        check_time(t, x0)
        c = self.path.scheduler(per_sample(t, x0))
        if self.prediction == "v":
            return c.alpha_t * x0 - c.sigma_t * x1
        return c.d_sigma_t * x0 + c.d_alpha_t * x1

    def _time(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        check_time(t, x)
        for end in self.singular_ends:
            t = torch.where(t == end, end + self.t_eps if end == 0.0 else end - self.t_eps, t)
        return t

    def _endpoints(self, pred: torch.Tensor, x: torch.Tensor, t: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prediction == "epsilon":
            return pred, self.path.x0_to_x1(pred, x, t)
        if self.prediction == "x1":
            return self.path.x1_to_x0(pred, x, t), pred
        if self.prediction == "velocity":
            return self.path.velocity_to_x0(pred, x, t), self.path.velocity_to_x1(pred, x, t)
        c = self.path.scheduler(per_sample(t, x))
        norm = c.alpha_t ** 2 + c.sigma_t ** 2  # x_t and v are a rotation (times sqrt(norm)) of (x0, x1)
        return (c.sigma_t * x + c.alpha_t * pred) / norm, (c.alpha_t * x - c.sigma_t * pred) / norm


def _singular_ends(path: AffinePath, prediction: str) -> tuple[float, ...]:
    """The ends (0.0 and/or 1.0) where ``prediction`` does not determine x0, x1 and the velocity."""
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    c = path.scheduler(ends)
    finite = torch.isfinite(c.d_alpha_t) & torch.isfinite(c.d_sigma_t)
    if prediction == "epsilon":
        ok = finite & (c.alpha_t > 0)
    elif prediction == "x1":
        ok = finite & (c.sigma_t > 0)
    elif prediction == "v":
        ok = finite
    else:
        det = c.sigma_t * c.d_alpha_t - c.alpha_t * c.d_sigma_t
        ok = torch.isfinite(det) & (det != 0)
    return tuple(float(end) for end, good in zip(ends, ok) if not good)
