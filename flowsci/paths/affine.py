"""Affine paths x_t = sigma_t x0 + alpha_t x1 and the conversions between what a model predicts.

A model evaluated at (x_t, t) may predict the velocity v = dx_t, the target x1, the source x0
(the noise epsilon when the source is Gaussian) or the score. Any two of (x0, x1, x_t, dx_t)
determine the others through

    x_t  = sigma_t  x0 + alpha_t  x1
    dx_t = sigma'_t x0 + alpha'_t x1,

a 2x2 linear system with determinant D_t = sigma_t alpha'_t - alpha_t sigma'_t (the time derivative
of the SNR times sigma_t^2, so D_t > 0 wherever the SNR increases strictly). Hence

    x1 = (sigma_t v - sigma'_t x_t) / D_t        x0 = (alpha'_t x_t - alpha_t v) / D_t
    v  = (sigma'_t x_t + D_t x1) / sigma_t       v  = (alpha'_t x_t - D_t x0) / alpha_t
    x0 = (x_t - alpha_t x1) / sigma_t            x1 = (x_t - sigma_t x0) / alpha_t.

Applied to a model's outputs these are the conditional expectations E[x1 | x_t], E[x0 | x_t], and
with a source N(0, I) the score of the marginal at t is -E[x0 | x_t] / sigma_t (Tweedie).

Valid ranges: a formula dividing by sigma_t needs sigma_t > 0 (t < 1 for schedulers with
sigma_1 = 0); dividing by alpha_t needs alpha_t > 0 (t > 0); dividing by D_t needs D_t != 0 (false
at t = 0 for :class:`PolynomialScheduler` with n > 1, where the velocity vanishes). All need finite
derivatives (t < 1 for :class:`VPScheduler`). Times where a coefficient is not finite raise a
ValueError naming them; nothing returns inf silently. (:meth:`AffinePath.sample`, used in
training, instead moves t off a singular end by one machine epsilon; see there.) Close to those
times the conversions are finite but ill-conditioned (they amplify model error by 1/sigma_t,
1/alpha_t or 1/D_t).
"""

from __future__ import annotations

import torch

from flowsci.paths.path_sample import PathSample, check_time, per_sample
from flowsci.paths.schedulers import Scheduler, SchedulerOutput

_NEEDS_D = ("sigma_t * d_alpha_t - alpha_t * d_sigma_t finite and non-zero "
            "(the velocity must determine x0 and x1)")
_NEEDS_SIGMA = "sigma_t > 0 (t < 1 where sigma_1 = 0) and finite derivatives"
_NEEDS_ALPHA = "alpha_t > 0 (t > 0 where alpha_0 = 0) and finite derivatives"


