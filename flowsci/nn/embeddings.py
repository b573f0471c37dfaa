"""Time embeddings, and the conditioning vector of t and a class label."""

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
    """c = MLP(sinusoidal(t)) (+ label embedding): t (B,) or (), y (B,) | None -> (B, dim).

    With ``num_classes > 0`` the labels y are in [0, num_classes); -1 is the null label of
    classifier-free guidance (an extra embedding row). ``init_std``: normal(0, init_std) weights
    (and zero biases) for the MLP and the label embedding instead of torch's defaults.
    """

    def __init__(self, dim: int, time_dim: int, num_classes: int, init_std: float | None = None):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, dim),
                                            nn.SiLU(), nn.Linear(dim, dim))
        # one extra row for the null label -1 (classifier-free guidance)
        self.label_embedding = nn.Embedding(num_classes + 1, dim) if num_classes else None
        if init_std is not None:
            for layer in (self.time_embedding[1], self.time_embedding[3]):
                nn.init.normal_(layer.weight, std=init_std)
                nn.init.zeros_(layer.bias)
            if self.label_embedding is not None:
                nn.init.normal_(self.label_embedding.weight, std=init_std)

    def forward(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        t = t.expand(batch) if t.dim() == 0 else t
        c = self.time_embedding(t)
        if self.label_embedding is not None:
            if y is None:
                raise ValueError("this model is conditional (num_classes > 0): pass labels y")
            c = c + self.label_embedding(torch.where(y < 0, torch.full_like(y, self.num_classes), y))
        elif y is not None:
            raise ValueError("labels y given to an unconditional model (num_classes = 0)")
        return c
