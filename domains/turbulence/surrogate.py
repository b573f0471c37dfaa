"""Surrogate wrappers: a registered operator plus the per-channel normalisation of its data.

The statistics are fitted on the training split (:func:`channel_statistics`) and passed to
the wrapper's constructor as plain lists, so they live in the checkpoint's model spec and in
its buffers: a loaded surrogate works in physical units and applies the same normalisation
to every split.

- :class:`OneStepSurrogate` (registered as ``one_step_surrogate``): u(t) -> u(t + Δ).
- :class:`FlowSurrogate` (``flow_surrogate``): the velocity v(x_t, t | u(t)) of a
  flow-matching model of p(u(t + Δ) | u(t)) in normalised units; the operator sees
  [x_t, normalised u(t), t] stacked on channels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowsci.plugins import build_model


def channel_statistics(fields: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``fields`` (N, C, *spatial), in float64."""
    flat = fields.transpose(0, 1).reshape(fields.shape[1], -1).double()
    return flat.mean(1).tolist(), flat.std(1).tolist()


class ChannelNormalizer(nn.Module):
    """z-scores per channel: (u - mean) / std on (B, C, *spatial) tensors."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one entry per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive per channel, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    @property
    def channels(self) -> int:
        return self.mean.numel()

    def _shape(self, u: torch.Tensor) -> tuple[int, ...]:
        if u.dim() < 3 or u.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, *spatial), got {tuple(u.shape)}")
        return (1, self.channels) + (1,) * (u.dim() - 2)

    def normalize(self, u: torch.Tensor) -> torch.Tensor:
        shape = self._shape(u)
        return (u - self.mean.view(shape)) / self.std.view(shape)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        shape = self._shape(z)
        return z * self.std.view(shape) + self.mean.view(shape)


def _operator(spec: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    params = dict(spec)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"operator needs a registered model name, got {spec}")
    return build_model(name, {"in_channels": in_channels, "out_channels": out_channels, **params})


class OneStepSurrogate(nn.Module):
    """u(t) (B, C, *spatial) -> u(t + Δ) in physical units through a normalised operator."""

    def __init__(self, operator: dict[str, Any], mean: list[float], std: list[float]):
        super().__init__()
        self.normalizer = ChannelNormalizer(mean, std)
        self.operator = _operator(operator, len(mean), len(mean))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.normalizer.denormalize(self.operator(self.normalizer.normalize(u)))


class FlowSurrogate(nn.Module):
    """Velocity of the conditional flow x_0 ~ N(0, I) -> x_1 = normalised u(t + Δ).

    forward(x_t (B, C, *spatial) normalised, t (B,), state (B, C, *spatial) physical u(t))
    -> (B, C, *spatial). :meth:`next_state` turns a sample x_1 back into physical units.
    """

    def __init__(self, operator: dict[str, Any], mean: list[float], std: list[float]):
        super().__init__()
        self.normalizer = ChannelNormalizer(mean, std)
        channels = len(mean)
        self.operator = _operator(operator, 2 * channels + 1, channels)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        time = t.to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1))).expand(x_t.shape[0], 1, *x_t.shape[2:])
        return self.operator(torch.cat([x_t, self.normalizer.normalize(state), time], dim=1))

    def next_state(self, x1: torch.Tensor) -> torch.Tensor:
        """A generated normalised sample (B, C, *spatial) in physical units."""
        return self.normalizer.denormalize(x1)
