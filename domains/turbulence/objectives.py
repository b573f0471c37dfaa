"""Training objectives of the turbulence surrogates.

Batches hold pairs of consecutive snapshots: ``state`` = u(t) and ``next`` = u(t + Δ), each
(B, C, *spatial) in physical units. Both objectives measure errors in the normalised units
of the surrogate's own :class:`~flowsci_domains.turbulence.surrogate.ChannelNormalizer`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flowsci.flow_matching import FlowMatching


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||prediction - target||_2 / ||target||_2 over all non-batch axes: (B,)."""
    difference = (prediction - target).flatten(1).norm(dim=1)
    return difference / target.flatten(1).norm(dim=1).clamp_min(torch.finfo(target.dtype).tiny)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The surrogate inside a DistributedDataParallel wrapper (its normaliser's buffers)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class OneStepObjective:
    """Relative L2 of the one-step prediction in normalised units, averaged over the batch.

    ``measure`` maps normalised fields (B, C, *S) to what the loss compares (None: the fields
    themselves); e.g. the velocity implied by a vorticity field, whose L2 weights a mode of
    wavenumber k by 1 / k^2, so that the large scales, which hold most of the kinetic energy,
    count as much as they do in the flow's energy.

    ``unroll`` K > 1 trains on rollouts, in one of two ways (``gradient``):

    - "pushforward" (Brandstetter, Worrall & Welling 2022): each batch draws k uniformly from
      1..K, rolls the model k - 1 steps from u(t) without gradient and regresses u(t + kΔ)
      (batch key ``future``: (B, K, C, *S)) from that state, so that the model learns to
      correct the errors its own rollouts feed it;
    - "full" (solver-in-the-loop, Um et al. 2020; Kochkov et al. 2021): the model rolls K steps
      with gradient through every step (a differentiable solver included) and the loss is the
      mean of the K per-step errors.

    ``noise`` > 0 adds Gaussian noise of that std (normalised units) to the input state.
    """

    def __init__(self, unroll: int = 1, gradient: str = "pushforward",
                 measure: Callable[[torch.Tensor], torch.Tensor] | None = None, noise: float = 0.0):
        if unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        if gradient not in ("pushforward", "full"):
            raise ValueError(f"gradient must be 'pushforward' or 'full', got {gradient!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.unroll, self.gradient, self.noise = unroll, gradient, noise
        self.measure = measure or (lambda z: z)

    def _perturbed(self, normalizer: nn.Module, state: torch.Tensor) -> torch.Tensor:
        """The input state with Gaussian noise of std ``noise`` in normalised units (noise
        injection, Sanchez-Gonzalez et al. 2020: the model sees states off the data, as in its
        own rollouts); unchanged when noise = 0."""
        if self.noise == 0:
            return state
        z = normalizer.normalize(state)
        return normalizer.denormalize(z + self.noise * torch.randn_like(z))

    def _error(self, normalizer: nn.Module, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample relative L2 (B,) of the measured normalised fields."""
        return relative_l2(self.measure(normalizer.normalize(prediction)),
                           self.measure(normalizer.normalize(target)))

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        normalizer = _unwrapped(model).normalizer
        if self.unroll > 1 and self.gradient == "full":
            state, errors = self._perturbed(normalizer, batch["state"]), []
            for j in range(self.unroll):
                state = model(state)
                errors.append(self._error(normalizer, state, batch["future"][:, j]).mean())
            return torch.stack(errors).mean(), {"last_step_loss": float(errors[-1].detach())}
        k = int(torch.randint(1, self.unroll + 1, ())) if self.unroll > 1 else 1
        state, target = batch["state"], batch["next"] if k == 1 else batch["future"][:, k - 1]
        state = self._perturbed(normalizer, state)
        if k > 1:
            with torch.no_grad():
                for _ in range(k - 1):
                    state = model(state)
        error = self._error(normalizer, model(state), target)
        return error.mean(), {"unroll": float(k)} if self.unroll > 1 else {}


class FlowOneStepObjective:
    """Flow matching of p(u(t + Δ) | u(t)): x0 ~ N(0, I), x1 = normalised u(t + Δ), with
    u(t) as the condition ``state`` (the engine's path, time sampler, coupling and loss)."""

    def __init__(self, flow: FlowMatching):
        self.flow = flow

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = _unwrapped(model).normalizer.normalize(batch["next"])
        return self.flow.loss(model, {"x0": torch.randn_like(x1), "x1": x1, "state": batch["state"]})
