"""Exponential moving average of the weights, with a warm-up of the decay."""

from __future__ import annotations

import functools

import torch
from torch.optim.swa_utils import AveragedModel


@torch.no_grad()
def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor,
               *, decay: float) -> None:
    """EMA step with the warm-up decay min(decay, (1 + n) / (10 + n)) after n updates.

    torch's ``get_ema_multi_avg_fn`` uses the full decay from the first step, so the EMA keeps
    a large share of the initial weights for ~1/(1 - decay) steps; the warm-up removes that.
    """
    n = int(num_averaged)
    d = min(decay, (1 + n) / (10 + n))
    for avg, cur in zip(averaged, current):
        if avg.is_floating_point():
            avg.lerp_(cur, 1 - d)
        else:  # integer buffers (e.g. batch-norm counters) follow the model
            avg.copy_(cur)


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An :class:`AveragedModel` of ``model`` (buffers included) updated by :func:`ema_update`."""
    return AveragedModel(model, multi_avg_fn=functools.partial(ema_update, decay=decay), use_buffers=True)
