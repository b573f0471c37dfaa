"""Scores of probabilistic forecasts given as ensembles: CRPS and the spread-skill ratio."""

from __future__ import annotations

import torch


def crps(ensemble: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Fair (unbiased) continuous ranked probability score, averaged over all points.

    ensemble: (M, *S) with M >= 2 members, truth: (*S). Per point,
    CRPS = mean_i |X_i - y| - sum_{i,j} |X_i - X_j| / (2 M (M - 1)); the pair sum uses the
    sorted members: sum_{i,j} |X_i - X_j| = 2 sum_k (2k - M - 1) X_(k), k = 1..M.
    """
    members = ensemble.shape[0]
    if members < 2:
        raise ValueError(f"crps needs an ensemble of at least 2 members, got {members}")
    if ensemble.shape[1:] != truth.shape:
        raise ValueError(f"ensemble {tuple(ensemble.shape)} and truth {tuple(truth.shape)} do not match")
    skill = (ensemble - truth).abs().mean(0)
    ranks = torch.arange(1, members + 1, dtype=ensemble.dtype, device=ensemble.device)
    weights = (2 * ranks - members - 1).view(-1, *([1] * truth.dim()))
    pair_sum = 2 * (weights * ensemble.sort(dim=0).values).sum(0)
    return (skill - pair_sum / (2 * members * (members - 1))).mean()


def spread_skill_ratio(ensemble: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """sqrt((M + 1) / M * mean ensemble variance) / RMSE of the ensemble mean: ~1 when the
    truth is statistically another member, < 1 over-confident, > 1 under-confident.

    ensemble: (M, *S), truth: (*S).
    """
    members = ensemble.shape[0]
    if members < 2:
        raise ValueError(f"spread_skill_ratio needs at least 2 members, got {members}")
    spread = ensemble.var(dim=0, unbiased=True).mean() * (members + 1) / members
    skill = ((ensemble.mean(0) - truth) ** 2).mean()
    return (spread / skill).sqrt()
