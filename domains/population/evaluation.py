"""Predict populations with a population-conditioned flow and score them against the truth.

A batch holds P population pairs (see :mod:`flowsci.meta_flow_matching`): ``x0`` (P, N, d) with
``mask0``, ``x1`` (P, N, d) with ``mask1``, ``population_id`` (P,) and optionally ``condition``
(P, c). A prediction moves every valid source point (or, with ``base="gaussian"``, as many
N(0, I) draws) to t = 1 and keeps ``mask0``.

Scores (means over the P populations): exact W1 and W2, the RBF MMD averaged over MFM's
bandwidths, Szekely's energy distance, and for d >= 3 the Pearson r (not r^2) of the pairwise
feature correlations. Reference predictors (Meta Flow Matching's BASE / SHIFT / IDEAL-SHIFT):
``identity`` (the source itself), ``mean_shift`` (source + the mean training shift, per
condition when there are conditions) and ``ideal_mean_shift`` (source + the population's own
true mean shift: the best any translation can do).
"""

from __future__ import annotations

import torch

from flowsci.flow_matching import Sampler
from flowsci.population import (
    feature_correlation_r,
    masked_mean,
    population_energy_distance,
    population_mmd,
    population_wasserstein,
)

SPLIT_LABELS = {"letters": {"train": "train", "val": "val_letters", "test": "test_letters"},
                "patients": {"train": "train", "val": "heldout_replicates", "test": "heldout_patients"}}


@torch.no_grad()
def predict(model: torch.nn.Module, sampler: Sampler, batch: dict[str, torch.Tensor], base: str = "source",
            steps: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """(predicted (P, N, d) on ``mask0``, NFE): integrate each population's start points."""
    model.eval()
    x0, mask0 = batch["x0"], batch["mask0"]
    start = x0 if base == "source" else torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    population = model.population_vector(x0, mask0, batch["population_id"])
    cond = {"population": population, "condition": batch.get("condition")}
    result = sampler.sample(model, start, steps=steps, **{k: v for k, v in cond.items() if v is not None})
    return result.x, result.nfe


def population_scores(predicted: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean W1, W2, MMD, energy distance (and r for d >= 3) of predicted vs true populations."""
    mask0, x1, mask1 = batch["mask0"], batch["x1"], batch["mask1"]
    scores = {"w1": population_wasserstein(predicted, x1, mask0, mask1, p=1),
              "w2": population_wasserstein(predicted, x1, mask0, mask1, p=2),
              "mmd": population_mmd(predicted, x1, mask0, mask1),
              "energy": population_energy_distance(predicted, x1, mask0, mask1)}
    out = {k: float(v.mean()) for k, v in scores.items()}
    if predicted.shape[-1] >= 3:
        out["r"] = float(torch.tensor([feature_correlation_r(p[m], y[n]) for p, m, y, n
                                       in zip(predicted, mask0, x1, mask1)]).mean())
    return out


def mean_shifts(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(P, d) each population's true shift mean(x1) - mean(x0)."""
    return masked_mean(batch["x1"], batch["mask1"]) - masked_mean(batch["x0"], batch["mask0"])


def reference_predictions(batch: dict[str, torch.Tensor], train: dict[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor]:
    """The three non-learned predictors, each (P, N, d) on ``mask0``."""
    x0, shifts = batch["x0"], mean_shifts(train)
    if "condition" in batch:
        # the mean training shift of each condition (e.g. treatment), looked up per population
        weights = train["condition"] / train["condition"].sum(0).clamp_min(1)
        shift = batch["condition"] @ (weights.T @ shifts)
    else:
        shift = shifts.mean(0).expand(len(x0), -1)
    return {"identity": x0, "mean_shift": x0 + shift[:, None, :],
            "ideal_mean_shift": x0 + mean_shifts(batch)[:, None, :]}


def evaluate_split(model: torch.nn.Module, sampler: Sampler, batch: dict[str, torch.Tensor],
                   train: dict[str, torch.Tensor], base: str = "source",
                   generator: torch.Generator | None = None) -> dict[str, float]:
    """The model's scores (w1, w2, mmd, energy[, r]) and each reference's (``ref_<name>_<score>``)."""
    predicted, _ = predict(model, sampler, batch, base, generator=generator)
    scores = population_scores(predicted, batch)
    for name, reference in reference_predictions(batch, train).items():
        scores.update({f"ref_{name}_{k}": v for k, v in population_scores(reference, batch).items()})
    return scores
