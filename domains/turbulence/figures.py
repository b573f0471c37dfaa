"""Figures of the turbulence domain: snapshots, spectra, time series, ensemble skill.

``reference`` is (N, T, C, *S) filtered DNS, ``paths`` are rollouts (M, N, S + 1, C, *S)
(M ensemble members, N initial states); the flow statistics (spectrum, enstrophy, energy)
come in as functions of such fields, so the figures serve 2-D and 3-D flows alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.ensemble_scores import crps, spread_skill_ratio

Spectrum = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Statistic = Callable[[torch.Tensor], torch.Tensor]


def field_snapshots(reference: torch.Tensor, model: torch.Tensor, label: str, quantity: str) -> Figure:
    """2-D pictures of the filtered DNS (T, n, n) above those of the rollout (S + 1, n, n) at a
    few steps; ``quantity`` names what is drawn (the colour bar)."""
    last = model.shape[0] - 1
    steps = sorted({0, min(10, last), min(50, last), min(reference.shape[0] - 1, last), last})
    limit = float(reference.abs().quantile(0.995))
    fig = Figure(figsize=(2.6 * len(steps), 5.4))
    axes = fig.subplots(2, len(steps), squeeze=False)
    for column, step in enumerate(steps):
        for row, (fields, name) in enumerate(((reference, "filtered DNS"), (model, label))):
            ax = axes[row, column]
            ax.set_xticks([]), ax.set_yticks([])
            if step >= fields.shape[0]:
                ax.text(0.5, 0.5, "beyond the\nDNS trajectory", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            image = ax.imshow(fields[step].T.numpy(), origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"{name}\nstep {step}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label=quantity)
    return fig


def spectra(reference: torch.Tensor, paths: torch.Tensor, k_max: int, label: str,
            spectrum: Spectrum) -> Figure:
    """Time-averaged energy spectra E(k) of the filtered DNS and of the rollouts, and their
    ratio; ``spectrum`` maps fields (..., C, *S) to k (K,) and E (..., K)."""
    k, e_ref = spectrum(reference.flatten(0, 1).double())
    _, e_model = spectrum(paths.flatten(0, 2).double())
    e_ref, e_model = e_ref.mean(0).numpy(), e_model.mean(0).numpy()
    k = k.numpy()
    keep = k >= 1
    fig = Figure(figsize=(10, 4))
    ax, ratio_ax = fig.subplots(1, 2)
    ax.loglog(k[keep], e_ref[keep], "k-", label="filtered DNS")
    ax.loglog(k[keep], e_model[keep], "C0--", label=f"{label} rollout")
    ax.axvline(k_max, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("k"), ax.set_ylabel("E(k)"), ax.legend(), ax.set_title("time-averaged energy spectrum")
    ratio_ax.semilogx(k[keep], e_model[keep] / e_ref[keep], "C0-")
    ratio_ax.axhspan(0.8, 1.2, color="green", alpha=0.1, label="±20 %")
    ratio_ax.axhline(1, color="k", lw=0.8)
    ratio_ax.axvline(k_max, color="grey", lw=0.8, ls=":", label=f"k_max = {k_max}")
    ratio_ax.set_xlabel("k"), ratio_ax.set_ylabel("E_model / E_fDNS"), ratio_ax.legend()
    fig.tight_layout()
    return fig


def time_series(reference: torch.Tensor, paths: torch.Tensor, dt: float, label: str,
                statistics: Sequence[tuple[Statistic, str]]) -> Figure:
    """Each of ``statistics`` (a function of fields (..., C, *S) -> (...), and its name), e.g.
    enstrophy and kinetic energy, against time: every rollout, every DNS trajectory."""
    fig = Figure(figsize=(5 * len(statistics), 4))
    axes = fig.subplots(1, len(statistics), squeeze=False)[0]
    for ax, (statistic, name) in zip(axes, statistics):
        ref = statistic(reference.double()).numpy()
        model = statistic(paths.flatten(0, 1).double()).numpy()
        t_ref, t_model = np.arange(ref.shape[1]) * dt, np.arange(model.shape[1]) * dt
        ax.plot(t_ref, ref.T, color="k", lw=0.8, alpha=0.6)
        ax.plot(t_model, model.T, color="C0", lw=0.8, alpha=0.6)
        ax.axhline(ref.mean(), color="k", ls=":", lw=0.8)
        ax.plot([], [], color="k", label="filtered DNS")
        ax.plot([], [], color="C0", label=f"{label} rollout")
        ax.set_xlabel("time"), ax.set_title(name), ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ensemble_skill(reference: torch.Tensor, paths: torch.Tensor, dt: float, label: str,
                   quantity: str) -> Figure:
    """CRPS and spread-skill ratio of the ensemble rollouts against the DNS, per step, over all
    channels and points; ``quantity`` names the fields in the axis label."""
    steps = np.arange(1, min(reference.shape[1], paths.shape[2]))
    scores = np.array([[float(crps(paths[:, :, s], reference[:, s])),
                        float(spread_skill_ratio(paths[:, :, s], reference[:, s]))] for s in steps])
    fig = Figure(figsize=(10, 4))
    ax, ratio_ax = fig.subplots(1, 2)
    ax.plot(steps * dt, scores[:, 0], "C0-")
    ax.set_xlabel("time"), ax.set_ylabel(f"CRPS ({quantity})"), ax.set_title(f"{label}: CRPS")
    ratio_ax.plot(steps * dt, scores[:, 1], "C1-")
    ratio_ax.axhline(1, color="k", lw=0.8)
    ratio_ax.set_xlabel("time"), ratio_ax.set_ylabel("spread / RMSE")
    ratio_ax.set_title("spread-skill ratio")
    fig.tight_layout()
    return fig


def attention_kernels(kernels: list[list[torch.Tensor]], label: str) -> Figure:
    """The axis kernels K_a (B, h, n, n) of a factorized-attention operator for one input, at
    the first and the last of its weight-shared iterations: rows (layer, axis), columns heads."""
    layers = sorted({0, len(kernels) - 1})
    heads = kernels[0][0].shape[1]
    rows = [(layer, axis) for layer in layers for axis in range(len(kernels[layer]))]
    fig = Figure(figsize=(2.2 * heads, 2.2 * len(rows)))
    axes = fig.subplots(len(rows), heads, squeeze=False)
    for row, (layer, axis) in enumerate(rows):
        for head in range(heads):
            kernel = kernels[layer][axis][0, head].float()
            limit = float(kernel.abs().max()) or 1.0
            ax = axes[row, head]
            ax.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"iteration {layer + 1}, K_{'xyz'[axis]}, head {head + 1}", fontsize=7)
    fig.suptitle(f"{label}: axis kernels (no softmax; colour range ± max |K|)", fontsize=9)
    return fig


def decorrelation(curves: dict[str, torch.Tensor], label: str, threshold: float) -> Figure:
    """Mean relative L2 error and vorticity correlation against time over many initial conditions
    (``curves``: ``times``, ``error``, ``correlation`` (H + 1,) and ``metrics`` with the mean
    ``correlation_time`` when present)."""
    times = curves["times"].numpy()
    fig = Figure(figsize=(10, 4))
    error_ax, correlation_ax = fig.subplots(1, 2)
    error_ax.plot(times, curves["error"].numpy(), "C0-o", ms=3, label=label)
    error_ax.set_xlabel("time"), error_ax.set_ylabel("relative L2 error"), error_ax.legend()
    error_ax.set_title("rollout error vs filtered DNS")
    correlation_ax.plot(times, curves["correlation"].numpy(), "C0-o", ms=3, label=label)
    correlation_ax.axhline(threshold, color="grey", ls=":", lw=0.8, label=f"threshold {threshold}")
    correlation_ax.set_xlabel("time"), correlation_ax.set_ylabel("vorticity correlation")
    correlation_ax.set_title("correlation with filtered DNS (mean over initial conditions)")
    correlation_ax.legend()
    fig.tight_layout()
    return fig


def velocity_profiles(reference, model, label: str) -> Figure:
    """x- and time-averaged profiles over y (``VelocityProfiles`` of
    :mod:`~flowsci_domains.turbulence.flow_metrics`) of the filtered DNS and of the rollouts:
    U(y), rms u'(y), rms v'(y), <u'v'>(y)."""
    names = (("mean_u", "U(y)"), ("rms_u", "rms u'(y)"), ("rms_v", "rms v'(y)"),
             ("reynolds_stress", "⟨u'v'⟩(y)"))
    fig = Figure(figsize=(16, 3.8))
    axes = fig.subplots(1, len(names))
    y = reference.y.numpy()
    for ax, (name, title) in zip(axes, names):
        ax.plot(y, getattr(reference, name).numpy(), "k-", label="filtered DNS")
        ax.plot(y, getattr(model, name).numpy(), "C0--", label=f"{label} rollout")
        ax.set_xlabel("y"), ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def cost_accuracy(rows: dict[str, dict[str, float]], batch: int) -> Figure:
    """One-step error and correlation time against cost per unit physical time (batch 1 and
    ``batch``) of a model and its baselines ({label: metrics}); the first row is the model."""
    fig = Figure(figsize=(10, 8))
    axes = fig.subplots(2, 2)
    panels = (("one_step_rel_l2", "one-step relative L2"), ("correlation_time", "correlation time"))
    for column, suffix in enumerate(("", f"_batch{batch}")):
        for row_index, (key, name) in enumerate(panels):
            ax = axes[row_index, column]
            for index, (label, metrics) in enumerate(rows.items()):
                ax.scatter(metrics[f"seconds_per_time_unit{suffix}"], metrics[key], color=f"C{index % 10}",
                           marker="*" if index == 0 else "o", s=120 if index == 0 else 50, label=label)
            ax.set_xscale("log"), ax.set_ylabel(name), ax.grid(alpha=0.3, which="both")
            ax.set_xlabel(f"seconds per unit physical time ({'batch 1' if not suffix else f'batch {batch}'})")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
