"""Predicted vs true populations, one row per population."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


def principal_plane(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), basis (d, 2)): the plane of the two leading principal components of points (n, d)."""
    mean = points.mean(0)
    _, _, vh = torch.linalg.svd(points - mean, full_matrices=False)
    return mean, vh[:2].T


def populations_figure(batch: dict[str, torch.Tensor], predicted: torch.Tensor, label: str) -> Figure:
    """Source, predicted and true population side by side for each population of ``batch``
    (P pairs; ``predicted`` (P, N, d) on ``mask0``). Data in more than two dimensions is shown
    in the principal plane of the true population."""
    n = len(predicted)
    fig = Figure(figsize=(9, 2.8 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        source, truth = batch["x0"][i][batch["mask0"][i]], batch["x1"][i][batch["mask1"][i]]
        guess = predicted[i][batch["mask0"][i]]
        if truth.shape[1] > 2:
            mean, basis = principal_plane(truth)
            source, truth, guess = ((z - mean) @ basis for z in (source, truth, guess))
        panels = ((source, "source", "tab:gray"), (guess, "predicted", "tab:blue"),
                  (truth, "true", "tab:orange"))
        everything = torch.cat([source, guess, truth])
        low, high = everything.min(0).values, everything.max(0).values
        centre, half = (low + high) / 2, float((high - low).max()) / 2 * 1.05
        for ax, (points, title, colour) in zip(axes[i], panels):
            ax.scatter(*points.T.numpy(), s=2, alpha=0.5, color=colour)
            ax.set_title(f"{label} #{i}: {title}", fontsize=9)
            ax.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
            ax.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
            ax.set_aspect("equal")
    fig.tight_layout()
    return fig
