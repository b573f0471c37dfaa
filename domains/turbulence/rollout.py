"""Autoregressive rollouts of one-step surrogates (deterministic and flow-matching ensembles)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from flowsci.flow_matching import Sampler
from flowsci_domains.turbulence.surrogate import FlowSurrogate

StepFn = Callable[[torch.Tensor], torch.Tensor]  # u(t) (B, C, *S) -> u(t + Δ); a one-step surrogate is one


def flow_step(model: FlowSurrogate, sampler: Sampler, generator: torch.Generator | None = None) -> StepFn:
    """u(t) (B, C, *S) -> one sample of u(t + Δ): integrate fresh noise with ``sampler``."""

    def step(state: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(state.shape, generator=generator, dtype=state.dtype).to(state.device)
        return model.next_state(sampler.sample(model, noise, state=state).x)

    return step


@torch.no_grad()
def rollout(step: StepFn, u0: torch.Tensor, n_steps: int, *, progress: bool = False) -> torch.Tensor:
    """Apply ``step`` n_steps times from u0 (B, C, *S): returns (B, n_steps + 1, C, *S).

    A diverging rollout keeps going (inf/NaN are kept, so that statistics report the blow-up).
    """
    states = [u0]
    for _ in tqdm(range(n_steps), desc="rollout", unit="step", disable=not progress, leave=False):
        states.append(step(states[-1]))
    return torch.stack(states, dim=1)


@torch.no_grad()
def ensemble_rollout(step: StepFn, u0: torch.Tensor, n_steps: int, members: int, *,
                     progress: bool = False) -> torch.Tensor:
    """``members`` stochastic rollouts per initial state u0 (B, C, *S): (members, B, n_steps + 1, C, *S)."""
    batch = u0.repeat(members, *([1] * (u0.dim() - 1)))
    paths = rollout(step, batch, n_steps, progress=progress)
    return paths.view(members, u0.shape[0], *paths.shape[1:])


@torch.no_grad()
def seconds_per_step(step: StepFn, u0: torch.Tensor, repeats: int = 10) -> float:
    """Median wall-clock seconds of one ``step`` on u0 (after one warm-up call)."""
    state = step(u0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = step(u0)
        times.append(time.perf_counter() - start)
    del state
    return float(torch.tensor(times).median())
