"""Population embedders: a padded batch of point clouds (B, N, d) -> one vector per population.

Each embedder is invariant to the order of a population's points and to the amount and
position of padding (mask (B, N) bool, True = real point; None = all real):

- ``GCNEmbedder``: Meta Flow Matching's embedder (Atanackovic et al., 2024) -- GCN layers on
  the kNN graph of the population, mean pooling over points, optional L2 normalisation;
- ``DeepSetsEmbedder``: rho(pool_i phi(x_i)) (Zaheer et al., 2017);
- ``AttentionEmbedder``: a Set Transformer (Lee et al., 2019) -- self-attention over the
  points, then pooling by attention from learned seed vectors.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_mean_pool
from torch_geometric.nn.aggr import SetTransformerAggregation

from flowsci.nn.knn import knn_graph, population_mask

POOLS = ("mean", "sum", "max")


def _check_sizes(**sizes: int) -> None:
    """Raise a ValueError naming every size argument that is below 1."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _checked_mask(points: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """points (B, N, dim), mask (B, N) | None -> mask (B, N) bool; every population needs a
    real point."""
    mask = population_mask(points, mask, allow_empty=False)
    if points.shape[-1] != dim:
        raise ValueError(f"points must have {dim} coordinates (last axis), got shape "
                         f"{tuple(points.shape)}")
    return mask


class GCNEmbedder(nn.Module):
    """points (B, N, dim), mask (B, N) | None -> (B, out_dim): ``layers`` GCNConv layers (ReLU
    between) on the kNN graph of each population, mean over its points, unit L2 norm when
    ``normalize``."""

    def __init__(self, dim: int, hidden: int = 64, out_dim: int = 64, layers: int = 3,
                 k: int = 10, normalize: bool = True):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, out_dim=out_dim, layers=layers, k=k)
        self.dim, self.out_dim, self.k, self.normalize = dim, out_dim, k, normalize
        sizes = [dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _checked_mask(points, mask, self.dim)
        x, population = points[mask], mask.nonzero()[:, 0]  # real points (M, dim), row-major
        edges = knn_graph(points, mask, self.k)
        # padded node ids b * N + i -> rows of x
        edges = (mask.flatten().cumsum(0) - 1)[edges]
        for i, conv in enumerate(self.convs):
            x = conv(x, edges)
            if i < len(self.convs) - 1:
                x = x.relu()
        pooled = global_mean_pool(x, population, size=points.shape[0])
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


class DeepSetsEmbedder(nn.Module):
    """points (B, N, dim), mask (B, N) | None -> (B, out_dim) = rho(pool_i phi(x_i)); phi and
    rho are ``layers``-layer SiLU MLPs, pool is a masked mean, sum or max over points."""

    def __init__(self, dim: int, hidden: int = 64, out_dim: int = 64, layers: int = 2,
                 pool: str = "mean"):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, out_dim=out_dim, layers=layers)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.dim, self.out_dim, self.pool = dim, out_dim, pool
        phi: list[nn.Module] = []
        for i in range(layers):
            phi += [nn.Linear(dim if i == 0 else hidden, hidden), nn.SiLU()]
        rho: list[nn.Module] = []
        for _ in range(layers - 1):
            rho += [nn.Linear(hidden, hidden), nn.SiLU()]
        rho.append(nn.Linear(hidden, out_dim))
        self.phi, self.rho = nn.Sequential(*phi), nn.Sequential(*rho)

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _checked_mask(points, mask, self.dim)
        padding = ~mask[..., None]
        h = self.phi(points.masked_fill(padding, 0.0))
        if self.pool == "max":
            pooled = h.masked_fill(padding, float("-inf")).amax(dim=1)
        else:
            pooled = h.masked_fill(padding, 0.0).sum(dim=1)
            if self.pool == "mean":
                pooled = pooled / mask.sum(dim=1, keepdim=True).to(h.dtype)
        return self.rho(pooled)


class AttentionEmbedder(nn.Module):
    """points (B, N, dim), mask (B, N) | None -> (B, out_dim): a per-point linear lift to
    ``hidden``, torch_geometric's SetTransformerAggregation (``encoder_blocks`` set attention
    blocks, pooling by attention from ``seeds`` learned seeds, one decoder block) over the
    real points, and a linear head on the concatenated seeds."""

    def __init__(self, dim: int, hidden: int = 64, out_dim: int = 64, heads: int = 4,
                 seeds: int = 1, encoder_blocks: int = 1):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, out_dim=out_dim, heads=heads, seeds=seeds,
                     encoder_blocks=encoder_blocks)
        if hidden % heads:
            raise ValueError(f"hidden must be divisible by heads, got hidden={hidden}, "
                             f"heads={heads}")
        self.dim, self.out_dim = dim, out_dim
        self.lift = nn.Linear(dim, hidden)
        self.aggregate = SetTransformerAggregation(hidden, num_seed_points=seeds,
                                                   num_encoder_blocks=encoder_blocks,
                                                   heads=heads)
        self.head = nn.Linear(seeds * hidden, out_dim)

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _checked_mask(points, mask, self.dim)
        # population index of each real point: sorted, as SetTransformerAggregation requires
        population = mask.nonzero()[:, 0]
        pooled = self.aggregate(self.lift(points[mask]), population, dim_size=points.shape[0])
        return self.head(pooled)
