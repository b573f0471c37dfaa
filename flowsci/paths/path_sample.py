"""The record a path returns for a batch: the point x_t on the path and its velocity dx_t."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PathSample:
    """A point on the path and its velocity. x0, x1, x_t, dx_t: (B, *D); t: (B,).

    ``noise``: (B, *D), the Gaussian draw of a stochastic path (:class:`SchrodingerBridgePath`);
    None for deterministic paths.
    """

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    dx_t: torch.Tensor
    noise: torch.Tensor | None = None


def check_time(t: torch.Tensor, x: torch.Tensor) -> None:
    """ValueError unless t has shape (B,) for x: (B, *D)."""
    if x.dim() < 1 or t.shape != x.shape[:1]:
        raise ValueError(f"t must have shape ({x.shape[0] if x.dim() else '?'},) for a batch of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")


def per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t: (B,) reshaped to (B, 1, ..., 1) so that it broadcasts against x: (B, *D)."""
    return t.reshape(-1, *[1] * (x.dim() - 1))
