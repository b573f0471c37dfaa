"""Meta Flow Matching (Atanackovic et al., ICLR'25): flows conditioned on their own source population.

Each training item is a pair of populations (p0 -> p1), padded: ``x0`` (B, N0, d) with ``mask0``
(B, N0) and ``x1`` (B, N1, d) with ``mask1`` (B, N1). Per step and per pair, ``points`` point
pairs (x0_j, x1_j) are drawn from a within-population coupling pi_i and the model regresses

    L = E_i E_t E_{(x0, x1) ~ pi_i} | v_t((1 - t) x0 + t x1 | p0_i, c_i) - (x1 - x0) |^2,

where the model sees the whole source population (``source_points``, ``source_mask``) and embeds
it itself (MFM), ignores it (FM), or looks up the population's identity (CGFM). Optional extra
batch entries travel to the model unchanged: ``condition`` (B, c) (e.g. a treatment one-hot) and
``population_id`` (B,).

Couplings pi_i (``pairing``):

- ``natural``: the data pairs point j of p0 with point j of p1 (same size and mask);
- ``random``: independent draws from p0 and from p1 (unpaired measurements);
- ``ot``: ``points`` independent draws from each, then the exact optimal assignment between
  the two draws (minibatch OT within the population).

``base="gaussian"`` replaces x0 by N(0, I) draws (the population still conditions the model).
Points are drawn with replacement among each population's valid points, by index, so the loss
does not depend on how much padding a batch carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from flowsci.config import ObjectiveConfig
from flowsci.population import assignment, gather_points, sample_indices
from flowsci.registry import TIME_SAMPLERS
from flowsci.timesteps import TimeSampler

PAIRINGS = ("natural", "random", "ot")
BASES = ("source", "gaussian")


@dataclasses.dataclass
class MetaFlowMatchingConfig(ObjectiveConfig):
    """YAML ``objective:`` section of Meta Flow Matching (and of its FM / CGFM baselines, which
    differ only in the model's ``conditioning``)."""

    pairing: Literal["natural", "random", "ot"] = "natural"
    points: int = 128                 # point pairs drawn per population and step
    base: Literal["source", "gaussian"] = "source"
    timesteps: str | dict[str, Any] = "uniform"

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}, got {self.base!r}")
        if self.points < 1:
            raise ValueError(f"points must be >= 1, got {self.points}")


class MetaFlowMatching:
    """The population-conditioned flow-matching loss (see the module docstring)."""

    def __init__(self, timesteps: TimeSampler, pairing: str = "natural", points: int = 128,
                 base: str = "source", generator: torch.Generator | None = None):
        MetaFlowMatchingConfig(pairing=pairing, points=points, base=base)  # validates
        self.timesteps, self.pairing, self.points, self.base = timesteps, pairing, points, base
        self.generator = generator

    @classmethod
    def from_config(cls, cfg: MetaFlowMatchingConfig) -> MetaFlowMatching:
        return cls(TIME_SAMPLERS.create(cfg.timesteps, "objective.timesteps"), pairing=cfg.pairing,
                   points=cfg.points, base=cfg.base)

    def pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, x1), each (B, points, d): point pairs drawn from each population's coupling."""
        x0, x1 = batch["x0"], batch["x1"]
        mask0, mask1 = batch.get("mask0"), batch.get("mask1")
        m, g = self.points, self.generator
        if self.pairing == "natural":
            if x0.shape != x1.shape or not _same_mask(mask0, mask1, x0.shape[:2]):
                raise ValueError("pairing 'natural' needs populations paired point by point: x0 and x1 "
                                 f"of one shape with one mask, got {tuple(x0.shape)} and {tuple(x1.shape)}; "
                                 "use pairing 'random' or 'ot' for unpaired populations")
            index = sample_indices(mask0, m, n_points=x0.shape[1], batch_size=x0.shape[0], generator=g)
            a, b = gather_points(x0, index), gather_points(x1, index)
        else:
            a = gather_points(x0, sample_indices(mask0, m, n_points=x0.shape[1], batch_size=len(x0),
                                                 generator=g))
            b = gather_points(x1, sample_indices(mask1, m, n_points=x1.shape[1], batch_size=len(x1),
                                                 generator=g))
            if self.pairing == "ot":
                b = torch.gather(b, 1, assignment(a, b).unsqueeze(-1).expand_as(b))
        if self.base == "gaussian":
            a = torch.randn(a.shape, generator=g, dtype=a.dtype, device=a.device)
        return a, b

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        a, b = self.pairs(batch)
        n_pop, m = a.shape[:2]
        t = self.timesteps(n_pop * m, device=a.device, generator=self.generator).to(a.dtype).reshape(n_pop, m)
        x_t = (1 - t[..., None]) * a + t[..., None] * b
        extras = {k: v for k, v in batch.items() if k in ("condition", "population_id")}
        pred = model(x_t, t, source_points=batch["x0"], source_mask=batch.get("mask0"), **extras)
        return (pred - (b - a)).pow(2).sum(-1).mean(), {}


def _same_mask(mask0: torch.Tensor | None, mask1: torch.Tensor | None, shape: torch.Size) -> bool:
    full = torch.ones(shape, dtype=torch.bool)
    m0 = full if mask0 is None else mask0.to(torch.bool).cpu()
    m1 = full if mask1 is None else mask1.to(torch.bool).cpu()
    return bool(torch.equal(m0, m1))
