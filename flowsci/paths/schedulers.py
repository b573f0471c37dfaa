"""Schedulers: the coefficients alpha_t, sigma_t of an affine path x_t = sigma_t x0 + alpha_t x1.

Convention (docs/design.md): t = 0 is the source x0, t = 1 the target x1, so alpha_0 = 0, alpha_1 = 1,
sigma_0 = 1, sigma_1 = 0, except where a scheduler says otherwise (:class:`VPScheduler` at t = 0,
:class:`LinearSigmaMinScheduler` at t = 1). The signal-to-noise ratio SNR(t) = alpha_t / sigma_t
increases strictly from SNR(0) to SNR(1) (+inf where sigma_1 = 0), so it has an inverse,
:meth:`Scheduler.snr_inverse`.

Coefficients are exact mathematical values: where a derivative is infinite (a square-root or
fractional-power endpoint), the scheduler returns +-inf there and lists that end in
:attr:`Scheduler.singular_times`; :meth:`flowsci.paths.AffinePath.sample` then moves t off that
end by one machine epsilon, and the converters refuse it with a ValueError.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

_BISECTION_STEPS = 64
"""Halvings of [0, 1] in :func:`bisect_snr_inverse`: 2^-64 is below float64 resolution on [0, 1]."""


@dataclass(frozen=True)
class SchedulerOutput:
    """alpha_t, sigma_t and their time derivatives d/dt, each shaped like t."""

    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    d_alpha_t: torch.Tensor
    d_sigma_t: torch.Tensor


class Scheduler(ABC):
    """Coefficients of an affine path; alpha_0 = 0, alpha_1 = 1, sigma_0 = 1, sigma_1 = 0.

    Subclasses implement :meth:`__call__`; they may override :meth:`_t_from_snr` with a closed
    form (the default is a vectorised bisection, valid for any strictly increasing SNR).
    """

    @property
    def singular_times(self) -> tuple[float, ...]:
        """The ends (0.0 and/or 1.0) where d_alpha_t or d_sigma_t is infinite; none by default."""
        return ()

    @abstractmethod
    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        """t: any shape, values in [0, 1] -> coefficients of the same shape."""

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_t / sigma_t, any shape (+inf where sigma_t = 0)."""
        c = self(t)
        return c.alpha_t / c.sigma_t

    def snr_inverse(self, snr: torch.Tensor) -> torch.Tensor:
        """The time t in [0, 1] with alpha_t / sigma_t = snr; any shape, same dtype as ``snr``.

        ``snr`` must lie in [SNR(0), SNR(1)] up to a few ulps (NaN is rejected); outside it no such
        t exists and a ValueError names the valid range. Rounding is absorbed by clamping the result
        to [0, 1].
        """
        lo, hi = (self.snr(torch.tensor(v, dtype=snr.dtype, device=snr.device)) for v in (0.0, 1.0))
        slack = 8 * torch.finfo(snr.dtype).eps  # the end values, recomputed, may differ by an ulp
        outside = ~((snr >= lo * (1 - slack)) & (snr <= hi * (1 + slack)))
        if bool(outside.any()):
            raise ValueError(f"snr_inverse of {self!r}: snr must lie in [{lo.item():.6g}, {hi.item():.6g}] "
                             f"(the SNR at t = 0 and t = 1), got {snr[outside].flatten()[:5].tolist()}")
        return self._t_from_snr(snr).clamp(0.0, 1.0)

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        """t with SNR(t) = snr for an in-range ``snr``; override with a closed form where one exists."""
        return bisect_snr_inverse(self, snr)


