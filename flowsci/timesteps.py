"""Training-time samplers of t in [0, 1] and the resolution-dependent time shift.

Time convention (docs/design.md): t = 0 is the source (noise), t = 1 the data. SD3 and 2-RF++
write their samplers with tau = 1 - t (tau = 1 is noise); each sampler below is adapted at
this boundary, ``t = 1 - tau``, and its docstring says which end a parameter pushes mass to.

Every sampler draws u ~ U[0, 1] and returns ``shift_time(quantile(u), shift)``: one uniform
number per time, so a seeded generator reproduces the times exactly. ``cdf(t)`` is the exact
distribution function of the returned times (shift included), for tests and documentation.
YAML: ``objective.timesteps: {name: logit_normal, m: 0.0, s: 1.0, shift: 3.0}``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution-dependent shift, in our convention: t -> t / (shift - (shift - 1) t).

    SD3 (tau = 1 - t, tau = 1 noise) maps tau -> shift tau / (1 + (shift - 1) tau), which
    multiplies the noise-to-signal ratio tau / (1 - tau) by ``shift``. With t = 1 - tau the
    same map is t -> t / (shift - (shift - 1) t): (1 - t) / t is multiplied by ``shift``.
    ``shift > 1`` moves times toward the source/noise end t = 0 (SD3 uses 3.0 at 1024 px;
    Flux's ``mu`` is ``shift = exp(mu)``), ``shift < 1`` toward the data, ``shift = 1`` is the
    identity, and ``shift_time(shift_time(t, a), 1 / a) = t``. t: any shape, in [0, 1].
    """
    shift = check_shift(shift)
    return t / (shift - (shift - 1.0) * t)


def check_shift(shift: float) -> float:
    """``shift`` as a float, or a ValueError unless it is a finite number > 0."""
    if isinstance(shift, bool) or not (isinstance(shift, (int, float)) and math.isfinite(shift)
                                       and shift > 0):
        raise ValueError(f"shift must be a finite number > 0 (1 = no shift), got {shift!r}")
    return float(shift)


class TimeSampler(ABC):
    """Draws training times: ``sampler(n) -> (n,)`` in [0, 1], torch's default dtype.

    Subclasses define the unshifted distribution through :meth:`_quantile` (inverse CDF,
    float64 u in [0, 1] -> t) and :meth:`_cdf`; the ``shift`` of every sampler is applied here.
    """

    def __init__(self, *, shift: float = 1.0):
        self.shift = check_shift(shift)

    @abstractmethod
    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse CDF of the unshifted distribution; u, result: float64, same shape."""

    @abstractmethod
    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        """CDF of the unshifted distribution; t, result: float64, same shape."""

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse CDF, shift included; u: any shape in [0, 1] -> t, float64."""
        t = self._quantile(torch.as_tensor(u, dtype=torch.float64))
        return shift_time(t, self.shift).clamp(0.0, 1.0)  # the clamp only removes rounding

    def cdf(self, t: ArrayT) -> ArrayT:
        """P(T <= t) of the sampled times (shift included); t: tensor or numpy array in [0, 1]."""
        as_numpy = isinstance(t, np.ndarray)
        tt = torch.as_tensor(np.asarray(t, dtype=np.float64) if as_numpy else t, dtype=torch.float64)
        p = self._cdf(shift_time(tt.clamp(0.0, 1.0), 1.0 / self.shift)).clamp(0.0, 1.0)
        return p.numpy() if as_numpy else p

    def __call__(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """n times, shape (n,), on ``device``; a seeded ``generator`` reproduces them."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        u = torch.rand(n, dtype=torch.float64, device=device, generator=generator)
        return self.quantile(u).to(torch.get_default_dtype())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class UniformTime(TimeSampler):
    """t ~ U[0, 1] (then shifted; ``shift=3`` is SD3's high-resolution training schedule)."""

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        return t


class LogitNormalTime(TimeSampler):
    """SD3's logit-normal sampler, with SD3's parameter meaning kept.

    SD3 draws tau = sigmoid(u), u ~ N(m, s^2), tau = 1 noise. In our convention t = 1 - tau,
    so logit(t) ~ N(-m, s^2): **m > 0 puts more mass near t = 0 (source/noise)**, m < 0 near
    the data; s > 0 is the spread. SD3's best setting is m = 0, s = 1.
    """

    def __init__(self, m: float = 0.0, s: float = 1.0, *, shift: float = 1.0):
        super().__init__(shift=shift)
        if not math.isfinite(m):
            raise ValueError(f"m must be a finite number, got {m!r}")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"s must be a finite number > 0, got {s!r}")
        self.m, self.s = float(m), float(s)

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-self.m + self.s * torch.special.ndtri(u))

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr((torch.logit(t) + self.m) / self.s)


