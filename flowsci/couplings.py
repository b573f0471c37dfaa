"""Couplings: how source and target samples of a batch are paired."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Coupling(ABC):
    """Pairs a source batch with a target batch.

    ``coupling(x0, x1, extras) -> (x0', x1', extras')`` with x0, x1: (B, *D). ``extras`` are
    per-target tensors (labels, conditions, shape (B, ...)) that travel with their x1.
    """

    @abstractmethod
    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]: ...


class IndependentCoupling(Coupling):
    """The product coupling: pairs stay as drawn."""

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(f"batch sizes differ: x0 {x0.shape[0]}, x1 {x1.shape[0]}")
        return x0, x1, extras
