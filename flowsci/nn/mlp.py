"""MLP velocity field v(x, t) for vector data."""

from __future__ import annotations

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding


class VelocityMLP(nn.Module):
    """v(x, t): x (B, dim), t (B,) -> (B, dim); an MLP on [x, embed(t)] with SiLU activations."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = []
        in_features = dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(in_features, width), nn.SiLU()]
            in_features = width
        layers.append(nn.Linear(in_features, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.net(torch.cat([x, self.time_embedding(t).to(x.dtype)], dim=-1))
