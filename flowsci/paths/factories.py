"""Registry factories: plain keyword arguments in, a path out (entry-point group ``flowsci.paths``)."""

from __future__ import annotations

from flowsci.paths.affine import AffinePath
from flowsci.paths.bridge import SchrodingerBridgePath
from flowsci.paths.schedulers import (
    CosineScheduler,
    LinearScheduler,
    LinearSigmaMinScheduler,
    PolynomialScheduler,
    VPScheduler,
)


def linear_path() -> AffinePath:
    """The rectified-flow path x_t = (1 - t) x0 + t x1, velocity x1 - x0."""
    return AffinePath(LinearScheduler())


def vp_path(beta_min: float = 0.1, beta_max: float = 20.0) -> AffinePath:
    """Variance-preserving (continuous DDPM) path; see :class:`VPScheduler` for its t = 0 end."""
    return AffinePath(VPScheduler(beta_min=beta_min, beta_max=beta_max))


def cosine_path() -> AffinePath:
    """x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1."""
    return AffinePath(CosineScheduler())


def polynomial_path(n: float) -> AffinePath:
    """x_t = (1 - t^n) x0 + t^n x1, n > 0."""
    return AffinePath(PolynomialScheduler(n=n))


def sigma_min_path(sigma_min: float = 1e-4) -> AffinePath:
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1 (Lipman et al., FlowSep), 0 < sigma_min < 1."""
    return AffinePath(LinearSigmaMinScheduler(sigma_min=sigma_min))


def schrodinger_bridge_path(sigma: float) -> SchrodingerBridgePath:
    """Brownian bridge x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps, sigma >= 0."""
    return SchrodingerBridgePath(sigma=sigma)
