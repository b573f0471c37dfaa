"""The Brownian-bridge (Schrodinger-bridge flow matching) path: a linear path with bridge noise."""

from __future__ import annotations

import math

import torch

from flowsci.paths.path_sample import PathSample, check_time, per_sample


class SchrodingerBridgePath:
    """x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps, eps ~ N(0, I) drawn per sample.

    This is the Brownian bridge from x0 to x1 with diffusion sigma (the conditional path of
    SB-CFM when the pairs come from an entropic OT plan with regularisation 2 sigma^2). Its
    velocity for a fixed eps is the time derivative along the bridge:

        dx_t = x1 - x0 + sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps
             = x1 - x0 + (1 - 2t) / (2 t (1 - t)) (x_t - mu_t),   mu_t = (1 - t) x0 + t x1.

    Endpoints: the noise term vanishes at t = 0 and t = 1 but its derivative is infinite there,
    so for sigma > 0, :meth:`sample` evaluates the path at t clamped to [eps_f, 1 - eps_f], with
    eps_f the machine epsilon of t's dtype (1.2e-7 in float32, 2.2e-16 in float64): the smallest
    margin at which 1 - t still resolves t(1 - t) on the upper side. This moves x_t by at most
    eps_f |x1 - x0| + sigma sqrt(eps_f) |eps| and bounds the noise part of the velocity by
    sigma / (2 sqrt(eps_f)) |eps| (about 1.4e3 sigma |eps| in float32): finite but large, so a time
    sampler that keeps away from the ends (e.g. [0.01, 0.99]) gives better-conditioned targets.
    The returned ``PathSample.t`` is the clamped time. sigma = 0 is the linear path (no clamp).
    """

    def __init__(self, sigma: float):
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
                and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0 (the bridge's diffusion), got {sigma!r}")
        self.sigma = float(sigma)

    def __repr__(self) -> str:
        return f"SchrodingerBridgePath(sigma={self.sigma})"

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, *,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> PathSample:
        """x0, x1: (B, *D); t: (B,) in [0, 1]; ``noise``: (B, *D) eps to use instead of a fresh
        draw from ``generator`` (or the global RNG). Returns the sample with its ``noise``."""
        check_time(t, x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        if self.sigma > 0:
            margin = torch.finfo(t.dtype).eps
            t = t.clamp(margin, 1 - margin)
        tb = per_sample(t, x0)
        spread = torch.sqrt(tb * (1 - tb))
        x_t = (1 - tb) * x0 + tb * x1 + self.sigma * spread * noise
        dx_t = x1 - x0
        if self.sigma > 0:
            dx_t = dx_t + self.sigma * (1 - 2 * tb) / (2 * spread) * noise
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t, noise=noise)
