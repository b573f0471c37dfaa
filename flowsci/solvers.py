"""Fixed-step ODE solvers for dx/dt = v(x, t) on any time grid (increasing: sampling,
decreasing: inversion), counting function evaluations (NFE)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v(x, t) with x: (B, *D) and t: (B,) -> (B, *D)."""


@dataclass(frozen=True)
class SolverResult:
    """x: (B, *D) final state; times: (K+1,); trajectory: (K+1, B, *D) when requested."""

    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: torch.Tensor | None = None


def uniform_grid(steps: int, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """``steps + 1`` equally spaced times from t_start to t_end (float64 for exact endpoints)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)


class Solver(ABC):
    """A one-step method; :meth:`integrate` runs it over a time grid."""

    order: int = 0

    @abstractmethod
    def step(self, velocity: VelocityFn, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
        """Advance x from time t by h (h < 0 integrates backwards)."""

    def integrate(self, velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, *,
                  trajectory: bool = False, grad: bool = False) -> SolverResult:
        """Integrate from times[0] to times[-1]; ``grad=False`` runs without autograd."""
        times = torch.as_tensor(times, dtype=torch.float64).flatten()
        if times.numel() < 2:
            raise ValueError("the time grid needs at least two points")
        diffs = times.diff()
        if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
            raise ValueError("the time grid must be strictly increasing or strictly decreasing")
        nfe = 0

        def counted(x: torch.Tensor, t: float) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            return velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))

        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            x = x0
            states = [x0] if trajectory else None
            for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
                x = self.step(counted, x, t, t_next - t)
                if states is not None:
                    states.append(x)
        return SolverResult(x=x, nfe=nfe, times=times,
                            trajectory=torch.stack(states) if states is not None else None)


class Euler(Solver):
    """x_{n+1} = x_n + h v(x_n, t_n); first order."""

    order = 1

    def step(self, velocity: Callable[[torch.Tensor, float], torch.Tensor],
             x: torch.Tensor, t: float, h: float) -> torch.Tensor:
        return x + h * velocity(x, t)
