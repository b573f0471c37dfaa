"""A velocity field conditioned on an observation image by channel concatenation.

v(x, t, observation) = backbone(cat([x, observation], dim=1), t): the usual conditioning of
image-restoration flows and diffusion models on a degraded image (SR3, Saharia et al. 2022;
PMRF's posterior-sampling baseline, :mod:`flowsci.restoration`). The backbone is any registered
image model with ``channels`` and ``out_channels`` parameters (``unet``), built with
channels + observation_channels inputs and channels outputs:

    model: {name: concat_conditioned, observation_channels: 1,
            backbone: {name: unet, params: {width: 32}}}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowsci.registry import build_model, model_parameters


class ConcatConditioned(nn.Module):
    """v(x, t, observation): x (B, channels, H, W), t (B,), observation (B, observation_channels, H, W)
    -> (B, channels, H, W).

    ``backbone``: {name: a registered image model, params: {...}}; its ``channels`` and
    ``out_channels`` are set here. ``inputs``: the other arguments a domain derives from its data
    (e.g. ``num_classes``); they go to the backbone with ``backbone.params``, and further
    conditions (``y``) reach it at call time.
    """

    def __init__(self, backbone: dict, observation_channels: int, channels: int = 1, **inputs: Any):
        super().__init__()
        if not isinstance(backbone, dict) or set(backbone) - {"name", "params"} or "name" not in backbone:
            raise ValueError(f"backbone must be {{name: MODEL, params: {{...}}}}, got {backbone!r}")
        if channels < 1 or observation_channels < 1:
            raise ValueError(f"channels and observation_channels must be >= 1, got {channels} and "
                             f"{observation_channels}")
        params = dict(backbone.get("params", {}))
        for key in ("channels", "out_channels"):
            if key in params:
                raise ValueError(f"backbone.params.{key} is set by concat_conditioned (from channels and "
                                 "observation_channels); remove it")
        if "out_channels" not in model_parameters(backbone["name"]):
            raise ValueError(f"backbone {backbone['name']!r} has no out_channels parameter; use an image "
                             "model that has one (e.g. unet)")
        for key, value in inputs.items():
            if params.setdefault(key, value) != value:
                raise ValueError(f"backbone.params.{key} = {params[key]!r} disagrees with {key} = {value!r} "
                                 "given by the domain; remove it from backbone.params")
        self.channels, self.observation_channels = channels, observation_channels
        self.backbone = build_model(backbone["name"], {**params, "channels": channels + observation_channels,
                                                       "out_channels": channels})

    def forward(self, x: torch.Tensor, t: torch.Tensor, observation: torch.Tensor | None = None,
                **cond: torch.Tensor) -> torch.Tensor:
        """x: (B, channels, H, W), t: (B,), observation: (B, observation_channels, H, W)
        -> the velocity (B, channels, H, W)."""
        if observation is None:
            raise ValueError("ConcatConditioned needs the condition 'observation' (B, C_obs, H, W)")
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, H, W), got shape {tuple(x.shape)}")
        expected = (x.shape[0], self.observation_channels, *x.shape[2:])
        if tuple(observation.shape) != expected:
            raise ValueError(f"observation must have shape {expected} (batch and H, W of x, "
                             f"{self.observation_channels} channels), got {tuple(observation.shape)}")
        return self.backbone(torch.cat([x, observation.to(x.dtype)], dim=1), t, **cond)
