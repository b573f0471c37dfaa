"""Trajectory metrics of 2-D Kolmogorov flow: vorticity correlation time and velocity profiles.

Fields follow the axis convention of :mod:`flowsci_domains.turbulence.spectral` (last axis = y,
the forcing direction; x is homogeneous). The correlation time is the "high-correlation
duration" of Kochkov et al. 2021 (PNAS 118, e2101784118): how long the vorticity correlation of
a prediction with the reference stays above a threshold (0.95 there).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from flowsci_domains.turbulence.spectral import grid_size, velocity_from_vorticity


def vorticity_correlation(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Spatial Pearson correlation (...) of the fields pred and ref (..., n, n).

    NaN where a field is constant (zero variance) or not finite.
    """
    n = grid_size(pred, "pred")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, "
                         f"got {tuple(pred.shape)} and {tuple(ref.shape)}")
    grid_size(ref, "ref")
    p = pred.double().reshape(*pred.shape[:-2], n * n)
    r = ref.double().reshape(*ref.shape[:-2], n * n)
    p = p - p.mean(dim=-1, keepdim=True)
    r = r - r.mean(dim=-1, keepdim=True)
    return (p * r).sum(dim=-1) / (p.square().sum(dim=-1) * r.square().sum(dim=-1)).sqrt()


def correlation_time(pred: torch.Tensor, ref: torch.Tensor, times: torch.Tensor,
                     threshold: float = 0.95) -> torch.Tensor:
    """Per trajectory, the first time the vorticity correlation of pred and ref drops below
    ``threshold``: (B,) float64 from pred, ref (B, T, n, n) and increasing times (T,).

    The crossing is interpolated linearly between the last snapshot at or above the threshold and
    the first below it; a snapshot whose correlation is not finite (a diverged or constant
    prediction) counts as decorrelated at its own time. Correlated at every snapshot: times[-1];
    below already at the first: times[0].
    """
    if pred.dim() != 4:
        raise ValueError(f"pred must have shape (B, T, n, n), got {tuple(pred.shape)}")
    if not -1 <= threshold <= 1:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    correlation = vorticity_correlation(pred, ref)                            # (B, T)
    times = torch.as_tensor(times, dtype=torch.float64).to(correlation.device)
    if times.shape != correlation.shape[1:]:
        raise ValueError(f"times must have shape ({pred.shape[1]},), got {tuple(times.shape)}")
    if not torch.isfinite(times).all() or (times.diff() <= 0).any():
        raise ValueError("times must be finite and strictly increasing")
    below = ~(correlation >= threshold)                                       # NaN counts as below
    first = below.int().argmax(dim=1)                                         # (B,) 0 when never below
    previous = (first - 1).clamp(min=0)
    c_before = correlation.gather(1, previous[:, None])[:, 0]
    c_after = correlation.gather(1, first[:, None])[:, 0]
    t_before, t_after = times[previous], times[first]
    fraction = ((c_before - threshold) / (c_before - c_after)).nan_to_num(nan=1.0)
    crossing = torch.where(first > 0, t_before + fraction * (t_after - t_before), times[0])
    return torch.where(below.any(dim=1), crossing, times[-1])


@dataclasses.dataclass
class VelocityProfiles:
    """x-averaged velocity statistics of a flow homogeneous in x, each (n,) over y = 2 pi j / n.

    mean_u: U(y) = <u>; rms_u, rms_v: sqrt(<u'^2>), sqrt(<v'^2>); reynolds_stress: <u'v'>, with
    u' = u - U(y), v' = v (the x-average of v vanishes on the periodic box) and <.> the average
    over x and every leading axis (trajectories, time).
    """

    y: torch.Tensor
    mean_u: torch.Tensor
    rms_u: torch.Tensor
    rms_v: torch.Tensor
    reynolds_stress: torch.Tensor


def velocity_profiles(w: torch.Tensor) -> VelocityProfiles:
    """Profiles of the velocity implied by the vorticity w (..., n, n), e.g. (B, T, n, n)."""
    n = grid_size(w)
    velocity = velocity_from_vorticity(w).reshape(-1, 2, n, n)               # (S, 2, n_x, n_y)
    u, v = velocity[:, 0], velocity[:, 1]
    mean_u = u.mean(dim=(0, 1))
    u_fluctuation = u - mean_u
    y = 2 * math.pi * torch.arange(n, device=w.device, dtype=w.dtype) / n
    return VelocityProfiles(y=y, mean_u=mean_u, rms_u=u_fluctuation.square().mean(dim=(0, 1)).sqrt(),
                            rms_v=v.square().mean(dim=(0, 1)).sqrt(),
                            reynolds_stress=(u_fluctuation * v).mean(dim=(0, 1)))
