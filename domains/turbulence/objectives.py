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
    """Relative L2 of the one-step prediction in normalised units, averaged over the batch.

    ``unroll`` K > 1 adds pushforward training (Brandstetter, Worrall & Welling 2022): each
    batch draws k uniformly from 1..K, rolls the model k - 1 steps from u(t) without gradient
    and regresses u(t + kΔ) (batch key ``future``: (B, K, C, *S)) from that state, so that the
    model learns to correct the errors its own rollouts feed it.
    """

    def __init__(self, unroll: int = 1):
        if unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        self.unroll = unroll

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        normalizer = _unwrapped(model).normalizer
        k = int(torch.randint(1, self.unroll + 1, ())) if self.unroll > 1 else 1
        state, target = batch["state"], batch["next"] if k == 1 else batch["future"][:, k - 1]
        if k > 1:
            with torch.no_grad():
                for _ in range(k - 1):
                    state = model(state)
        error = relative_l2(normalizer.normalize(model(state)), normalizer.normalize(target))
        return error.mean(), {"unroll": float(k)} if self.unroll > 1 else {}


class FlowOneStepObjective:
    """Flow matching of p(u(t + Δ) | u(t)): x0 ~ N(0, I), x1 = normalised u(t + Δ), with
    u(t) as the condition ``state`` (the engine's path, time sampler, coupling and loss)."""

    def __init__(self, flow: FlowMatching):
        self.flow = flow

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = _unwrapped(model).normalizer.normalize(batch["next"])
        return self.flow.loss(model, {"x0": torch.randn_like(x1), "x1": x1, "state": batch["state"]})
