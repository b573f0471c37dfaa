"""MLP velocity field v(x, t) for vector data."""

from __future__ import annotations

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding


class VelocityMLP(nn.Module):
    """v(x, t[, y]): x (B, dim), t (B,) -> (B, dim); an MLP on [x, embed(t)(, embed(y))] with
    SiLU activations.

    With ``num_classes > 0`` the model is conditioned on integer labels y (B,) in
    [0, num_classes); the label -1 is the null condition of classifier-free guidance.
    """

    def __init__(self, dim: int, width: int = 128, depth: int = 3, time_dim: int = 32,
                 num_classes: int = 0, label_dim: int = 16):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.num_classes = num_classes
        # one extra row for the null label -1 (classifier-free guidance)
        self.label_embedding = nn.Embedding(num_classes + 1, label_dim) if num_classes else None
        layers: list[nn.Module] = []
        in_features = dim + time_dim + (label_dim if num_classes else 0)
        for _ in range(depth):
            layers += [nn.Linear(in_features, width), nn.SiLU()]
            in_features = width
        layers.append(nn.Linear(in_features, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        features = [x, self.time_embedding(t).to(x.dtype)]
        if self.label_embedding is not None:
            if y is None:
                raise ValueError("this model is conditional (num_classes > 0): pass labels y")
            index = torch.where(y < 0, torch.full_like(y, self.num_classes), y)
            features.append(self.label_embedding(index).to(x.dtype))
        elif y is not None:
            raise ValueError("labels y given to an unconditional model (num_classes = 0)")
        return self.net(torch.cat(features, dim=-1))
