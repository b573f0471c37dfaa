"""Sampling time grids: ``steps + 1`` increasing float64 times from 0 (source) to 1 (data).

A solver integrates over a grid; sampling uses it as returned, inversion (data -> source)
uses :func:`reverse`. The classes wrap the functions for the registry, so YAML can say
``sample.grid: {name: edm, rho: 7}``; each is called as ``grid(steps) -> (steps + 1,)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from flowsci.timesteps import check_shift, shift_time


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def uniform_grid(steps: int, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """``steps + 1`` equally spaced times from t_start to t_end, float64 (exact endpoints)."""
    _check_steps(steps)
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)


def shifted_grid(steps: int, shift: float) -> torch.Tensor:
    """A uniform grid passed through SD3's shift (:func:`flowsci.timesteps.shift_time`).

    shift > 1 makes the steps short near the source (t = 0) and long near the data, as SD3
    does at high resolution (shift 3); shift = 1 is the uniform grid. (steps + 1,), float64.
    """
    return shift_time(uniform_grid(steps), shift)


def edm_grid(steps: int, rho: float = 7.0, sigma_min: float = 0.002,
             sigma_max: float = 80.0) -> torch.Tensor:
    """Karras et al.'s (EDM) rho-spaced noise levels, as rectified-flow times. (steps + 1,).

    A linear-path state x_t = (1 - t) x0 + t x1 is the EDM state x1 + sigma x0 scaled by t,
    with sigma = (1 - t) / t, i.e. t = 1 / (1 + sigma). The grid is

    - t_0 = 0 exactly (sigma = inf, the source samples themselves),
    - t_1 .. t_{steps-1}: the N = steps - 1 EDM levels
      sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
      i = 0 .. N-1 (sigma_max alone when N = 1), mapped to t = 1 / (1 + sigma_i),
    - t_steps = 1 (sigma = 0, EDM's appended last level).

    Starting exactly at 0 keeps the sampler's input the source draw; the first step, from 0 to
    1 / (1 + sigma_max) (0.012 for sigma_max = 80), costs one more evaluation than EDM's N
    steps. steps = 1 gives [0, 1].
    """
    _check_steps(steps)
    _check_edm(rho, sigma_min, sigma_max)
    ramp = torch.linspace(0.0, 1.0, steps - 1, dtype=torch.float64)
    root_max, root_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (root_max + ramp * (root_min - root_max)) ** rho
    inner = 1.0 / (1.0 + sigmas)
    return torch.cat([inner.new_zeros(1), inner, inner.new_ones(1)])


def _check_edm(rho: float, sigma_min: float, sigma_max: float) -> None:
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, "
                         f"sigma_max={sigma_max!r}")


def reverse(grid: torch.Tensor) -> torch.Tensor:
    """The grid backwards (1 -> 0), for inversion. grid: (K + 1,)."""
    if grid.dim() != 1:
        raise ValueError(f"a time grid is one-dimensional, got shape {tuple(grid.shape)}")
    return grid.flip(0)


class TimeGrid(ABC):
    """A registered grid: ``grid(steps) -> (steps + 1,)`` increasing float64 times in [0, 1]."""

    @abstractmethod
    def __call__(self, steps: int) -> torch.Tensor: ...


class UniformGrid(TimeGrid):
    """Equal steps from 0 to 1."""

    def __call__(self, steps: int) -> torch.Tensor:
        return uniform_grid(steps)


class ShiftedGrid(TimeGrid):
    """SD3-shifted uniform grid; shift > 1 refines the source end (see :func:`shifted_grid`)."""

    def __init__(self, shift: float = 3.0):
        self.shift = check_shift(shift)

    def __call__(self, steps: int) -> torch.Tensor:
        return shifted_grid(steps, self.shift)


class EDMGrid(TimeGrid):
    """Karras/EDM rho-spaced grid mapped to rectified-flow time (see :func:`edm_grid`)."""

    def __init__(self, rho: float = 7.0, sigma_min: float = 0.002, sigma_max: float = 80.0):
        _check_edm(rho, sigma_min, sigma_max)
        self.rho, self.sigma_min, self.sigma_max = float(rho), float(sigma_min), float(sigma_max)

    def __call__(self, steps: int) -> torch.Tensor:
        return edm_grid(steps, self.rho, self.sigma_min, self.sigma_max)
