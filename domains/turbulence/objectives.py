"""Training objectives of the turbulence surrogates.

Batches hold pairs of consecutive snapshots: ``state`` = u(t) and ``next`` = u(t + Δ), each
(B, C, *spatial) in physical units. Both objectives measure errors in the normalised units
of the surrogate's own :class:`~flowsci_domains.turbulence.surrogate.ChannelNormalizer`.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci.flow_matching import FlowMatching


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||prediction - target||_2 / ||target||_2 over all non-batch axes: (B,)."""
    difference = (prediction - target).flatten(1).norm(dim=1)
    return difference / target.flatten(1).norm(dim=1).clamp_min(torch.finfo(target.dtype).tiny)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The surrogate inside a DistributedDataParallel wrapper (its normaliser's buffers)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class OneStepObjective:
    """Relative L2 of the one-step prediction in normalised units, averaged over the batch."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        normalizer = _unwrapped(model).normalizer
        prediction = model(batch["state"])
        error = relative_l2(normalizer.normalize(prediction), normalizer.normalize(batch["next"]))
        return error.mean(), {}


class FlowOneStepObjective:
    """Flow matching of p(u(t + Δ) | u(t)): x0 ~ N(0, I), x1 = normalised u(t + Δ), with
    u(t) as the condition ``state`` (the engine's path, time sampler, coupling and loss)."""

    def __init__(self, flow: FlowMatching):
        self.flow = flow

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = _unwrapped(model).normalizer.normalize(batch["next"])
        return self.flow.loss(model, {"x0": torch.randn_like(x1), "x1": x1, "state": batch["state"]})
