"""Post-hoc change of schedule: the velocity of a new affine path from a field trained on another."""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowsci.paths.affine import AffinePath
from flowsci.paths.path_sample import check_time, per_sample
from flowsci.paths.schedulers import Scheduler

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v(x, t) with x: (B, *D) and t: (B,) -> (B, *D) (the signature the solvers call)."""


class ScheduleTransformedVelocity:
    """The marginal velocity of the path (``new``) built from one trained for ``original``.

    Both paths join the same coupling (x0, x1): x_t = s_t x0 + a_t x1 (original, coefficients
    s, a) and y_r = sigma_r x0 + alpha_r x1 (new). Derivation:

    1. Match the SNR: t(r) = original.snr_inverse(alpha_r / sigma_r), so a_t / s_t = alpha_r / sigma_r.
    2. Then y_r = c_r x_{t(r)} for every pair, with the scale c_r = sigma_r / s_t = alpha_r / a_t,
       computed as (alpha_r + sigma_r) / (a_t + s_t), which stays finite at both ends.
    3. Since c_r > 0, the events {y_r = y} and {x_t = y / c_r} coincide, so the posterior means
       agree: E[x0 | y_r = y] = x0_hat and E[x1 | y_r = y] = x1_hat evaluated on the original path
       at (x, t) = (y / c_r, t(r)). The original field v_orig(x, t) = s'_t x0_hat + a'_t x1_hat
       gives them by the 2x2 solve of :class:`AffinePath` (velocity_to_x0 / velocity_to_x1).
    4. The new marginal velocity is E[sigma'_r x0 + alpha'_r x1 | y_r = y]:

           v_new(y, r) = sigma'_r x0_hat + alpha'_r x1_hat.

    (Equivalently v_new = (c'_r / c_r) y + c_r t'(r) v_orig(y / c_r, t(r)), differentiating
    y_r = c_r x_{t(r)}; the form above needs no derivative of t(r).)

    Valid where the new SNR lies in the original's SNR range (a ValueError otherwise, e.g. a
    VP-trained field asked for SNR < SNR_VP(0) near r = 0), where the original conversions are
    defined (D_t finite and != 0; see :mod:`flowsci.paths.affine`) and where the new derivatives are
    finite (r < 1 for a VP ``new``); elsewhere a ValueError names the times. Callable as v(x, t)
    with x: (B, *D), t: (B,), so it plugs into any solver.
    """

    def __init__(self, velocity_fn: VelocityFn, original: Scheduler, new: Scheduler):
        for name, scheduler in (("original", original), ("new", new)):
            if not isinstance(scheduler, Scheduler):
                raise ValueError(f"{name} must be a flowsci.paths.Scheduler, got {type(scheduler).__name__}")
        self.velocity_fn, self.original, self.new = velocity_fn, original, new
        self._original_path = AffinePath(original)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B, *D) on the new path at times t: (B,) -> the new path's velocity (B, *D)."""
        check_time(t, x)
        c_new = self.new(t)
        infinite = ~(torch.isfinite(c_new.d_sigma_t) & torch.isfinite(c_new.d_alpha_t))
        if bool(infinite.any()):
            raise ValueError(f"ScheduleTransformedVelocity: the new schedule {self.new!r} has infinite "
                             f"derivatives at t = {t[infinite][:5].tolist()}")
        t_orig = self.original.snr_inverse(c_new.alpha_t / c_new.sigma_t)
        c_orig = self.original(t_orig)
        scale = (c_new.alpha_t + c_new.sigma_t) / (c_orig.alpha_t + c_orig.sigma_t)
        x_orig = x / per_sample(scale, x)
        v_orig = self.velocity_fn(x_orig, t_orig)
        x0_hat = self._original_path.velocity_to_x0(v_orig, x_orig, t_orig)
        x1_hat = self._original_path.velocity_to_x1(v_orig, x_orig, t_orig)
        return per_sample(c_new.d_sigma_t, x) * x0_hat + per_sample(c_new.d_alpha_t, x) * x1_hat
