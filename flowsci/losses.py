"""Regression losses of flow matching, reduced per sample before the batch mean.

A loss is called ``loss(pred, target, t) -> (B,)`` with velocities pred, target: (B, *D) and
t: (B,) in our convention (t = 0 source, t = 1 data). Losses compose: :class:`Weighted`
multiplies any loss by a weight w(t); :class:`X1SpaceLoss` and :class:`X0SpaceLoss` compare
the data predictions x1_hat, or the source (epsilon) predictions x0_hat, implied by the
velocities instead of the velocities. A loss whose ``needs_path`` is True is also given
``x_t=`` (B, *D) and ``path=`` (the objective's path) as keywords.
Nested losses in YAML are registered names or ``{name: ..., <parameters>}`` mappings:
``objective.loss: {name: weighted, loss: pseudo_huber, weight: two_rf}``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from flowsci.registry import LOSSES

WeightFn = Callable[[torch.Tensor], torch.Tensor]
"""w(t): (B,) -> (B,), non-negative."""


class Loss(ABC):
    """``loss(pred, target, t) -> (B,)`` per-sample losses; pred, target: (B, *D), t: (B,)."""

    needs_path: bool = False
    """True when the loss also needs ``x_t=`` and ``path=`` keywords from the objective."""

    @abstractmethod
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def _as_loss(spec: Loss | str | dict[str, Any], where: str) -> Loss:
    """A Loss object, or the registered loss named by ``spec`` ("name" or {name: ..., ...})."""
    return spec if isinstance(spec, Loss) else LOSSES.create(spec, where)


class MSELoss(Loss):
    """Mean squared error over all non-batch dimensions."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (pred - target).pow(2).flatten(1).mean(1)


class PseudoHuberLoss(Loss):
    """2-RF++'s pseudo-Huber distance (sqrt(|e|^2 + c^2) - c) / D, e = pred - target.

    |e|^2 sums over all D non-batch entries of a sample. Quadratic, |e|^2 / (2 c D), for
    |e| << c and linear, |e| / D, for |e| >> c, so a few bad pairs (e.g. in reflow data) pull
    less than under MSE. ``c`` is a hyper-parameter; the default c = 0.00054 D is 2-RF++'s
    choice for images in [-1, 1] (iCT uses 0.00054 sqrt(D) on a differently scaled error).
    """

    def __init__(self, c: float | None = None):
        if c is not None and not (math.isfinite(c) and c > 0):
            raise ValueError(f"c must be a finite number > 0 or None (0.00054 * data dim), got {c!r}")
        self.c = c

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sq = (pred - target).pow(2).flatten(1)
        dim = sq.shape[1]
        c = self.c if self.c is not None else 0.00054 * dim
        norm2 = sq.sum(1)
        # |e|^2 / (sqrt(|e|^2 + c^2) + c) equals sqrt(|e|^2 + c^2) - c without its cancellation
        # for small errors
        return norm2 / ((norm2 + c * c).sqrt() + c) / dim


def _one(t: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(t)


def _cosmap(t: torch.Tensor) -> torch.Tensor:
    return 2 / (math.pi * (1 - 2 * t + 2 * t * t))


def _two_rf(t: torch.Tensor) -> torch.Tensor:
    return t


def _two_rf_divt(t: torch.Tensor) -> torch.Tensor:
    return 1 / (1 - t)


TIME_WEIGHTS: dict[str, WeightFn] = {
    "uniform": _one,
    "rf": _one,
    "cosmap": _cosmap,
    "two_rf": _two_rf,
    "two_rf_divt": _two_rf_divt,
}
"""Named per-time weights w(t) in our convention (t = 0 source, t = 1 data):

- ``uniform``: 1.
- ``rf``: 1. SD3's w_RF = tau / (1 - tau) (tau = 1 - t) weights its eps-loss
  -1/2 w lambda'_tau |eps_hat - eps|^2, with lambda' = -2 / (tau (1 - tau)); since
  eps_hat - eps = (1 - tau)(v_hat - v), that is exactly the velocity MSE, so on a velocity
  loss SD3's rectified-flow weighting is the constant 1 (it is named for YAML users who copy
  SD3's settings).
- ``cosmap``: 2 / (pi (1 - 2t + 2t^2)), symmetric, so identical in both conventions. It is the
  density of :class:`flowsci.timesteps.CosMapTime`: uniform t with this weight has the
  expectation of CosMap-sampled t with weight 1 (diffusers ships it this way).
- ``two_rf``: t. 2-RF++ weights its pseudo-Huber velocity term by (1 - tau), tau = 1 - t.
- ``two_rf_divt``: 1 / (1 - t), 2-RF++'s 1/tau on its perceptual (x-space) term; unbounded at
  t = 1, hence :class:`Weighted`'s ``max_weight``.
"""


class Weighted(Loss):
    """``w(t) * loss(pred, target, t)``, per sample; w named in :data:`TIME_WEIGHTS` or a callable.

    The weight is clamped to [0, max_weight] so that weights unbounded at an end of [0, 1]
    stay finite; the default 1e5 is 1 / (1 - t) at 2-RF++'s time clamp t <= 1 - 1e-5.
    """

    def __init__(self, loss: Loss | str | dict[str, Any] = "mse", weight: str | WeightFn = "uniform",
                 max_weight: float = 1e5):
        if isinstance(weight, str):
            if weight not in TIME_WEIGHTS:
                raise ValueError(f"weight must be one of {', '.join(TIME_WEIGHTS)} or a callable "
                                 f"w(t), got {weight!r}")
        elif not callable(weight):
            raise ValueError(f"weight must be a name ({', '.join(TIME_WEIGHTS)}) or a callable "
                             f"w(t), got {weight!r}")
        if not max_weight > 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight!r}")
        self.loss = _as_loss(loss, "loss.loss")
        self.weight_fn = TIME_WEIGHTS[weight] if isinstance(weight, str) else weight
        self.max_weight = float(max_weight)
        self.needs_path = self.loss.needs_path

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                 **path_context: Any) -> torch.Tensor:
        w = self.weight_fn(t).clamp(0.0, self.max_weight)
        return w * self.loss(pred, target, t, **path_context)


