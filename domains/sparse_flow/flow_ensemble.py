"""The flow-matching engine's probabilistic reconstruction of full fields from sparse observations.

A conditional flow carries Gaussian noise to the normalised field (1, n, n) at frame time tau,
given a masked-input image of what is observed: channel 0 the initial state on the observed
points (0 elsewhere), channel 1 the observation mask, channel 2 tau everywhere. It sees the same
input as the deterministic observer (the initial state on the sparse set) and is supervised, like
it, by full fields at the observed frames. Sampling it M times gives an ensemble whose mean is a
reconstruction and whose spread says where the observations leave the field undetermined.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci.ensemble_scores import crps, spread_skill_ratio
from flowsci.flow_matching import Sampler
from flowsci_domains.sparse_flow.evaluation import field_errors
from flowsci_domains.sparse_flow.objectives import Observation
from flowsci_domains.sparse_flow.observations import error_splits

CONDITION_CHANNELS = 3


def masked_inputs(initial: torch.Tensor, obs: Observation, frames: torch.Tensor, mean: float, std: float
                  ) -> torch.Tensor:
    """The condition images (B * F, 3, n, n) of trajectories with initial states ``initial``
    (B, N) on the observed points, for each of ``frames`` (F,) (trajectory-major order)."""
    batch, n = initial.shape[0], obs.n
    sparse = torch.zeros(batch, n * n)
    sparse[:, obs.observed] = (initial - mean) / std
    mask = torch.zeros(n * n)
    mask[obs.observed] = 1.0
    taus = frames.float() / (obs.n_frames - 1)
    images = torch.stack([sparse[:, None].expand(-1, len(frames), -1),
                          mask.expand(batch, len(frames), -1),
                          taus[None, :, None].expand(batch, -1, n * n)], dim=2)
    return images.reshape(batch * len(frames), CONDITION_CHANNELS, n, n)


def training_pairs(trajectories: torch.Tensor, obs: Observation, mean: float, std: float
                   ) -> dict[str, torch.Tensor]:
    """Flow-matching data of trajectories (B, T, n²): ``x1`` (B * F, 1, n, n), the normalised
    fields at the observed frames, and their ``observation`` (B * F, 3, n, n)."""
    initial = obs.on_sparse_set(trajectories)[:, 0]
    x1 = ((trajectories[:, obs.frames] - mean) / std).reshape(-1, 1, obs.n, obs.n)
    return {"x1": x1, "observation": masked_inputs(initial, obs, obs.frames, mean, std)}


@torch.no_grad()
def ensemble_fields(model: nn.Module, sampler: Sampler, initial: torch.Tensor, obs: Observation,
                    mean: float, std: float, members: int, generator: torch.Generator,
                    chunk: int = 64) -> torch.Tensor:
    """``members`` samples of every frame of trajectories with initial states ``initial`` (B, N):
    (M, B, T, n²) in physical units. Noise comes from ``generator``; samples run ``chunk`` fields
    at a time."""
    batch, n = initial.shape[0], obs.n
    frames = torch.arange(obs.n_frames)
    conditions = masked_inputs(initial, obs, frames, mean, std)
    noise = torch.randn(members, *conditions.shape[:1], 1, n, n, generator=generator)
    out = torch.empty_like(noise)
    for m in range(members):
        for start in range(0, conditions.shape[0], chunk):
            part = slice(start, start + chunk)
            out[m, part] = sampler.sample(model, noise[m, part], observation=conditions[part]).x
    return (out * std + mean).reshape(members, batch, obs.n_frames, n * n)


def ensemble_metrics(ensemble: torch.Tensor, truth: torch.Tensor, obs: Observation) -> dict[str, float]:
    """Scores of an ensemble (M, B, T, n²) against the truth (B, T, n²): the four In/Out errors of
    the ensemble mean (as :func:`field_errors`), the relative L2 error of one member
    (``member_rel_l2``), CRPS and spread/skill over all points, and the spread/skill and the
    ensemble standard deviation on observed (``_in_s``) and unobserved points (``_out_s``)."""
    metrics = field_errors(ensemble.mean(0), truth, obs, obs.n)
    metrics["member_rel_l2"] = float((ensemble[0] - truth).norm() / truth.norm())
    metrics["crps"] = float(crps(ensemble, truth))
    metrics["spread_skill"] = float(spread_skill_ratio(ensemble, truth))
    masks = error_splits(obs.n, obs.n_frames, obs.observed, obs.frames)
    for where, mask in (("in_s", masks["in_t_in_s"] | masks["out_t_in_s"]),
                        ("out_s", masks["in_t_out_s"] | masks["out_t_out_s"])):
        selected, target = ensemble[:, :, mask], truth[:, mask]
        metrics[f"spread_skill_{where}"] = float(spread_skill_ratio(selected, target))
        metrics[f"ensemble_std_{where}"] = float(selected.var(dim=0).mean().sqrt())
    return metrics
