"""System 2 of Janny et al. (ICLR 2024): the observer that reads the anchors at any (x, y, tau).

A query (x, y, tau) attends, once per anchor, to the observed nodes (anchor state + Fourier features of
the node position and the anchor time); the K attention outputs, in anchor order, go through a GRU whose
last hidden state is decoded to phi.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci_domains.sparse_flow.gnn import MLP


class FourierFeatures(nn.Module):
    """Learnable Fourier features of (x, y, tau): coords (..., 3) -> (..., dim).

    Spatial part: sin and cos of 2 pi (a x + b y) for the integer pairs (a, b) with |a|, |b| <=
    max_frequency in the half-plane a > 0 or (a = 0, b > 0) (the other half only flips the sign of
    sin), so the features are exactly periodic on the unit torus. Time part: sin and cos of learnable
    frequencies times tau, and tau itself. A learnable Linear maps the concatenation to ``dim``.
    """

    def __init__(self, dim: int, max_frequency: int = 6, time_frequencies: int = 8):
        super().__init__()
        if dim < 1 or max_frequency < 1 or time_frequencies < 1:
            raise ValueError(f"dim, max_frequency and time_frequencies must be >= 1, got dim={dim}, "
                             f"max_frequency={max_frequency}, time_frequencies={time_frequencies}")
        m = max_frequency
        pairs = [(a, b) for a in range(m + 1) for b in range(-m, m + 1) if a > 0 or b > 0]
        self.register_buffer("spatial_frequencies", torch.tensor(pairs, dtype=torch.float32))
        self.time_frequencies = nn.Parameter(math.pi * torch.arange(1, time_frequencies + 1).float())
        self.linear = nn.Linear(2 * len(pairs) + 2 * time_frequencies + 1, dim)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if coords.shape[-1] != 3 or not coords.is_floating_point():
            raise ValueError(f"coords must be a float tensor of shape (..., 3) = (x, y, tau), got shape "
                             f"{tuple(coords.shape)} and dtype {coords.dtype}")
        # a x + b y reduced mod 1 before the 2 pi: shifts by whole periods cancel exactly
        cycles = torch.remainder(coords[..., :2] @ self.spatial_frequencies.to(coords.dtype).T, 1.0)
        spatial = 2 * math.pi * cycles
        tau = coords[..., 2:]
        temporal = tau * self.time_frequencies.to(coords.dtype)
        features = [spatial.sin(), spatial.cos(), temporal.sin(), temporal.cos(), tau]
        return self.linear(torch.cat(features, dim=-1))


class Observer(nn.Module):
    """System 2: phi at continuous queries from the anchors.

    forward(anchors (B, K, N, L), positions (N, 2), anchor_times (K,), queries (B, Q, 3) = (x, y, tau))
    -> (B, Q), in the units of the anchors' decoder (normalised). Memory grows as B K Q N (attention);
    the caller chunks the queries.
    """

    def __init__(self, latent: int = 64, heads: int = 4, max_frequency: int = 6, time_frequencies: int = 8,
                 gru_layers: int = 2):
        super().__init__()
        if heads < 1 or latent % heads:
            raise ValueError(f"heads must be >= 1 and divide latent, got heads={heads}, latent={latent}")
        if gru_layers < 1:
            raise ValueError(f"gru_layers must be >= 1, got {gru_layers}")
        self.features = FourierFeatures(latent, max_frequency, time_frequencies)
        self.attention = nn.MultiheadAttention(latent, heads, batch_first=True)
        self.attention_norm = nn.LayerNorm(latent)
        self.mlp = MLP(latent, latent, latent)
        self.mlp_norm = nn.LayerNorm(latent)
        self.gru = nn.GRU(latent, latent, num_layers=gru_layers, batch_first=True)
        self.decoder = MLP(latent, latent, 1)

    def forward(self, anchors: torch.Tensor, positions: torch.Tensor, anchor_times: torch.Tensor,
                queries: torch.Tensor) -> torch.Tensor:
        if anchors.dim() != 4:
            raise ValueError(f"anchors must have shape (B, K, N, L), got {tuple(anchors.shape)}")
        b, k, n, latent = anchors.shape
        if tuple(positions.shape) != (n, 2):
            raise ValueError(f"positions must have shape (N, 2) = ({n}, 2), got {tuple(positions.shape)}")
        if tuple(anchor_times.shape) != (k,):
            raise ValueError(f"anchor_times must have shape (K,) = ({k},), got {tuple(anchor_times.shape)}")
        if queries.dim() != 3 or queries.shape[0] != b or queries.shape[2] != 3:
            raise ValueError(f"queries must have shape (B, Q, 3) = ({b}, Q, 3), got {tuple(queries.shape)}")
        q = queries.shape[1]
        dtype = anchors.dtype
        node_coords = torch.cat([positions.to(dtype).expand(k, n, 2),
                                 anchor_times.to(dtype)[:, None, None].expand(k, n, 1)], dim=-1)
        keys = (anchors + self.features(node_coords)).reshape(b * k, n, latent)
        query = self.features(queries.to(dtype))                                       # (B, Q, L)
        query = query.unsqueeze(1).expand(b, k, q, latent).reshape(b * k, q, latent)
        attended, _ = self.attention(query, keys, keys, need_weights=False)
        h = self.attention_norm(query + attended)
        h = self.mlp_norm(h + self.mlp(h))                                              # (B K, Q, L)
        sequence = h.reshape(b, k, q, latent).transpose(1, 2).reshape(b * q, k, latent)
        out, _ = self.gru(sequence)
        return self.decoder(out[:, -1]).reshape(b, q)
