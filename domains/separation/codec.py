"""The latent space of the flow separator: log-mel <-> autoencoder latent, scaled to unit variance.

z = E(normalise(log_mel)) / scale with E the autoencoder's posterior mean, and
log_mel = denormalise(D(scale · z)); ``scale`` is the standard deviation of the training targets'
latents, so the flow's data has about the variance of its N(0, I) source (the scale factor of
latent diffusion and FlowSep).
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowsci_domains.separation.features import MelNormalization

BATCH = 64


class LatentCodec:
    """encode: log-mels (R, M, F) -> latents (R, C, M/4, F/4); decode: the way back."""

    def __init__(self, autoencoder: torch.nn.Module, normalization: MelNormalization, scale: float = 1.0,
                 directory: Path | None = None):
        self.autoencoder, self.normalization, self.scale = autoencoder, normalization, scale
        self.directory = directory  # the autoencoder's run directory, where latents are stored

    @torch.no_grad()
    def encode(self, log_mel: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        x = self.normalization.normalize(log_mel)[:, None]
        means = torch.cat([self.autoencoder.encode(x[i:i + BATCH])[0] for i in range(0, len(x), BATCH)])
        return means / self.scale if scaled else means

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent * self.scale
        out = torch.cat([self.autoencoder.decode(z[i:i + BATCH]) for i in range(0, len(z), BATCH)])
        return self.normalization.denormalize(out[:, 0])
