"""Probability paths between a source (t = 0) and a target (t = 1).

Time convention (docs/design.md): t = 0 is the source, t = 1 the target; an affine path is
x_t = sigma_t x0 + alpha_t x1 and the regression target of flow matching is its velocity
dx_t/dt = d_sigma_t x0 + d_alpha_t x1.

- :mod:`~flowsci.paths.schedulers`: alpha_t, sigma_t, their derivatives and SNR inverses;
- :mod:`~flowsci.paths.affine`: :class:`AffinePath` and the converters velocity <-> x1 <-> x0 <-> score;
- :mod:`~flowsci.paths.schedule_transform`: a trained velocity carried to another schedule;
- :mod:`~flowsci.paths.bridge`: the Brownian-bridge (Schrodinger-bridge) path;
- :mod:`~flowsci.paths.factories`: the registered names (``path: {name: vp, beta_max: 20}``).
"""

from flowsci.paths.affine import AffinePath
from flowsci.paths.bridge import SchrodingerBridgePath
from flowsci.paths.factories import (
    cosine_path,
    linear_path,
    polynomial_path,
    schrodinger_bridge_path,
    sigma_min_path,
    vp_path,
)
from flowsci.paths.path_sample import PathSample
from flowsci.paths.schedule_transform import ScheduleTransformedVelocity
from flowsci.paths.schedulers import (
    CosineScheduler,
    LinearScheduler,
    LinearSigmaMinScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    VPScheduler,
    bisect_snr_inverse,
)

__all__ = [
    "AffinePath", "CosineScheduler", "LinearScheduler", "LinearSigmaMinScheduler", "PathSample",
    "PolynomialScheduler", "ScheduleTransformedVelocity", "Scheduler", "SchedulerOutput",
    "SchrodingerBridgePath", "VPScheduler", "bisect_snr_inverse", "cosine_path", "linear_path",
    "polynomial_path", "schrodinger_bridge_path", "sigma_min_path", "vp_path",
]
