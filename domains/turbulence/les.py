"""Eddy-viscosity closures for large-eddy simulation (LES) of the 2-D vorticity equation.

An LES solves the equations of :mod:`flowsci_domains.turbulence.spectral` on a coarse grid
with the unresolved scales modelled by an eddy viscosity nu_t(x, y) >= 0. The modelled
subgrid stress is tau_ij = 2 nu_t S_ij, with the resolved strain rate
S_ij = (d_j u_i + d_i u_j) / 2, and the momentum equation gains div(tau). The vorticity
equation gains its exact curl,

    dw/dt += curl div(2 nu_t S) = (d_x^2 - d_y^2)(nu_t s_s) - 2 d_x d_y (nu_t s_n),

where s_n = 2 S_11 = 2 d_x u and s_s = 2 S_12 = d_y u + d_x v (S_22 = -S_11 in 2-D). For a
constant nu_t this is nu_t lap(w), and its kinetic-energy rate is -<nu_t |S|^2> with
|S| = sqrt(2 S_ij S_ij) = sqrt(s_n^2 + s_s^2). :class:`~flowsci_domains.turbulence.spectral.Kolmogorov2D`
takes a closure through ``closure=`` and adds this term to the advection term.

The closures here are nu_t = (c Delta)^p |g| with Delta = L / n the grid spacing:

- :class:`Smagorinsky` (Smagorinsky 1963, Mon. Weather Rev. 91, 99-164): nu_t = (c Delta)^2 |S|;
- :class:`Leith` (Leith 1996, "Stochastic models of chaotic systems", Physica D 98, 481-491,
  the 2-D enstrophy-cascade form): nu_t = (c Delta)^3 |grad w|.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import ClassVar

import torch


@dataclasses.dataclass(frozen=True)
class EddyViscosityClosure(abc.ABC):
    """An eddy viscosity nu_t computed pointwise from the resolved flow; c is its coefficient."""

    c: float
    # True when eddy_viscosity reads |grad w| (the solver then computes it)
    uses_vorticity_gradient: ClassVar[bool] = False

    def __post_init__(self) -> None:
        c = self.c
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c < 0:
            raise ValueError(f"{type(self).__name__}: c must be a finite number >= 0, got {c!r}")

    @abc.abstractmethod
    def eddy_viscosity(self, strain_rate: torch.Tensor, vorticity_gradient: torch.Tensor | None,
                       delta: float) -> torch.Tensor:
        """nu_t (..., m, m) from |S| (..., m, m), |grad w| (..., m, m) or None, and the grid spacing."""


@dataclasses.dataclass(frozen=True)
class Smagorinsky(EddyViscosityClosure):
    """Smagorinsky (1963): nu_t = (c Delta)^2 |S| with |S| = sqrt(2 S_ij S_ij)."""

    def eddy_viscosity(self, strain_rate: torch.Tensor, vorticity_gradient: torch.Tensor | None,
                       delta: float) -> torch.Tensor:
        return (self.c * delta) ** 2 * strain_rate


@dataclasses.dataclass(frozen=True)
class Leith(EddyViscosityClosure):
    """Leith (1996): nu_t = (c Delta)^3 |grad w|."""

    uses_vorticity_gradient: ClassVar[bool] = True

    def eddy_viscosity(self, strain_rate: torch.Tensor, vorticity_gradient: torch.Tensor | None,
                       delta: float) -> torch.Tensor:
        if vorticity_gradient is None:
            raise ValueError("Leith needs the vorticity gradient magnitude |grad w|, got None")
        return (self.c * delta) ** 3 * vorticity_gradient
