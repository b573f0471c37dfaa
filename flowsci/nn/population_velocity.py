"""The velocity of Meta Flow Matching and of its two baselines: v_t(x | p0, c).

One class, three ways to condition on the source population p0 (``conditioning``):

- ``population`` (MFM): a registered population embedder phi (``embedder``) maps the whole
  source population to a vector phi(p0) that the decoder reads; it is trained with the decoder
  and generalises to populations never seen in training;
- ``identity`` (CGFM): a learned vector per *training* population id (``n_ids`` of them); an id
  outside [0, n_ids) (an unseen population) reads the zero vector, so it cannot generalise;
- ``none`` (FM): no population input at all.

The decoder is an MLP on [x, sinusoidal embedding of t, population vector, condition c] with
SiLU activations, applied to every point independently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding

CONDITIONINGS = ("population", "identity", "none")


class PopulationConditionedVelocity(nn.Module):
    """v(x, t | p0, c): x (B, m, d), t () | (B,) | (B, m) -> (B, m, d).

    ``embedder``: the spec ``{name: <registered embedder>, <its arguments>}`` (its ``dim`` is
    filled in); ``n_conditions``: the width of the optional per-population condition c (B, c).
    """

    def __init__(self, dim: int, conditioning: str = "population", embedder: dict[str, Any] | None = None,
                 n_ids: int = 0, id_dim: int = 64, n_conditions: int = 0, width: int = 256, depth: int = 4,
                 time_dim: int = 64):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.dim, self.conditioning, self.n_conditions = dim, conditioning, n_conditions
        self.embedder: nn.Module | None = None
        self.id_embedding: nn.Embedding | None = None
        population_dim = 0
        if conditioning == "population":
            if not embedder or "name" not in embedder:
                raise ValueError("conditioning 'population' needs embedder: {name: gcn_embedder | "
                                 "deepsets_embedder | attention_embedder, ...}")
            from flowsci.registry import build_model  # imported late to keep nn light

            spec = dict(embedder)
            self.embedder = build_model(spec.pop("name"), {"dim": dim, **spec})
            population_dim = self.embedder.out_dim
        elif conditioning == "identity":
            if n_ids < 1:
                raise ValueError("conditioning 'identity' needs n_ids >= 1 training populations, "
                                 f"got {n_ids}")
            # row n_ids is the fixed zero vector of every population not seen in training
            self.id_embedding = nn.Embedding(n_ids + 1, id_dim, padding_idx=n_ids)
            population_dim = id_dim
        self.n_ids = n_ids
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = []
        features = dim + time_dim + population_dim + n_conditions
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.SiLU()]
            features = width
        layers.append(nn.Linear(features, dim))
        self.net = nn.Sequential(*layers)

    def population_vector(self, source_points: torch.Tensor | None = None,
                          source_mask: torch.Tensor | None = None,
                          population_id: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, E) the model's representation of each source population (None for FM).

        source_points: (B, N, d) with source_mask (B, N) for MFM; population_id (B,) for CGFM.
        Compute it once and pass it as ``population=`` to avoid re-embedding at every solver step.
        """
        if self.embedder is not None:
            if source_points is None:
                raise ValueError("an MFM model needs the source population: pass source_points (B, N, d)")
            return self.embedder(source_points, source_mask)
        if self.id_embedding is not None:
            if population_id is None:
                raise ValueError("a CGFM model needs population_id (B,)")
            unseen = (population_id < 0) | (population_id >= self.n_ids)
            return self.id_embedding(torch.where(unseen, torch.full_like(population_id, self.n_ids),
                                                 population_id))
        return None

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, source_points: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None, population_id: torch.Tensor | None = None,
                condition: torch.Tensor | None = None,
                population: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, m, {self.dim}) points, got {tuple(x.shape)}")
        n_pop, m = x.shape[:2]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(n_pop, m) if t.ndim <= 1 else t
        features = [x, self.time_embedding(t.reshape(-1)).to(x.dtype).reshape(n_pop, m, -1)]
        if population is None:
            population = self.population_vector(source_points, source_mask, population_id)
        if population is not None:
            features.append(population[:, None, :].to(x.dtype).expand(n_pop, m, -1))
        if self.n_conditions:
            if condition is None or condition.shape != (n_pop, self.n_conditions):
                got = None if condition is None else tuple(condition.shape)
                raise ValueError(f"this model takes a condition ({n_pop}, {self.n_conditions}), got {got}")
            features.append(condition[:, None, :].to(x.dtype).expand(n_pop, m, -1))
        elif condition is not None:
            raise ValueError("a condition was given to a model built with n_conditions = 0")
        return self.net(torch.cat(features, dim=-1))
