"""Sparse observations of a field on the n x n unit-box grid, and errors split by what was observed.

Flat index of grid point (i, j) is i * n + j, at position (x_i, y_j) = (i / n, j / n). Observed
points are a seeded random subset of the grid; observed frames are every ``time_sub``-th frame,
starting at frame 0. Errors are reported on the four splits (observed frame or not) x (observed
point or not), as in Janny et al. (ICLR 2024).
"""

from __future__ import annotations

import torch

# Names of the error splits, in the order of error_splits' masks.
SPLITS = ("in_t_in_s", "in_t_out_s", "out_t_in_s", "out_t_out_s")


def _int_at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def observed_points(n: int, space_sub: float, seed: int) -> torch.Tensor:
    """Sorted flat indices (N,) long of N = max(3, round(space_sub * n^2)) distinct grid points,
    drawn without replacement with a torch.Generator seeded by ``seed``; space_sub in (0, 1]."""
    n = _int_at_least("n", n, 2)
    if isinstance(space_sub, bool) or not isinstance(space_sub, (int, float)) or not 0 < space_sub <= 1:
        raise ValueError(f"space_sub must be a fraction of the grid points in (0, 1], got {space_sub!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    count = max(3, round(space_sub * n * n))
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n * n, generator=generator)[:count].sort().values


def grid_positions(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Coordinates (n * n, 2) of the grid points in flat order: row i * n + j is (i / n, j / n)."""
    n = _int_at_least("n", n, 1)
    axis = torch.arange(n, dtype=torch.float64) / n
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1).to(dtype)


def observed_frames(n_frames: int, time_sub: int) -> torch.Tensor:
    """Observed frame indices (F,) long: 0, time_sub, 2 time_sub, ... < n_frames."""
    n_frames = _int_at_least("n_frames", n_frames, 1)
    time_sub = _int_at_least("time_sub", time_sub, 1)
    return torch.arange(0, n_frames, time_sub)


def _check_indices(name: str, indices: torch.Tensor, size: int) -> None:
    if not isinstance(indices, torch.Tensor) or indices.dim() != 1 or indices.dtype != torch.long:
        raise ValueError(f"{name} must be a 1-D long tensor of indices")
    if indices.numel() and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"{name} must hold indices in [0, {size}), got range "
                         f"[{indices.min().item()}, {indices.max().item()}]")


def error_splits(n: int, n_frames: int, observed: torch.Tensor,
                 frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks (n_frames, n * n) of the four splits "in_t_in_s", "in_t_out_s", "out_t_in_s",
    "out_t_out_s": in_t = the frame is in ``frames``, in_s = the point is in ``observed`` (flat
    indices). Every (frame, point) lies in exactly one split."""
    n = _int_at_least("n", n, 1)
    n_frames = _int_at_least("n_frames", n_frames, 1)
    _check_indices("observed", observed, n * n)
    _check_indices("frames", frames, n_frames)
    in_t = torch.zeros(n_frames, dtype=torch.bool)
    in_t[frames] = True
    in_s = torch.zeros(n * n, dtype=torch.bool)
    in_s[observed] = True
    in_t, in_s = in_t[:, None], in_s[None, :]
    return dict(zip(SPLITS, (in_t & in_s, in_t & ~in_s, ~in_t & in_s, ~in_t & ~in_s), strict=True))


def split_mse(prediction: torch.Tensor, truth: torch.Tensor,
              masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """MSE of prediction against truth over each mask of :func:`error_splits`, as "mse_<split>".

    prediction, truth: (B, n_frames, n * n) or (B, n_frames, n, n); masks (n_frames, n * n). The
    mean runs over the batch and the masked (frame, point) pairs; an empty split is omitted.
    """
    if prediction.shape != truth.shape or prediction.dim() not in (3, 4):
        raise ValueError(f"prediction and truth must share a shape (B, n_frames, n * n) or "
                         f"(B, n_frames, n, n), got {tuple(prediction.shape)} and {tuple(truth.shape)}")
    if prediction.dim() == 4:
        prediction, truth = prediction.flatten(-2), truth.flatten(-2)
    squared = (prediction.double() - truth.double()).square()
    errors = {}
    for name, mask in masks.items():
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(squared.shape[1:]):
            raise ValueError(f"masks[{name!r}] must be a boolean tensor of shape {tuple(squared.shape[1:])}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if mask.any():
            errors[f"mse_{name}"] = squared[:, mask.to(squared.device)].mean().item()
    return errors
