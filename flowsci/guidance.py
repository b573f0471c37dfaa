"""Classifier-free guidance (CFG): condition dropout in training, guided velocity at sampling.

A conditional model is called as ``model(x, t, **cond)``. Training replaces the condition of
a random fraction ``p_uncond`` of the samples by a *null* value that the model learns as
"no condition" (for class labels usually an extra index, for continuous conditions zeros).
At sampling the guided velocity is

    v_w(x, t) = v(x, t | null) + w * (v(x, t | c) - v(x, t | null)),

so w = 1 is the conditional field, w = 0 the unconditional one and w > 1 extrapolates.
(META's image example writes (1 + w') c - w' u, i.e. w = 1 + w'.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def null_like(value: torch.Tensor, null: float | int | torch.Tensor) -> torch.Tensor:
    """A tensor shaped like ``value`` filled with the null condition."""
    return torch.as_tensor(null, dtype=value.dtype, device=value.device).expand_as(value).clone()


class ConditionDropout:
    """Replace each sample's condition by its null value with probability ``p_uncond``.

    ``null`` maps condition names to their null value; only those keys are dropped, and a
    sample loses all of them together.
    """

    def __init__(self, p_uncond: float, null: Mapping[str, float | int]):
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        if p_uncond > 0 and not null:
            raise ValueError("condition dropout needs the null value of at least one condition")
        self.p_uncond, self.null = p_uncond, dict(null)

    def __call__(self, cond: dict[str, torch.Tensor], generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """cond: name -> (B, ...) tensors; returns a new dict with dropped samples nulled."""
        if self.p_uncond == 0 or not cond:
            return cond
        missing = [k for k in self.null if k not in cond]
        if missing:
            raise KeyError(f"condition dropout: the batch has no {missing}; it has {sorted(cond)}")
        batch = next(iter(cond.values())).shape[0]
        device = next(iter(cond.values())).device
        drop = torch.rand(batch, generator=generator, device=device) < self.p_uncond
        out = dict(cond)
        for key, null in self.null.items():
            value = cond[key]
            mask = drop.reshape(-1, *[1] * (value.dim() - 1))
            out[key] = torch.where(mask, null_like(value, null), value)
        return out


class GuidedVelocity:
    """The CFG velocity v_null + w (v_cond - v_null) as an ODE right-hand side v(x, t).

    Both branches run in one batched forward pass of size 2B; each call counts as one NFE of
    the solver but costs two network evaluations per sample.
    """

    def __init__(self, model: torch.nn.Module, weight: float, cond: Mapping[str, torch.Tensor],
                 null: Mapping[str, float | int]):
        missing = [k for k in null if k not in cond]
        if missing:
            raise KeyError(f"guidance: no condition {missing} to guide; conditions: {sorted(cond)}")
        self.model, self.weight = model, float(weight)
        self.cond = dict(cond)
        self.both = {k: torch.cat([v, null_like(v, null[k]) if k in null else v]) for k, v in cond.items()}

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.weight == 1.0:
            return self.model(x, t, **self.cond)
        v_cond, v_null = self.model(torch.cat([x, x]), torch.cat([t, t]), **self.both).chunk(2)
        return v_null + self.weight * (v_cond - v_null)