def bisect_snr_inverse(scheduler: Scheduler, snr: torch.Tensor) -> torch.Tensor:
    """t in [0, 1] with SNR(t) = snr by bisection (float64, all entries at once); any shape.

    Written by hand rather than with scipy's root finders so that it stays vectorised on the
    tensor's device; SNR is strictly increasing, so 64 halvings reach float64 resolution. The end
    values SNR(0) and SNR(1) map to exactly 0 and 1 (a scheduler whose sigma_t rounds to 0 just
    before t = 1 would otherwise stop the search early for snr = +inf).
    """
    target = snr.to(torch.float64)
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        below = scheduler.snr(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    t = 0.5 * (lo + hi)
    t = torch.where(target >= scheduler.snr(torch.ones_like(target)), 1.0, t)
    t = torch.where(target <= scheduler.snr(torch.zeros_like(target)), 0.0, t)
    return t.to(snr.dtype)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _real(name: str, value: float) -> float:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
             f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LinearScheduler(Scheduler):
    """Rectified flow / conditional OT: alpha_t = t, sigma_t = 1 - t; SNR = t / (1 - t)."""

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        return SchedulerOutput(alpha_t=t, sigma_t=1 - t,
                               d_alpha_t=torch.ones_like(t), d_sigma_t=-torch.ones_like(t))

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        # t = snr / (1 + snr), written so that snr = +inf gives t = 1 instead of inf/inf.
        return 1 / (1 + 1 / snr)


@dataclass(frozen=True)
class CosineScheduler(Scheduler):
    """alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2); SNR = tan(pi t / 2).

    sigma_t is evaluated as sin(pi (1 - t) / 2) so that sigma_1 = 0 exactly in floating point.
    """

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        alpha = torch.sin(0.5 * math.pi * t)
        sigma = torch.sin(0.5 * math.pi * (1 - t))
        return SchedulerOutput(alpha_t=alpha, sigma_t=sigma,
                               d_alpha_t=0.5 * math.pi * sigma, d_sigma_t=-0.5 * math.pi * alpha)

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        return torch.atan(snr) * (2 / math.pi)


@dataclass(frozen=True)
class PolynomialScheduler(Scheduler):
    """alpha_t = t^n, sigma_t = 1 - t^n (n > 0); SNR = t^n / (1 - t^n).

    For n < 1 the derivatives are infinite at t = 0 (returned as +-inf there); for n > 1 they
    vanish at t = 0, so the velocity there carries no information about x0 or x1.
    """

    n: float

    def __post_init__(self) -> None:
        _require(_real("n", self.n) > 0, f"n must be > 0 (the power of t in alpha_t = t^n), got {self.n}")

    @property
    def singular_times(self) -> tuple[float, ...]:
        return (0.0,) if self.n < 1 else ()

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        alpha = t ** self.n
        d_alpha = self.n * t ** (self.n - 1)
        return SchedulerOutput(alpha_t=alpha, sigma_t=1 - alpha, d_alpha_t=d_alpha, d_sigma_t=-d_alpha)

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        return (1 / (1 + 1 / snr)) ** (1 / self.n)


@dataclass(frozen=True)
class LinearSigmaMinScheduler(Scheduler):
    """Lipman et al.'s OT path with a minimum width (FlowSep): x_t = (1 - (1 - sigma_min) t) x0 + t x1.

    alpha_t = t, sigma_t = 1 - (1 - sigma_min) t, so **sigma_1 = sigma_min, not 0**: the path ends
    in a Gaussian tube of width sigma_min around the data, and SNR(1) = 1 / sigma_min is finite.
    SNR = t / (1 - (1 - sigma_min) t), inverse t = snr / (1 + (1 - sigma_min) snr).
    """

    sigma_min: float = 1e-4

    def __post_init__(self) -> None:
        _require(0 < _real("sigma_min", self.sigma_min) < 1,
                 f"sigma_min must lie in (0, 1) (the width of the path at t = 1), got {self.sigma_min}")

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        shrink = 1 - self.sigma_min
        return SchedulerOutput(alpha_t=t, sigma_t=1 - shrink * t,
                               d_alpha_t=torch.ones_like(t), d_sigma_t=torch.full_like(t, -shrink))

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        return 1 / (1 / snr + (1 - self.sigma_min))


@dataclass(frozen=True)
class VPScheduler(Scheduler):
    """Variance preserving (the continuous DDPM schedule of Song et al. 2021), in our direction.

    DDPM runs its own time s in [0, 1] from data (s = 0) to noise (s = 1) with the linear rate
    beta(s) = beta_min + s (beta_max - beta_min); its mean coefficient is
    m(s) = exp(-1/2 int_0^s beta) = exp(-(beta_min s + (beta_max - beta_min) s^2 / 2) / 2) and its
    noise coefficient sqrt(1 - m(s)^2). Mapping s = 1 - t (data x1 at t = 1, noise x0 at t = 0):

        alpha_t = m(1 - t),  sigma_t = sqrt(1 - alpha_t^2)  (computed as sqrt(-expm1(-B)), B = int_0^s beta),
        d_alpha_t = beta(1 - t) alpha_t / 2,  d_sigma_t = -alpha_t d_alpha_t / sigma_t.

    Endpoints, honestly: at t = 1, alpha = 1 and sigma = 0 exactly, but sigma_t ~ sqrt(beta_min (1 - t)),
    so d_sigma_t -> -inf (returned as -inf at t = 1; the path's velocity and the conversions are
    defined for t < 1 only). At t = 0, alpha_0 = exp(-(beta_min + beta_max) / 4) (6.6e-3 for the defaults),
    not 0, and sigma_0 = sqrt(1 - alpha_0^2): x at t = 0 keeps a trace alpha_0 x1 of the data, as in
    DDPM at its noise end. We keep the schedule as it is (variance preserving, SNR(0) = alpha_0 /
    sigma_0 > 0) rather than renormalising it; starting a sampler from pure noise at t = 0 makes an
    error of order alpha_0 |x1|. SNR inverse in closed form: B = log(1 + 1/snr^2), s solves
    beta_min s + (beta_max - beta_min) s^2 / 2 = B.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        _require(0 < _real("beta_min", self.beta_min) < _real("beta_max", self.beta_max),
                 f"VPScheduler needs 0 < beta_min < beta_max, got beta_min={self.beta_min}, "
                 f"beta_max={self.beta_max}")

    @property
    def singular_times(self) -> tuple[float, ...]:
        return (1.0,)

    def __call__(self, t: torch.Tensor) -> SchedulerOutput:
        s = 1 - t
        spread = self.beta_max - self.beta_min
        integral = self.beta_min * s + 0.5 * spread * s * s
        alpha = torch.exp(-0.5 * integral)
        sigma = torch.sqrt(-torch.expm1(-integral))
        d_alpha = 0.5 * (self.beta_min + spread * s) * alpha
        return SchedulerOutput(alpha_t=alpha, sigma_t=sigma, d_alpha_t=d_alpha,
                               d_sigma_t=-alpha * d_alpha / sigma)

    def _t_from_snr(self, snr: torch.Tensor) -> torch.Tensor:
        integral = torch.log1p(snr ** -2)
        spread = self.beta_max - self.beta_min
        # The positive root of spread/2 s^2 + beta_min s - B = 0, in the cancellation-free form.
        s = 2 * integral / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2 * spread * integral))
        return 1 - s
