"""Interpolation baseline of Janny et al.: values on the observed points at the observed frames, spread
to the full n x n grid of the unit torus (scipy's scattered-data interpolation, cubic = Clough-Tocher) and
to every frame (piecewise linear in time).

Periodicity in space comes from tiling the observed points with their periodic images near the box, so the
Delaunay triangulation covers [0, 1)^2 with no NaN and no boundary artefacts; one triangulation serves all
fields of a batch.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.interpolate import CloughTocher2DInterpolator, LinearNDInterpolator
from scipy.spatial import Delaunay, cKDTree

from flowsci_domains.sparse_flow.observations import grid_positions

METHODS = ("linear", "cubic", "nearest")
DISTINCT_TOL = 1e-9  # closer positions count as one point (periodic distance)


def _wrap(positions: np.ndarray) -> np.ndarray:
    """Positions (N, 2) reduced to [0, 1)^2 (x % 1 rounds to 1.0 for tiny negative x, hence the fix)."""
    wrapped = np.mod(positions, 1.0)
    wrapped[wrapped >= 1.0] = 0.0
    return wrapped


def periodic_tiling(positions: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The points (N, 2) in [0, 1)^2 and their 8 periodic images that fall within ``margin`` of the box.

    Returns the tiled points (M, 2), the originals first, and the index (M,) of each one's original point.
    """
    points, source = [positions], [np.arange(len(positions))]
    for shift in itertools.product((-1.0, 0.0, 1.0), repeat=2):
        if shift == (0.0, 0.0):
            continue
        image = positions + np.asarray(shift)
        keep = np.all((image >= -margin) & (image <= 1.0 + margin), axis=1)
        points.append(image[keep])
        source.append(np.flatnonzero(keep))
    return np.concatenate(points), np.concatenate(source)


def interpolate_space(values: torch.Tensor, positions: torch.Tensor | np.ndarray, n: int,
                      method: str = "cubic", margin: float = 0.25) -> torch.Tensor:
    """Interpolate B scattered periodic fields to the n x n grid of the unit torus.

    values: (B, N) at positions (N, 2) (wrapped into [0, 1)^2; they must be distinct). method: "cubic"
    (Clough-Tocher, as scipy.interpolate.griddata's "cubic"), "linear" (on the Delaunay triangulation) or
    "nearest" (periodic nearest neighbour). The triangulation uses the periodic images within ``margin``
    of the box; should its hull miss a grid point (very sparse points), all 8 images are used instead.
    Returns (B, n, n) in values' dtype and device; out[b, i, j] is the field at (i/n, j/n), equal to
    the given value where that grid point is observed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 < margin <= 1.0:
        raise ValueError(f"margin must lie in (0, 1], got {margin}")
    if values.ndim != 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float tensor of shape (B, N), got {tuple(values.shape)} "
                         f"{values.dtype}")
    pos = np.asarray(torch.as_tensor(positions).detach().cpu(), dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] != values.shape[1] or pos.shape[0] == 0:
        raise ValueError(f"positions must have shape (N, 2) with N = values.shape[1] = {values.shape[1]} "
                         f"> 0, got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions must be finite")
    pos = _wrap(pos)
    if cKDTree(pos, boxsize=1.0).query_pairs(DISTINCT_TOL):
        raise ValueError(f"positions must be distinct on the torus (no two within {DISTINCT_TOL})")
    vals = values.detach().cpu().to(torch.float64).numpy().T  # (N, B)
    grid = grid_positions(n, torch.float64).numpy()
    if method == "nearest":
        _, nearest = cKDTree(pos, boxsize=1.0).query(grid)
        out = vals[nearest]
    else:
        tiled, source = periodic_tiling(pos, margin)
        tri = Delaunay(tiled)
        if (tri.find_simplex(grid) < 0).any():
            tiled, source = periodic_tiling(pos, 1.0)
            tri = Delaunay(tiled)
        interpolator = CloughTocher2DInterpolator if method == "cubic" else LinearNDInterpolator
        out = interpolator(tri, vals[source])(grid)  # (n * n, B)
    return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(-1, n, n).to(values.dtype).to(values.device)


def interpolate_time(values: torch.Tensor, frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Piecewise-linear interpolation in time from the observed frames to frames 0 .. n_frames - 1.

    values: (B, F, ...) at frames (F,) (integer, strictly increasing, within [0, n_frames)). Frames
    before the first observed frame or after the last hold its value constant (as numpy.interp does):
    no extrapolation. Returns (B, n_frames, ...), equal to values at the observed frames.
    """
    frames = torch.as_tensor(frames)
    if values.ndim < 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float tensor of shape (B, F, ...), got {tuple(values.shape)} "
                         f"{values.dtype}")
    if frames.ndim != 1 or len(frames) != values.shape[1] or len(frames) == 0:
        raise ValueError(f"frames must have shape (F,) with F = values.shape[1] = {values.shape[1]} > 0, "
                         f"got {tuple(frames.shape)}")
    if frames.is_floating_point() or frames.is_complex():
        raise ValueError(f"frames must be integer frame indices, got dtype {frames.dtype}")
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    if (frames < 0).any() or (frames >= n_frames).any() or (frames[1:] <= frames[:-1]).any():
        raise ValueError(f"frames must be strictly increasing within [0, {n_frames}), got {frames.tolist()}")
    frames = frames.to(values.device)
    if len(frames) == 1:
        return values[:, :1].expand(-1, n_frames, *values.shape[2:]).clone()
    t = torch.arange(n_frames, device=values.device)
    lower = (torch.searchsorted(frames, t, right=True) - 1).clamp(0, len(frames) - 2)
    t0, t1 = frames[lower], frames[lower + 1]
    weight = ((t - t0).to(values.dtype) / (t1 - t0).to(values.dtype)).clamp(0.0, 1.0)
    weight = weight.reshape(1, n_frames, *([1] * (values.ndim - 2)))
    return values[:, lower] * (1.0 - weight) + values[:, lower + 1] * weight


def interpolate_trajectories(values: torch.Tensor, positions: torch.Tensor | np.ndarray,
                             frames: torch.Tensor, n: int, n_frames: int, method: str = "cubic",
                             margin: float = 0.25) -> torch.Tensor:
    """The interpolation baseline: values (B, F, N) on the observed points (N, 2) at the observed frames (F,)
    to every grid point and frame, space first (interpolate_space on the B * F fields, one triangulation)
    then time (interpolate_time). Returns (B, n_frames, n, n)."""
    if values.ndim != 3:
        raise ValueError(f"values must have shape (B, F, N), got {tuple(values.shape)}")
    batch, n_obs_frames, n_points = values.shape
    fields = interpolate_space(values.reshape(batch * n_obs_frames, n_points), positions, n, method, margin)
    return interpolate_time(fields.reshape(batch, n_obs_frames, n, n), frames, n_frames)
