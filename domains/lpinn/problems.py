"""The 1-D periodic problems of the LPINN study and their Lagrangian form.

All live on x ∈ [0, 2π) (periodic) and t ∈ [0, T]:

- ``convection``: u_t + β u_x = 0, u₀ = sin x;
- ``convection_diffusion``: u_t + β u_x = ν u_xx, u₀ = sin x;
- ``burgers``: u_t + u u_x = ν u_xx, u₀ = sin x + C (the shock travels at mean speed ≈ C).

Along the characteristics x(ξ, t) with label ξ = x(ξ, 0) they read dx/dt = a (a = β, or u for
Burgers) and du/dt = ν ∂²u/∂x².
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch

EQUATIONS = ("convection", "convection_diffusion", "burgers")
PERIOD = 2 * math.pi


@dataclasses.dataclass(frozen=True)
class Problem:
    """One PDE instance.

    ``beta`` is the convection speed (ignored by Burgers), ``nu`` the viscosity (ignored by
    pure convection) and ``offset`` the constant C added to u₀ = sin x (Burgers).
    """

    equation: Literal["convection", "convection_diffusion", "burgers"] = "convection"
    beta: float = 30.0
    nu: float = 0.01
    offset: float = 0.0
    t_end: float = 1.0

    def __post_init__(self) -> None:
        if self.equation not in EQUATIONS:
            raise ValueError(f"equation must be one of {', '.join(EQUATIONS)}, got {self.equation!r}")
        if self.viscosity < 0 or self.t_end <= 0:
            raise ValueError(f"nu must be >= 0 and t_end > 0, got nu={self.nu}, t_end={self.t_end}")

    @property
    def viscosity(self) -> float:
        """ν of the equation (0 for pure convection)."""
        return 0.0 if self.equation == "convection" else self.nu

    @property
    def mean_speed(self) -> float:
        """The mean speed of the characteristics at t = 0: β, or C for Burgers."""
        return self.offset if self.equation == "burgers" else self.beta

    def speed_scale(self, frame_speed: float = 0.0) -> float:
        """The largest speed of the characteristics at t = 0 relative to a frame moving at
        ``frame_speed`` (|β − a|, or |C − a| + 1 for Burgers), at least 1."""
        relative = abs(self.mean_speed - frame_speed) + (1.0 if self.equation == "burgers" else 0.0)
        return max(1.0, relative)

    def initial(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """u₀(x) = sin x (+ C for Burgers), for a tensor or an array of any shape."""
        sin = torch.sin if isinstance(x, torch.Tensor) else np.sin
        return sin(x) + (self.offset if self.equation == "burgers" else 0.0)

    def characteristic_speed(self, u: torch.Tensor) -> torch.Tensor | float:
        """dx/dt along a characteristic: β, or u itself for Burgers."""
        return u if self.equation == "burgers" else self.beta

    def describe(self) -> str:
        if self.equation == "burgers":
            return f"Burgers, u0 = sin x + {self.offset:g}, nu = {self.nu:g}"
        diffusion = f", nu = {self.nu:g}" if self.equation == "convection_diffusion" else ""
        return f"{self.equation.replace('_', '-')}, beta = {self.beta:g}{diffusion}"
