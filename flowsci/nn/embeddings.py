"""Time embeddings."""

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