MODE_SCALE_MAX = 2.0 / (math.pi - 2.0)
"""Largest mode scale s for which SD3's mode map is monotone (about 1.752)."""


class ModeTime(TimeSampler):
    """SD3's "mode sampling with heavy tails", scale s in [-1, 2/(pi - 2)].

    SD3: tau = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U[0, 1]. In our convention
    t = 1 - f(u) = u + s (cos^2(pi u / 2) - 1 + u). s = 0 is uniform; s > 0 concentrates mass
    around t = 1/2 (SD3's good setting s = 1.29), s < 0 near both ends. The map is monotone
    exactly for -1 <= s <= 2/(pi - 2); outside it is not a distribution's quantile.
    """

    def __init__(self, s: float = 1.29, *, shift: float = 1.0):
        super().__init__(shift=shift)
        if not (-1.0 <= s <= MODE_SCALE_MAX):
            raise ValueError(f"s must lie in [-1, 2/(pi-2) = {MODE_SCALE_MAX:.4f}] (where the mode "
                             f"map is monotone), got {s!r}")
        self.s = float(s)

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.s * (torch.cos(math.pi * u / 2).pow(2) - 1 + u)

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        # The quantile has no closed-form inverse. Vectorised bisection on the monotone map is
        # written by hand: scipy's bracketing solvers are scalar, and Newton's method stalls
        # where the map's derivative vanishes (at u = 1/2 for s = 2/(pi - 2)). 60 halvings of
        # [0, 1] reach float64 resolution.
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self._quantile(mid) < t
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2


class CosMapTime(TimeSampler):
    """SD3's CosMap: density 2 / (pi (1 - 2t + 2t^2)), symmetric about t = 1/2 (so SD3's
    convention and ours give the same law). CDF (2/pi) atan2(t, 1 - t); slightly more mass
    near the middle than uniform (density 4/pi at 1/2, 2/pi at the ends)."""

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        # t / (1 - t) = tan(pi u / 2), written with sin and cos so u = 1 stays finite
        angle = math.pi * u / 2
        return torch.sin(angle) / (torch.sin(angle) + torch.cos(angle))

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        return torch.atan2(t, 1 - t) * (2 / math.pi)


U_SHAPE_MAX = 1400.0
"""Largest U-shape parameter a for which sinh(a/2) stays finite in float64."""


class UShapedTime(TimeSampler):
    """2-RF++'s U-shaped sampler: density a cosh(a (t - 1/2)) / (2 sinh(a/2)), a > 0.

    Symmetric about t = 1/2 (the same law in either convention); larger ``a`` puts more mass
    near both ends (a = 4: density 2.07 at the ends, 0.55 in the middle; a -> 0 is uniform).
    Sampled by the closed-form inverse CDF t = 1/2 + asinh((2u - 1) sinh(a/2)) / a.
    """

    def __init__(self, a: float = 4.0, *, shift: float = 1.0):
        super().__init__(shift=shift)
        if not (0 < a <= U_SHAPE_MAX):
            raise ValueError(f"a must lie in (0, {U_SHAPE_MAX:g}], got {a!r}")
        self.a = float(a)

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.asinh((2 * u - 1) * math.sinh(self.a / 2)) / self.a

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.sinh(self.a * (t - 0.5)) / (2 * math.sinh(self.a / 2))


class DiscreteTime(TimeSampler):
    """Uniform choice among fixed times (then shifted), e.g. ``values=[0, 0.25, 0.5, 0.75]``
    for 4-step distillation (the times of Liu et al.'s k-step distillation, t = 0 the noise,
    as in our convention). Repeated values are drawn proportionally more often."""

    def __init__(self, values: Sequence[float], *, shift: float = 1.0):
        super().__init__(shift=shift)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"values must be a non-empty list of times in [0, 1], got {values!r}")
        if not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"values must all be numbers in [0, 1], got {list(values)!r}")
        self.values = [float(v) for v in values]

    def _quantile(self, u: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(sorted(self.values), dtype=torch.float64, device=u.device)
        index = (u * len(self.values)).long().clamp(max=len(self.values) - 1)
        return table[index]

    def _cdf(self, t: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(self.values, dtype=torch.float64, device=t.device)
        return (table <= t.unsqueeze(-1)).to(torch.float64).mean(-1)
