"""Training-time samplers of t in [0, 1]."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class TimeSampler(ABC):
    """Draws training times: ``sampler(n) -> (n,)`` in [0, 1]."""

    @abstractmethod
    def __call__(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor: ...


class UniformTime(TimeSampler):
    """t ~ U[0, 1]."""

    def __call__(self, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator)
