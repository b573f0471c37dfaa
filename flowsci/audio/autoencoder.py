"""A KL-regularised convolutional autoencoder (a small VAE) for 2-D fields such as log-mel spectrograms.

The shape of AudioLDM's AutoencoderKL (Liu et al. 2023, after Rombach et al. 2022), much smaller:
the encoder runs residual blocks (GroupNorm, SiLU, 3×3 convolutions) and halves H and W with a
stride-2 convolution ``levels`` times, doubling the width each time, then a 1×1 convolution gives
the mean and log-variance of a diagonal Gaussian posterior q(z | x) on (latent_channels, H / 2^levels,
W / 2^levels). The decoder mirrors it with nearest-neighbour upsampling. A latent flow (FlowSep)
then moves in z; :func:`gaussian_kl` is the regulariser that keeps q(z | x) near N(0, I).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each sample, summed over its latent elements.

    mean, logvar: (B, *L) -> (B,); per element 0.5 (mean² + exp(logvar) - 1 - logvar).
    """
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have one shape, got {tuple(mean.shape)} and "
                         f"{tuple(logvar.shape)}")
    per_element = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return per_element.flatten(1).sum(dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _ResidualBlock(nn.Module):
    """x (B, C, H, W) -> x + conv(SiLU(norm(conv(SiLU(norm(x)))))); starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class _Upsample(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W): nearest-neighbour doubling, then a 3×3 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MelAutoencoder(nn.Module):
    """x (B, channels, H, W) <-> z (B, latent_channels, H / 2^levels, W / 2^levels).

    Level i works at width · 2^i channels with ``blocks`` residual blocks; H and W must be
    divisible by 2^levels. For log-mel spectrograms (B, 1, 64, 256) with the defaults the latent
    is (B, 8, 16, 64). The log-variance is clamped to [-30, 20].
    """

    def __init__(self, channels: int = 1, latent_channels: int = 8, width: int = 32, levels: int = 2,
                 blocks: int = 1):
        super().__init__()
        if min(channels, latent_channels, width, blocks) < 1 or levels < 0:
            raise ValueError(f"channels, latent_channels, width and blocks must be >= 1 and levels >= 0, got "
                             f"channels={channels}, latent_channels={latent_channels}, width={width}, "
                             f"blocks={blocks}, levels={levels}")
        self.channels, self.latent_channels, self.levels = channels, latent_channels, levels
        widths = [width * 2**i for i in range(levels + 1)]

        encoder: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for i in range(levels):
            encoder += [_ResidualBlock(widths[i]) for _ in range(blocks)]
            encoder.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
        encoder += [_ResidualBlock(widths[-1]) for _ in range(blocks)]
        encoder += [_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 2 * latent_channels, 1)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1)]
        decoder += [_ResidualBlock(widths[-1]) for _ in range(blocks)]
        for i in reversed(range(levels)):
            decoder.append(_Upsample(widths[i + 1], widths[i]))
            decoder += [_ResidualBlock(widths[i]) for _ in range(blocks)]
        decoder += [_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    @property
    def factor(self) -> int:
        """How many times smaller the latent is than the input along H and along W (2^levels)."""
        return 2**self.levels

    def latent_shape(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """The latent shape of an input shape (..., channels, H, W): (..., latent_channels, H / 2^levels,
        W / 2^levels); leading (batch) dimensions are kept."""
        shape = tuple(shape)
        if len(shape) < 3 or shape[-3] != self.channels:
            raise ValueError(f"shape must end in (channels={self.channels}, H, W), got {shape}")
        h, w = shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"H and W must be divisible by 2^levels = {self.factor}, got H={h}, W={w} "
                             f"(crop or pad the field)")
        return (*shape[:-3], self.latent_channels, h // self.factor, w // self.factor)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, channels, H, W) -> the posterior's mean and log-variance, each
        (B, latent_channels, H / 2^levels, W / 2^levels)."""
        if x.dim() != 4:
            raise ValueError(f"x must be (B, channels, H, W), got shape {tuple(x.shape)}")
        self.latent_shape(x.shape)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, h, w) -> the reconstruction (B, channels, h · 2^levels, w · 2^levels)."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (B, latent_channels={self.latent_channels}, h, w), got shape "
                             f"{tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, channels, H, W) -> (reconstruction (B, channels, H, W), mean, logvar); the decoded
        latent is z = mean + exp(logvar / 2) · ε with ε ~ N(0, I) from ``generator`` (torch's global
        stream when None) when ``sample``, else the mean."""
        mean, logvar = self.encode(x)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + (0.5 * logvar).exp() * noise
        return self.decode(z), mean, logvar
