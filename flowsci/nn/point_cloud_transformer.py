"""PointCloudTransformer: a permutation-equivariant velocity field on populations of points.

For flow matching on the space of populations (Wasserstein flow matching), a state is a
population x (n, d) of exchangeable points and the velocity (n, d) moves each point. The network
has no positional information: each point is lifted to ``width`` features, ``depth`` pre-norm
transformer blocks let every point attend to all real points of its population, and a linear
head gives its velocity. Permuting the points permutes the output. Time t (and an optional
condition vector) enters every block by FiLM: the LayerNorms before attention and the MLP are
followed by a per-population scale and shift computed from the conditioning vector.

Padded batches: x (B, n, d) and mask (B, n) bool (True = real point; None = all real).
Padded points are never attended to and get zero velocity.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding
from flowsci.nn.knn import population_mask


class FiLMTransformerBlock(nn.Module):
    """Pre-norm block on tokens (B, n, width) conditioned on c (B, width): FiLM-modulated
    LayerNorm -> masked multi-head self-attention -> residual; FiLM-modulated LayerNorm ->
    SiLU MLP -> residual."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(),
                                 nn.Linear(4 * width, width))
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(width, 4 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h (B, n, width), c (B, width), mask (B, n) bool -> (B, n, width)."""
        scale_a, shift_a, scale_m, shift_m = self.film(c)[:, None].chunk(4, dim=-1)
        a = self.attention_norm(h) * (1 + scale_a) + shift_a
        h = h + self.attention(a, a, a, key_padding_mask=~mask, need_weights=False)[0]
        return h + self.mlp(self.mlp_norm(h) * (1 + scale_m) + shift_m)


class PointCloudTransformer(nn.Module):
    """v(x, t[, cond]): x (B, n, dim), t (B,) or scalar, mask (B, n) bool | None,
    cond (B, cond_dim) when cond_dim > 0 -> (B, n, dim), zero at padded points."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, heads: int = 4,
                 time_dim: int = 64, cond_dim: int = 0):
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth), ("heads", heads)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width}, heads={heads}")
        if cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0, got {cond_dim}")
        self.dim, self.cond_dim = dim, cond_dim
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(),
                                      nn.Linear(width, width))
        self.cond_mlp = (nn.Sequential(nn.Linear(cond_dim, width), nn.SiLU(),
                                       nn.Linear(width, width)) if cond_dim else None)
        self.lift = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(FiLMTransformerBlock(width, heads) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        mask = population_mask(x, mask, allow_empty=False)
        batch = x.shape[0]
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have {self.dim} coordinates (last axis), got shape "
                             f"{tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"t must be a scalar or of shape (B,) = ({batch},), got shape "
                             f"{tuple(t.shape)}")
        c = self.time_mlp(self.time_embedding(t).to(x.dtype))
        if self.cond_mlp is not None:
            if cond is None or cond.shape != (batch, self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"this model is conditional: cond must have shape "
                                 f"(B, cond_dim) = ({batch}, {self.cond_dim}), got {got}")
            c = c + self.cond_mlp(cond.to(x.dtype))
        elif cond is not None:
            raise ValueError("cond given to an unconditional model (cond_dim = 0)")
        padding = ~mask[..., None]
        h = self.lift(x.masked_fill(padding, 0.0))
        for block in self.blocks:
            h = block(h, c, mask)
        return self.head(h).masked_fill(padding, 0.0)
