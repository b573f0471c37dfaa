"""Figures of the SO(3) benchmark: rotation axes on the sphere, Euler-angle histograms, NFE curves."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.spatial.transform import Rotation


def _rotvecs(rotations: torch.Tensor) -> np.ndarray:
    return Rotation.from_matrix(rotations.detach().double().cpu().numpy()).as_rotvec()


def axes_figure(generated: torch.Tensor, test: torch.Tensor) -> Figure:
    """Rotation axes (longitude, latitude) coloured by the rotation angle, generated vs test;
    generated, test: (N, 3, 3) rotation matrices."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, subplot_kw={"projection": "mollweide"})
    for ax, rotations, title in zip(axes, (generated, test), ("generated", "test data")):
        v = _rotvecs(rotations)
        angle = np.linalg.norm(v, axis=1)
        axis = v / np.maximum(angle, 1e-12)[:, None]
        points = ax.scatter(np.arctan2(axis[:, 1], axis[:, 0]), np.arcsin(np.clip(axis[:, 2], -1, 1)),
                            c=angle, s=2, cmap="viridis", vmin=0, vmax=np.pi)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=False)
    fig.colorbar(points, ax=axes, orientation="horizontal", fraction=0.05, label="rotation angle (rad)")
    return fig


def euler_histograms_figure(generated: torch.Tensor, test: torch.Tensor, bins: int = 60) -> Figure:
    """Histograms of the intrinsic ZYZ Euler angles of generated and test rotations (N, 3, 3)."""
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    angles = [Rotation.from_matrix(r.detach().double().cpu().numpy()).as_euler("ZYZ")
              for r in (generated, test)]
    for k, (ax, name) in enumerate(zip(axes, ("alpha", "beta", "gamma"))):
        low, high = (0, np.pi) if k == 1 else (-np.pi, np.pi)
        for values, label, colour in zip(angles, ("generated", "test"), ("tab:blue", "tab:orange")):
            ax.hist(values[:, k], bins=bins, range=(low, high), density=True, histtype="step", color=colour,
                    label=label)
        ax.set_xlabel(f"{name} (rad)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def nfe_figure(curves: dict[str, dict[int, float]], *, floor: float, ceiling: float | None = None) -> Figure:
    """Geodesic W2 against the number of function evaluations, one line per configuration,
    with the finite-sample floor (and the Haar ceiling) as horizontal lines."""
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for label, curve in curves.items():
        nfe = sorted(curve)
        ax.plot(nfe, [curve[k] for k in nfe], marker="o", ms=3, label=label)
    ax.axhline(floor, color="black", ls="--", lw=1, label=f"floor (test vs val) {floor:.3f}")
    if ceiling is not None:
        ax.axhline(ceiling, color="grey", ls=":", lw=1, label=f"ceiling (test vs Haar) {ceiling:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("geodesic W2 (rad)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