class _EndpointSpaceLoss(Loss):
    """``base(e(pred), e(target), t)`` with e = ``path.velocity_to_<endpoint>(v, x_t, t)``: the
    endpoint predictions implied by the two velocities are compared. Called with ``x_t=``
    (B, *D) and ``path=`` keywords (``needs_path`` is True)."""

    needs_path = True
    endpoint = ""  # "x0" or "x1", set by the subclass

    def __init__(self, base: Loss | str | dict[str, Any] = "mse"):
        self.base = _as_loss(base, "loss.base")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, *,
                 x_t: torch.Tensor | None = None, path: Any = None) -> torch.Tensor:
        name, method = type(self).__name__, f"velocity_to_{self.endpoint}"
        if x_t is None or path is None:
            raise ValueError(f"{name} needs the keywords x_t= (B, *D) and path= (the "
                             "objective's path), which an objective passes when loss.needs_path")
        if not hasattr(path, method):
            raise ValueError(f"{name} needs a path with {method}(v, x_t, t); "
                             f"{type(path).__name__} has none")
        convert = getattr(path, method)
        return self.base(convert(pred, x_t, t), convert(target, x_t, t), t)


class X1SpaceLoss(_EndpointSpaceLoss):
    """``base(x1_hat(pred), x1_hat(target), t)``: compare data predictions, not velocities.

    Both velocities are converted with the objective's path, ``path.velocity_to_x1(v, x_t, t)``
    (linear path: x1_hat = x_t + (1 - t) v); the target converts to the true x1. For MSE on
    the linear path this is (1 - t)^2 times the velocity MSE; a perceptual ``base`` sees images.
    With ``base: pseudo_huber`` it is Rectified Diffusion's loss on x̂ (Wang et al. 2024), except
    that their c applies to each entry and ours to the norm of the whole sample (2-RF++'s form).
    Called with ``x_t=`` (B, *D) and ``path=`` keywords (``needs_path`` is True).
    """

    endpoint = "x1"


class X0SpaceLoss(_EndpointSpaceLoss):
    """``base(x0_hat(pred), x0_hat(target), t)``: compare source (epsilon) predictions.

    The mirror of :class:`X1SpaceLoss` through ``path.velocity_to_x0(v, x_t, t)`` (linear path:
    x0_hat = x_t - t v); the target converts to the true x0, the noise epsilon of the pair. For
    any model it is the velocity loss reweighted by (alpha_t / D_t)^2, D_t = sigma_t alpha'_t -
    alpha_t sigma'_t (t^2 on the linear path under MSE).

    **DDPM's simple loss** (Ho et al. 2020, eq. 14) is ``{name: x0_space, base: mse}`` with the
    ``vp`` path, ``uniform`` timesteps and a ``parameterized`` model with ``prediction: epsilon``:
    E_t |eps_hat(x_t, t) - eps|^2, in continuous time and averaged (not summed) over entries.

    Near the data end of ``vp`` (sigma'_t -> -inf): the objective never evaluates t = 1
    (:meth:`flowsci.paths.AffinePath.sample` moves t off it by one machine epsilon), and below
    it the round trip eps -> velocity -> eps of an epsilon model is exact up to a few ulps:
    on vp D_t = alpha'_t / sigma_t, so the error of v, of order ulp * (|alpha'_t x_t| + D_t |eps|) /
    alpha_t, is divided by D_t on the way back. Called with ``x_t=`` and ``path=`` keywords.
    """

    endpoint = "x0"
