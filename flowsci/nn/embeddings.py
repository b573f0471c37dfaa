"""Time embeddings, and the conditioning vector of t, a class label and a pooled text context."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """t (B,) in [0, 1] -> (B, dim) sin/cos features at geometrically spaced frequencies."""

    def __init__(self, dim: int, max_period: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2) / (dim // 2))
        self.register_buffer("freqs", freqs * max_period, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConditionEmbedding(nn.Module):
    """c = MLP(sinusoidal(t)) (+ label embedding) (+ Linear(pooled context)) -> (B, dim).

    t (B,) or (); y (B,) | None; context (B, L, context_dim) | None with context_mask (B, L)
    bool | None (True = a real token). With ``num_classes > 0`` the labels y are in
    [0, num_classes); -1 is the null label of classifier-free guidance (an extra embedding row).
    With ``context_dim > 0`` the context is pooled by its masked mean (a row without tokens, the
    null caption, pools to 0). ``init_std``: normal(0, init_std) weights (and zero biases) for
    the MLP, the label embedding and the context projection instead of torch's defaults.
    """

    def __init__(self, dim: int, time_dim: int, num_classes: int, init_std: float | None = None,
                 context_dim: int = 0):
        super().__init__()
        if num_classes < 0 or context_dim < 0:
            raise ValueError(f"num_classes and context_dim must be >= 0, got {num_classes}, {context_dim}")
        self.num_classes, self.context_dim = num_classes, context_dim
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, dim),
                                            nn.SiLU(), nn.Linear(dim, dim))
        # one extra row for the null label -1 (classifier-free guidance)
        self.label_embedding = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.context_embedding = nn.Linear(context_dim, dim) if context_dim else None
        if init_std is not None:
            for layer in (self.time_embedding[1], self.time_embedding[3]):
                nn.init.normal_(layer.weight, std=init_std)
                nn.init.zeros_(layer.bias)
            if self.label_embedding is not None:
                nn.init.normal_(self.label_embedding.weight, std=init_std)
            if self.context_embedding is not None:
                nn.init.normal_(self.context_embedding.weight, std=init_std)
                nn.init.zeros_(self.context_embedding.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor | None, batch: int,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        t = t.expand(batch) if t.dim() == 0 else t
        c = self.time_embedding(t)
        if self.label_embedding is not None:
            if y is None:
                raise ValueError("this model is conditional (num_classes > 0): pass labels y")
            c = c + self.label_embedding(torch.where(y < 0, torch.full_like(y, self.num_classes), y))
        elif y is not None:
            raise ValueError("labels y given to an unconditional model (num_classes = 0)")
        if self.context_embedding is not None:
            c = c + self.context_embedding(pool_context(context, context_mask, batch, self.context_dim))
        elif context is not None or context_mask is not None:
            raise ValueError("a context given to a model without one (context_dim = 0)")
        return c


def pool_context(context: torch.Tensor | None, mask: torch.Tensor | None, batch: int, dim: int
                 ) -> torch.Tensor:
    """The masked mean (B, dim) of context (B, L, dim) over mask (B, L) (all tokens without a mask)."""
    if context is None:
        raise ValueError(f"this model is conditioned on a context (context_dim = {dim}): pass context "
                         f"(B, L, {dim})")
    if context.dim() != 3 or context.shape[0] != batch or context.shape[2] != dim:
        raise ValueError(f"context must be (B={batch}, L, {dim}), got {tuple(context.shape)}")
    if mask is None:
        return context.mean(dim=1)
    if mask.shape != context.shape[:2]:
        raise ValueError(f"context_mask must be (B, L) = {tuple(context.shape[:2])}, got {tuple(mask.shape)}")
    weights = mask.to(context.dtype)[..., None]
    return (context * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
