"""Source distributions (t = 0) that can be sampled on the fly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from flowsci.spaces import Space


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


class SpaceBase:
    """The base distribution of a :class:`~flowsci.spaces.Space` (``space.random_base``) as a Source."""

    def __init__(self, space: Space):
        self.space = space
        self.shape = tuple(space.point_shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        return self.space.random_base(n, generator=generator, device=device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) log density w.r.t. the space's Riemannian volume."""
        return self.space.base_log_prob(x)
