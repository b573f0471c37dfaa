"""Samplers of the 2-D benchmark distributions, all (n, 2) float32 tensors.

Conventions follow the common flow-matching benchmarks (torchcfm / FFJORD): the 8-Gaussian
ring has radius 5 and per-axis standard deviation 0.1**0.25 (the covariance quirk that
`flow_engines.md` §7.1 keeps for comparability); moons have noise 0.2 and are mapped by
x -> 3x - 1; the checkerboard covers [-4, 4]^2 with 8 filled cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Sampler = Callable[[int, torch.Generator | None], torch.Tensor]


def gaussian(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I)."""
    return torch.randn(n, 2, generator=generator)


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Equal mixture of 8 Gaussians on a circle of radius 5, std 0.1**0.25 per axis."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.float() * (2 * math.pi / 8)
    centres = 5.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.1 ** 0.25 * torch.randn(n, 2, generator=generator)


def moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles (angles uniform), Gaussian noise 0.2, then 3x - 1."""
    upper = torch.rand(n, generator=generator) < 0.5
    theta = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    points = torch.stack([x, y], dim=1) + 0.2 * torch.randn(n, 2, generator=generator)
    return 3 * points - 1


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 dark cells of a 4x4 checkerboard on [-4, 4]^2."""
    x = 4 * torch.rand(n, generator=generator) - 2
    y = torch.rand(n, generator=generator) - 2 * torch.randint(0, 2, (n,), generator=generator).float()
    y = y + torch.floor(x) % 2
    return 2 * torch.stack([x, y], dim=1)


DISTRIBUTIONS: dict[str, Sampler] = {
    "gaussian": gaussian,
    "8gaussians": eight_gaussians,
    "moons": moons,
    "checkerboard": checkerboard,
}


class DistributionSource:
    """A named distribution as a flow-matching source: ``sample(n) -> (n, 2)``."""

    def __init__(self, name: str):
        self.name, self._sampler = name, DISTRIBUTIONS[name]

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        return self._sampler(n, generator).to(device)
