"""Figures of the sparse_flow domain: reconstructed fields next to the truth, and the four errors."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci_domains.sparse_flow.objectives import Observation

SPLITS = (("in_t_in_s", "observed t,\nobserved x"), ("in_t_out_s", "observed t,\nunobserved x"),
          ("out_t_in_s", "unobserved t,\nobserved x"), ("out_t_out_s", "unobserved t,\nunobserved x"))


def field_panels(truth: torch.Tensor, fields: torch.Tensor, obs: Observation, frames: list[int],
                 label: str, title: str, spread: torch.Tensor | None = None) -> Figure:
    """Rows: the truth with the observed points marked (at observed frames), the model's field
    (row ``label``), its error (and, with ``spread`` (T, n, n), the ensemble's standard deviation),
    at ``frames``; ``title`` above all.

    truth, fields: (T, n, n) with [t, i, j] at (x_i, y_j); x is drawn horizontally."""
    observed_frames = set(obs.frames.tolist())
    limit = float(truth.abs().quantile(0.995))
    error = fields - truth
    error_limit = float(error.abs().quantile(0.995)) or 1.0
    rows = [(truth, "truth", "RdBu_r", -limit, limit), (fields, label, "RdBu_r", -limit, limit),
            (error, "error", "PuOr", -error_limit, error_limit)]
    if spread is not None:
        rows.append((spread, "ensemble std", "magma", 0.0, error_limit))
    fig = Figure(figsize=(2.5 * len(frames) + 1.2, 2.5 * len(rows) + 0.3))
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(len(rows), len(frames), squeeze=False)
    points = obs.positions.numpy()
    for row, (values, name, cmap, low, high) in enumerate(rows):
        for column, frame in enumerate(frames):
            ax = axes[row, column]
            ax.set_xticks([]), ax.set_yticks([])
            image = ax.imshow(values[frame].T.numpy(), origin="lower", cmap=cmap, vmin=low, vmax=high,
                              extent=(0, 1, 0, 1))
            seen = frame in observed_frames
            if row == 0 and seen:
                ax.scatter(points[:, 0] + 0.5 / truth.shape[-1], points[:, 1] + 0.5 / truth.shape[-1],
                           s=1.5, c="k", linewidths=0)
            ax.set_title(f"{name}\nframe {frame}" + ("" if seen else " (unobserved)"), fontsize=8)
        fig.colorbar(image, ax=axes[row].tolist(), shrink=0.85)
    return fig


def error_bars(metrics: dict[str, float], label: str, others: dict[str, dict[str, float]] | None = None
               ) -> Figure:
    """The four In/Out MSEs of the model, of interpolated true observations (``truth_interp_``
    keys) and of ``others`` ({label: metrics}), on a log scale."""
    series = {label: {key: metrics.get(f"mse_{key}") for key, _ in SPLITS}}
    series.update({name: {key: values.get(f"mse_{key}") for key, _ in SPLITS}
                   for name, values in (others or {}).items()})
    if any(f"truth_interp_mse_{key}" in metrics for key, _ in SPLITS):
        series["true observations, interpolated"] = {key: metrics.get(f"truth_interp_mse_{key}")
                                                     for key, _ in SPLITS}
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(SPLITS))
    for i, (name, values) in enumerate(series.items()):
        heights = [values[key] if values[key] is not None else np.nan for key, _ in SPLITS]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, [title for _, title in SPLITS], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
