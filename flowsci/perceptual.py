"""A perceptual distance on a domain's own feature network, and 2-RF++'s perceptual-Huber loss.

2-RF++ (Lee et al. 2024) trains its 2-rectified flow with LPIPS on the predicted clean image
plus a time-weighted pseudo-Huber term on the velocity. LPIPS needs VGG / AlexNet weights that
cannot be downloaded here, so the distance is LPIPS's form (unit-normalised activations per
channel vector, squared differences averaged over positions, summed over layers; Zhang et al.
2018 without the learned channel weights) on a network the *domain* supplies: for images, a
small classifier trained on the training split with another seed than the evaluation's
classifier (so a model is not tuned to the network that scores it). It is a classifier-feature
distance, not LPIPS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from flowsci.errors import ConfigError
from flowsci.losses import Loss, PseudoHuberLoss

FeatureFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""features(x (B, *D)) -> activations [(B, C_l, *S_l) or (B, C_l)] of a frozen network."""


def feature_distance(features: FeatureFn, a: torch.Tensor, b: torch.Tensor,
                     eps: float = 1e-10) -> torch.Tensor:
    """LPIPS-form distance (B,) between a and b (B, *D) on ``features``: per layer, the channel
    vector at each position is scaled to unit length, and |f_l(a) - f_l(b)|^2 is averaged over
    positions; layers add up (each term lies in [0, 4])."""
    total = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    for fa, fb in zip(features(a), features(b), strict=True):
        na = fa / (fa.pow(2).sum(1, keepdim=True) + eps).sqrt()
        nb = fb / (fb.pow(2).sum(1, keepdim=True) + eps).sqrt()
        total = total + (na - nb).pow(2).sum(1).reshape(a.shape[0], -1).mean(1)
    return total


class PerceptualHuberLoss(Loss):
    """2-RF++'s loss in our convention (t = 0 source, t = 1 data; 2-RF++'s tau = 1 - t):

        t * pseudo_huber(v_hat, v) + w_p(t) * feature_distance(x1_hat, x1),

    x1_hat = the data predicted by the velocity on the objective's path (linear path:
    x_t + (1 - t) v_hat), w_p = ``perceptual_weight``, divided by (1 - t) (clamped to
    ``max_weight``) with ``inverse_time`` (2-RF++'s "LPIPS-Huber-1/t" variant). ``c``: the
    pseudo-Huber constant (default 0.00054 D). ``features``: the domain's frozen feature network
    (:data:`FeatureFn`), supplied by the domain, never from YAML.
    """

    needs_path = True

    def __init__(self, features: FeatureFn | None = None, c: float | None = None,
                 perceptual_weight: float = 1.0, inverse_time: bool = False, max_weight: float = 1e5):
        if features is None:
            raise ConfigError("perceptual_huber needs a feature network, which the domain supplies "
                              "(the images domain does); this domain has none: use pseudo_huber")
        if not perceptual_weight >= 0 or not max_weight > 0:
            raise ValueError(f"perceptual_weight must be >= 0 and max_weight > 0, got {perceptual_weight}, "
                             f"{max_weight}")
        self.features, self.huber = features, PseudoHuberLoss(c)
        self.perceptual_weight, self.inverse_time = float(perceptual_weight), inverse_time
        self.max_weight = max_weight

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, *,
                 x_t: torch.Tensor | None = None, path: Any = None) -> torch.Tensor:
        if x_t is None or path is None:
            raise ValueError("PerceptualHuberLoss needs the keywords x_t= and path= (the objective "
                             "passes them)")
        huber = t * self.huber(pred, target, t)
        x1_hat, x1 = path.velocity_to_x1(pred, x_t, t), path.velocity_to_x1(target, x_t, t)
        weight = self.perceptual_weight * torch.ones_like(t)
        if self.inverse_time:
            weight = (weight / (1 - t)).clamp(max=self.max_weight)
        return huber + weight * feature_distance(self.features, x1_hat, x1)
