"""A multimodal density on SO(3): a fixed mixture of IGSO(3) blobs (the FoldFlow-style benchmark).

The component means, concentrations and weights are drawn once from ``seed`` (means Haar
uniform, sigma uniform in [sigma_min, sigma_max], weights from a Dirichlet(4) draw), so the
same settings always give the same distribution, and its exact log density is known: the
benchmark can report the likelihood of samples and filter reflow pairs by it.
"""

from __future__ import annotations

import math

import torch

from flowsci.spaces.igso3 import IGSO3
from flowsci.spaces.so3 import SO3Matrix


class SO3Mixture:
    """sum_k w_k IGSO3(mean_k, sigma_k) on SO(3); samples are rotation matrices (n, 3, 3)."""

    def __init__(self, n_components: int = 7, sigma_min: float = 0.15, sigma_max: float = 0.35,
                 seed: int = 0):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        g = torch.Generator().manual_seed(seed)
        self.means = SO3Matrix().random_base(n_components, generator=g, dtype=torch.float64)
        self.sigmas = (sigma_min + (sigma_max - sigma_min) * torch.rand(n_components, generator=g,
                                                                         dtype=torch.float64)).tolist()
        # Gamma(4, 1) draws as sums of four Exp(1) draws, normalised: a Dirichlet(4, ..., 4) weight vector
        weights = -torch.log(torch.rand(n_components, 4, generator=g, dtype=torch.float64)).sum(-1)
        self.weights = (weights / weights.sum()).tolist()
        self.components = [IGSO3(s) for s in self.sigmas]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3, 3) float64 rotation matrices."""
        which = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=generator)
        out = torch.empty(n, 3, 3, dtype=torch.float64)
        for k, component in enumerate(self.components):
            rows = (which == k).nonzero().flatten()
            if len(rows):
                out[rows] = component.sample(len(rows), mean=self.means[k], generator=generator,
                                             dtype=torch.float64, chart="matrix")
        return out

    def log_prob(self, rotations: torch.Tensor) -> torch.Tensor:
        """(n,) log density w.r.t. the Riemannian volume of SO(3) (Haar has log density -log 8 pi^2)."""
        r = rotations.double()
        terms = [math.log(w) + c.log_prob(r, mean=m)
                 for w, c, m in zip(self.weights, self.components, self.means)]
        return torch.logsumexp(torch.stack(terms), dim=0)
