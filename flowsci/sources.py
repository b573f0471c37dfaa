"""Source distributions (t = 0) that can be sampled on the fly."""

from __future__ import annotations

from typing import Protocol

import torch


class Source(Protocol):
    """``source.sample(n) -> (n, *shape)`` fresh samples."""

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor: ...


class StandardNormal:
    """N(0, I) on tensors of a fixed shape."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, *self.shape, generator=generator, device=device)
