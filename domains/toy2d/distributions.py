"""Samplers of the 2-D benchmark distributions, all (n, 2) float32 tensors.

Conventions follow the common flow-matching benchmarks (torchcfm / FFJORD): the 8-Gaussian
ring has radius 5 and per-axis standard deviation 0.1**0.25 (the covariance quirk of torchcfm,
Tong et al. 2024, kept for comparability); moons have noise 0.2 and are mapped by x -> 3x - 1;
the checkerboard covers [-4, 4]^2 with 8 filled cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Sampler = Callable[[int, torch.Generator | None], torch.Tensor]
Labelled = tuple[torch.Tensor, torch.Tensor]


def gaussian_labelled(n: int, generator: torch.Generator | None = None) -> Labelled:
    """N(0, I); one class (label 0)."""
    return torch.randn(n, 2, generator=generator), torch.zeros(n, dtype=torch.long)


def eight_gaussians_labelled(n: int, generator: torch.Generator | None = None) -> Labelled:
    """Equal mixture of 8 Gaussians on a circle of radius 5, std 0.1**0.25 per axis; label =
    the component (0 at angle 0, counter-clockwise)."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.float() * (2 * math.pi / 8)
    centres = 5.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.1 ** 0.25 * torch.randn(n, 2, generator=generator), k


def moons_labelled(n: int, generator: torch.Generator | None = None) -> Labelled:
    """Two interleaved half circles (angles uniform), Gaussian noise 0.2, then 3x - 1; label 0
    for the upper moon, 1 for the lower one."""
    upper = torch.rand(n, generator=generator) < 0.5
    theta = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    points = torch.stack([x, y], dim=1) + 0.2 * torch.randn(n, 2, generator=generator)
    return 3 * points - 1, (~upper).long()


def checkerboard_labelled(n: int, generator: torch.Generator | None = None) -> Labelled:
    """Uniform on the 8 dark cells of a 4x4 checkerboard on [-4, 4]^2; label = the cell
    (2 x column + row within the column)."""
    x = 4 * torch.rand(n, generator=generator) - 2
    row = torch.randint(0, 2, (n,), generator=generator)
    y = torch.rand(n, generator=generator) - 2 * row.float()
    y = y + torch.floor(x) % 2
    column = (torch.floor(x) + 2).long().clamp(0, 3)
    return 2 * torch.stack([x, y], dim=1), 2 * column + row


LABELLED: dict[str, tuple[Callable[[int, torch.Generator | None], Labelled], int]] = {
    "gaussian": (gaussian_labelled, 1),
    "8gaussians": (eight_gaussians_labelled, 8),
    "moons": (moons_labelled, 2),
    "checkerboard": (checkerboard_labelled, 8),
}
"""name -> (sampler of (points (n, 2), labels (n,)), number of classes)."""


def _points(name: str) -> Sampler:
    sampler = LABELLED[name][0]

    def sample(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return sampler(n, generator)[0]

    sample.__doc__ = sampler.__doc__
    return sample


gaussian = _points("gaussian")
eight_gaussians = _points("8gaussians")
moons = _points("moons")
checkerboard = _points("checkerboard")
DISTRIBUTIONS: dict[str, Sampler] = {"gaussian": gaussian, "8gaussians": eight_gaussians,
                                     "moons": moons, "checkerboard": checkerboard}


def eight_gaussians_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log density of the 8-Gaussian ring at x (n, 2) -> (n,)."""
    angle = torch.arange(8, dtype=x.dtype, device=x.device) * (2 * math.pi / 8)
    centres = 5.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    var = 0.1 ** 0.5
    sq = (x[:, None, :] - centres[None]).pow(2).sum(-1)
    return torch.logsumexp(-sq / (2 * var), dim=1) - math.log(8) - math.log(2 * math.pi * var)


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log density of N(0, I) in 2-D at x (n, 2) -> (n,)."""
    return -0.5 * x.pow(2).sum(-1) - math.log(2 * math.pi)


LOG_PROBS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": gaussian_log_prob,
    "8gaussians": eight_gaussians_log_prob,
}
"""Distributions with a closed-form density (usable as a likelihood source)."""


class DistributionSource:
    """A named distribution as a flow-matching source: ``sample(n) -> (n, 2)``."""

    def __init__(self, name: str):
        self.name, self._sampler = name, DISTRIBUTIONS[name]

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        return self._sampler(n, generator).to(device)
