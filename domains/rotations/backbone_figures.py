"""Figures of the backbones domain: CA traces and local-distance histograms."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


def backbones_figure(generated: torch.Tensor, reference: torch.Tensor) -> Figure:
    """3-D CA traces (B, L, 3) in Å: generated (top row) and test windows (bottom row)."""
    columns = max(len(generated), len(reference))
    fig = Figure(figsize=(3 * columns, 6))
    for row, (batch, label) in enumerate(((generated, "generated"), (reference, "test"))):
        for i, ca in enumerate(batch):
            ax = fig.add_subplot(2, columns, row * columns + i + 1, projection="3d")
            points = ca.numpy()
            ax.plot(*points.T, color="tab:blue" if row == 0 else "tab:orange", lw=1.2)
            ax.scatter(*points[0], color="black", s=10)
            ax.set_title(f"{label} {i}", fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def distance_histograms_figure(generated: torch.Tensor, reference: torch.Tensor) -> Figure:
    """Histograms of CA(i)-CA(i+k) distances for k = 1, 2, 3 (Å), generated vs test."""
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    for ax, gap, bounds in zip(axes, (1, 2, 3), ((2.5, 5.0), (4.0, 7.5), (4.0, 11.0))):
        for ca, label, colour in ((generated, "generated", "tab:blue"), (reference, "test", "tab:orange")):
            d = (ca[:, gap:] - ca[:, :-gap]).norm(dim=-1).flatten().numpy()
            ax.hist(np.clip(d, *bounds), bins=60, range=bounds, density=True, histtype="step", color=colour,
                    label=label)
        ax.set_xlabel(f"CA(i)-CA(i+{gap}) (Å)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
