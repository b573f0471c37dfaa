"""RF-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025): edit
data by inverting it under the source condition and regenerating under the target condition,
sharing the self-attention values V of the inversion with the regeneration.

During the inversion (t = 1 -> 0) :class:`ValueSharing` records, at every evaluation time t,
the image-token values V (B, heads, N, d) of the last ``blocks`` transformer blocks; during the
regeneration (0 -> 1) it replaces V in those blocks by the recorded V of the nearest recorded
time, for the first ``inject`` steps (the ones nearest the noise, t = 0, 1/N, ... in flowsci
time; the paper, with t = 1 noise, calls them its last timesteps). The queries and keys stay
those of the target, so the target condition steers where the source's content goes.

The blocks are found generically: every submodule with a ``value_hook`` attribute, in module
order (:class:`flowsci.nn.dit.DiTBlock`, :class:`flowsci.nn.mmdit.JointBlock`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from flowsci.flow_matching import Sampler


class ValueSharing:
    """Record and re-inject the attention values V of the last ``blocks`` blocks of ``model``.

    A context manager: entering attaches a value hook to each of those blocks and a forward
    pre-hook to ``model`` that reads the evaluation time t (B,) (its second argument, or ``t=``);
    leaving removes them. The hooks pass V through unchanged until :meth:`record` (from then on
    they also store it) and replace it after :meth:`inject`. ``values`` maps (t, index of the
    block among the shared ones) to V (B, heads, N, d); at a time evaluated twice the later V is kept.
    Classifier-free guidance doubles the batch as [cond; null] (:class:`flowsci.guidance.GuidedVelocity`):
    recording keeps the conditional half, and injection uses the recorded (B, ...) V for both.
    """

    def __init__(self, model: nn.Module, blocks: int):
        hooked = [m for m in model.modules() if hasattr(m, "value_hook")]
        if not hooked:
            raise ValueError(f"value sharing needs a transformer whose attention blocks have a value_hook "
                             f"(dit, mmdit); {type(model).__name__} has none")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= len(hooked):
            raise ValueError(f"blocks must be an integer in [1, {len(hooked)}] (the model's attention "
                             f"blocks), got {blocks!r}")
        self.model, self.blocks = model, hooked[-blocks:]
        self.mode = "pass"
        self.batch = 0
        self.horizon = -math.inf
        self.time: float | None = None
        self.values: dict[tuple[float, int], torch.Tensor] = {}
        self._handle: RemovableHandle | None = None

    @property
    def times(self) -> list[float]:
        """The recorded evaluation times, sorted."""
        return sorted({t for t, _ in self.values})

    def record(self, batch: int) -> None:
        """Forget what was recorded and record V of a batch of ``batch`` samples from now on."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.values.clear()
        self.mode, self.batch = "record", batch

    def inject(self, horizon: float) -> None:
        """From now on, replace V at evaluation times t < ``horizon`` by the recorded V of the
        nearest recorded time (math.inf: at every time)."""
        if not self.values:
            raise ValueError("nothing recorded to inject: call record() and run the model first")
        self.mode, self.horizon = "inject", float(horizon)

    def __enter__(self) -> ValueSharing:
        busy = [type(block).__name__ for block in self.blocks if block.value_hook is not None]
        if busy:
            raise ValueError(f"the model's blocks already have a value hook ({busy[0]}): one ValueSharing "
                             "at a time")
        for index, block in enumerate(self.blocks):
            block.value_hook = lambda v, index=index: self._value(index, v)
        self._handle = self.model.register_forward_pre_hook(self._set_time, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for block in self.blocks:
            block.value_hook = None
        self._handle.remove()
        self.time = None

    def _set_time(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = args[1] if len(args) > 1 else kwargs.get("t")
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() == 0 or not bool((t == t[0]).all()):
            raise ValueError("value sharing keys V by the evaluation time: the model must be called as "
                             "model(x, t, ...) with one time for the whole batch, t (B,)")
        self.time = float(t[0])

    def _value(self, index: int, v: torch.Tensor) -> torch.Tensor:
        """v: (B or 2B, heads, N, d) -> the V the block uses."""
        if self.mode == "record":
            if v.shape[0] not in (self.batch, 2 * self.batch):
                raise ValueError(f"recording a batch of {self.batch}, got V of batch {v.shape[0]}")
            self.values[(self.time, index)] = v[:self.batch].detach()
        elif self.mode == "inject" and self.time < self.horizon:
            nearest = min(self.times, key=lambda t: abs(t - self.time))
            cached = self.values[(nearest, index)]
            if v.shape[0] == 2 * cached.shape[0]:  # classifier-free guidance: [cond; null]
                cached = torch.cat([cached, cached])
            if cached.shape != v.shape:
                raise ValueError(f"recorded V {tuple(cached.shape)} does not fit V {tuple(v.shape)}")
            return cached.to(v.dtype)
        return v


def rf_edit(model: nn.Module, sampler: Sampler, x_source: torch.Tensor,
            source_cond: Mapping[str, torch.Tensor], target_cond: Mapping[str, torch.Tensor], *,
            steps: int, inject: int, blocks: int, inversion_guidance: float = 1.0) -> torch.Tensor:
    """Edit x_source: (B, *D): invert it under ``source_cond`` (guidance ``inversion_guidance``)
    and regenerate under ``target_cond`` (the sampler's guidance), ``steps`` steps each on the
    sampler's grid and solver, sharing V of the last ``blocks`` blocks during the first
    ``inject`` regeneration steps. ``inject = 0`` or ``blocks = 0``: plain inversion and
    regeneration (no feature sharing). Conditions: name -> (B, ...) tensors. -> (B, *D).
    """
    _check_count("steps", steps, 1)
    _check_count("inject", inject, 0, steps)
    _check_count("blocks", blocks, 0)
    inverter = copy.copy(sampler)
    inverter.guidance = float(inversion_guidance)
    if inject == 0 or blocks == 0:
        noise = inverter.invert(model, x_source, steps=steps, **source_cond).x
        return sampler.sample(model, noise, steps=steps, **target_cond).x
    with ValueSharing(model, blocks) as sharing:
        sharing.record(batch=x_source.shape[0])
        noise = inverter.invert(model, x_source, steps=steps, **source_cond).x
        sharing.inject(_horizon(sampler.grid(steps), inject))
        return sampler.sample(model, noise, steps=steps, **target_cond).x


def _check_count(name: str, value: int, low: int, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        upper = "" if high == math.inf else f" and <= {high}"
        raise ValueError(f"{name} must be an integer >= {low}{upper}, got {value!r}")


def _horizon(grid: torch.Tensor, inject: int) -> float:
    """The time below which the first ``inject`` steps of ``grid`` (steps + 1,) evaluate.

    The solvers evaluate at the start, the middle and the end of a step; an end stage at
    t_inject itself is left to the next step. The cut sits a quarter step below t_inject, so
    that times rounded to the model's dtype (float32) fall on the right side of it.
    """
    if inject >= grid.numel() - 1:
        return math.inf
    return float(grid[inject] - 0.25 * (grid[inject] - grid[inject - 1]))
