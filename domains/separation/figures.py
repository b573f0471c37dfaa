"""Figures of the separation domains: log-mel panels and quality against NFE."""

from __future__ import annotations

import re

import torch
from matplotlib.figure import Figure

from flowsci.audio.spectral import SpectrogramSettings


def _panel(ax, image: torch.Tensor, title: str, spectrogram: SpectrogramSettings, vmin: float, vmax: float):
    seconds = image.shape[-1] * spectrogram.hop / spectrogram.sample_rate
    ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
              extent=(0, seconds, 0, image.shape[0]))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("s")
    ax.set_ylabel("mel band")


def _grid(columns: list[tuple[str, torch.Tensor]], roles: list[str], spectrogram: SpectrogramSettings
          ) -> Figure:
    rows = len(roles)
    fig = Figure(figsize=(3.2 * len(columns), 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    vmin = min(float(c.min()) for _, c in columns)
    vmax = max(float(c.max()) for _, c in columns)
    for i, role in enumerate(roles):
        for j, (name, images) in enumerate(columns):
            _panel(axes[i, j], images[i], f"{name} ({role})", spectrogram, vmin, vmax)
    return fig


def spectrogram_figure(mixture: torch.Tensor, target: torch.Tensor, estimate: torch.Tensor, roles: list[str],
                       spectrogram: SpectrogramSettings) -> Figure:
    """Log-mels (R, M, F) of mixtures, targets and estimates, one row per example."""
    return _grid([("mixture", mixture), ("target", target), ("estimate", estimate)], roles, spectrogram)


def reconstruction_figure(true: torch.Tensor, reconstructed: torch.Tensor, roles: list[str],
                          spectrogram: SpectrogramSettings) -> Figure:
    """Log-mels (R, M, F) of targets and their autoencoder reconstructions."""
    return _grid([("target", true), ("reconstruction", reconstructed)], roles, spectrogram)


def nfe_figure(metrics: dict[str, float]) -> Figure:
    """SI-SDR improvement and mel-L1 against the number of network evaluations (``*_nfe<k>``)."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, name, label in zip(axes, ("si_sdri", "mel_l1"), ("SI-SDRi (dB)", "mel-L1")):
        points = sorted((int(m.group(1)), value) for key, value in metrics.items()
                        if (m := re.fullmatch(rf"{name}_nfe(\d+)", key)))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return fig
