"""Figures of the LPINN domain: solution and error over (x, t), snapshots, characteristics."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from flowsci_domains.lpinn.problems import PERIOD


def solution_figure(grid_x: np.ndarray, grid_t: np.ndarray, predicted: np.ndarray, reference: np.ndarray,
                    title: str) -> Figure:
    """Reference, prediction and error as (x, t) images, and snapshots at three times."""
    fig = Figure(figsize=(15, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    extent = (grid_t[0], grid_t[-1], grid_x[0], PERIOD)
    low, high = reference.min(), reference.max()
    for ax, field, name in ((axes[0], reference, "reference"), (axes[1], predicted, "prediction")):
        image = ax.imshow(field, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=low,
                          vmax=high)
        ax.set(title=name, xlabel="t", ylabel="x")
        fig.colorbar(image, ax=ax)
    error = np.abs(predicted - reference)
    image = axes[2].imshow(error, origin="lower", aspect="auto", extent=extent, cmap="magma")
    axes[2].set(title="|error|", xlabel="t", ylabel="x")
    fig.colorbar(image, ax=axes[2])
    for j, colour in zip(np.linspace(0, len(grid_t) - 1, 3).astype(int), ("C0", "C1", "C2")):
        axes[3].plot(grid_x, reference[:, j], color="k", lw=3, alpha=0.3)
        axes[3].plot(grid_x, predicted[:, j], color=colour, lw=1.2, label=f"t = {grid_t[j]:.2f}")
    axes[3].set(title="snapshots (grey: reference)", xlabel="x", ylabel="u")
    axes[3].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def characteristics_figure(labels: np.ndarray, grid_t: np.ndarray, x_labels: np.ndarray, title: str,
                           n_curves: int = 24) -> Figure:
    """The learned characteristics x(ξ, t) of the LPINN, unwrapped and wrapped into [0, 2π)."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    unwrapped, wrapped = fig.subplots(1, 2)
    for i in np.linspace(0, len(labels) - 1, n_curves).astype(int):
        unwrapped.plot(grid_t, x_labels[i], color="C0", lw=0.8)
        wrapped.plot(grid_t, np.mod(x_labels[i], PERIOD), ".", color="C0", ms=1)
    unwrapped.set(title="x(ξ, t)", xlabel="t", ylabel="x")
    wrapped.set(title="x(ξ, t) mod 2π", xlabel="t", ylabel="x", ylim=(0, PERIOD))
    fig.suptitle(title)
    return fig
