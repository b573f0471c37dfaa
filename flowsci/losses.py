"""Regression losses of flow matching, reduced per sample before the batch mean."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Loss(ABC):
    """``loss(pred, target, t) -> (B,)`` per-sample losses; pred, target: (B, *D), t: (B,)."""

    @abstractmethod
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


class MSELoss(Loss):
    """Mean squared error over all non-batch dimensions."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (pred - target).pow(2).flatten(1).mean(1)
