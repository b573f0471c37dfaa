"""The training objective of :class:`~flowsci.audio.autoencoder.MelAutoencoder`: reconstruction + weighted KL.

Normalisation: with N input elements per sample (C · H · W) the loss of a batch is

    mean |x̂ - x|  (or mean (x̂ - x)²)  +  kl_weight · mean_b KL_b / N,

i.e. the β-VAE loss (sum of the per-element reconstruction errors + kl_weight · KL) divided by N,
so ``kl_weight`` is the β of that summed loss and does not change with the field's size.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from flowsci.audio.autoencoder import gaussian_kl
from flowsci.config import ObjectiveConfig

RECONSTRUCTIONS = ("l1", "mse")


@dataclasses.dataclass
class AutoencoderConfig(ObjectiveConfig):
    """YAML ``objective:`` section of the autoencoder."""

    reconstruction: str = "l1"       # l1 | mse, mean over the input elements
    kl_weight: float = 1e-4          # β of the KL term, per input element (module docstring)

    def __post_init__(self) -> None:
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got "
                             f"{self.reconstruction!r}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"kl_weight must be finite and >= 0, got {self.kl_weight}")


class AutoencoderObjective:
    """``loss(model, batch)`` for a model with ``model(x) -> (reconstruction, mean, logvar)``;
    ``batch["x1"]`` (B, C, H, W) is the field. The latent is sampled from torch's global stream."""

    def __init__(self, reconstruction: str = "l1", kl_weight: float = 1e-4):
        AutoencoderConfig(reconstruction=reconstruction, kl_weight=kl_weight)  # validates
        self.reconstruction, self.kl_weight = reconstruction, kl_weight

    @classmethod
    def from_config(cls, cfg: AutoencoderConfig) -> AutoencoderObjective:
        return cls(reconstruction=cfg.reconstruction, kl_weight=cfg.kl_weight)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss and logs ``reconstruction``, ``kl`` (per latent element) and ``loss``."""
        x = batch["x1"]
        reconstruction, mean, logvar = model(x)
        error = reconstruction - x
        reconstruction_loss = error.abs().mean() if self.reconstruction == "l1" else error.square().mean()
        kl = gaussian_kl(mean, logvar).sum()
        loss = reconstruction_loss + self.kl_weight * kl / x.numel()
        logs = {"reconstruction": float(reconstruction_loss.detach()),
                "kl": float(kl.detach()) / mean.numel(), "loss": float(loss.detach())}
        return loss, logs