class AffinePath:
    """x_t = sigma_t x0 + alpha_t x1 for a given :class:`Scheduler`, with prediction converters.

    Every method takes x-like tensors (B, *D) and t: (B,) and returns (B, *D).
    """

    def __init__(self, scheduler: Scheduler):
        if not isinstance(scheduler, Scheduler):
            raise ValueError(f"scheduler must be a flowsci.paths.Scheduler, got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """x0, x1: (B, *D); t: (B,) in [0, 1] -> x_t and its velocity dx_t = sigma'_t x0 + alpha'_t x1.

        At an end listed in ``scheduler.singular_times`` (t = 1 for VP, t = 0 for a polynomial with
        n < 1) the velocity is infinite; there t is moved into the interval by one machine epsilon
        of its dtype (a float32 uniform time sampler gives exactly 1.0 about once in 3e7 draws), and
        ``PathSample.t`` is the time used. A scheduler that returns an infinite derivative at an
        undeclared time gets a ValueError.
        """
        check_time(t, x0)
        margin = torch.finfo(t.dtype).eps
        for end in self.scheduler.singular_times:
            t = t.clamp(min=margin) if end == 0.0 else t.clamp(max=1 - margin)
        c = self._at(t, x0)
        self._require_finite("sample", "finite d_alpha_t and d_sigma_t", t, c.d_alpha_t, c.d_sigma_t)
        return PathSample(x0=x0, x1=x1, t=t, x_t=c.sigma_t * x0 + c.alpha_t * x1,
                          dx_t=c.d_sigma_t * x0 + c.d_alpha_t * x1)

    def velocity_to_x1(self, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x1 = (sigma_t v - sigma'_t x_t) / D_t; needs D_t != 0."""
        c = self._at(t, x_t)
        det = _determinant(c)
        return self._combine("velocity_to_x1", _NEEDS_D, t,
                             c.sigma_t / det, velocity, -c.d_sigma_t / det, x_t)

    def velocity_to_x0(self, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 (= epsilon for a Gaussian source) = (alpha'_t x_t - alpha_t v) / D_t; needs D_t != 0."""
        c = self._at(t, x_t)
        det = _determinant(c)
        return self._combine("velocity_to_x0", _NEEDS_D, t,
                             -c.alpha_t / det, velocity, c.d_alpha_t / det, x_t)

    def x1_to_velocity(self, x1: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = (sigma'_t x_t + D_t x1) / sigma_t; needs sigma_t > 0."""
        c = self._at(t, x_t)
        return self._combine("x1_to_velocity", _NEEDS_SIGMA, t,
                             _determinant(c) / c.sigma_t, x1, c.d_sigma_t / c.sigma_t, x_t)

    def x0_to_velocity(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = (alpha'_t x_t - D_t x0) / alpha_t; needs alpha_t > 0."""
        c = self._at(t, x_t)
        return self._combine("x0_to_velocity", _NEEDS_ALPHA, t,
                             -_determinant(c) / c.alpha_t, x0, c.d_alpha_t / c.alpha_t, x_t)

    def x1_to_x0(self, x1: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - alpha_t x1) / sigma_t; needs sigma_t > 0."""
        c = self._at(t, x_t)
        return self._combine("x1_to_x0", _NEEDS_SIGMA, t, -c.alpha_t / c.sigma_t, x1, 1 / c.sigma_t, x_t)

    def x0_to_x1(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x1 = (x_t - sigma_t x0) / alpha_t; needs alpha_t > 0."""
        c = self._at(t, x_t)
        return self._combine("x0_to_x1", _NEEDS_ALPHA, t, -c.sigma_t / c.alpha_t, x0, 1 / c.alpha_t, x_t)

    def velocity_to_score(self, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score of the marginal at t for a source N(0, I): -x0_hat / sigma_t; needs D_t != 0, sigma_t > 0."""
        c = self._at(t, x_t)
        scale = c.sigma_t * _determinant(c)
        return self._combine("velocity_to_score", f"{_NEEDS_D}, and sigma_t > 0", t,
                             c.alpha_t / scale, velocity, -c.d_alpha_t / scale, x_t)

    def score_to_velocity(self, score: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`velocity_to_score` (x0_hat = -sigma_t score); needs alpha_t > 0."""
        c = self._at(t, x_t)
        return self._combine("score_to_velocity", _NEEDS_ALPHA, t,
                             _determinant(c) * c.sigma_t / c.alpha_t, score, c.d_alpha_t / c.alpha_t, x_t)

    def _at(self, t: torch.Tensor, x: torch.Tensor) -> SchedulerOutput:
        check_time(t, x)
        return self.scheduler(per_sample(t, x))

    def _combine(self, method: str, requirement: str, t: torch.Tensor,
                 coef_a: torch.Tensor, a: torch.Tensor, coef_b: torch.Tensor, b: torch.Tensor
                 ) -> torch.Tensor:
        self._require_finite(method, requirement, t, coef_a, coef_b)
        return coef_a * a + coef_b * b

    def _require_finite(self, method: str, requirement: str, t: torch.Tensor, *coefs: torch.Tensor) -> None:
        bad = torch.zeros_like(t, dtype=torch.bool)
        for coef in coefs:
            bad |= ~torch.isfinite(coef).reshape(-1).expand_as(t)
        if bool(bad.any()):
            raise ValueError(f"AffinePath.{method} with {self.scheduler!r} is undefined at t = "
                             f"{t[bad][:5].tolist()}: it needs {requirement}")


def _determinant(c: SchedulerOutput) -> torch.Tensor:
    """D_t = sigma_t alpha'_t - alpha_t sigma'_t of the system (x_t, dx_t) <- (x0, x1)."""
    return c.sigma_t * c.d_alpha_t - c.alpha_t * c.d_sigma_t
