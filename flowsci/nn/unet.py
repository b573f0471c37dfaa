"""A U-Net velocity field v(x, t[, y]) for images (and any 2-D fields on a grid).

Residual blocks (GroupNorm, SiLU, 3×3 convolutions) whose normalised features are scaled and
shifted by an embedding of t (and of the class label), a stride-2 convolution between levels,
self-attention at the lowest resolution, and skip connections from each level of the
contracting path to the same level of the expanding path (Ronneberger et al. 2015, in the form
of Ho et al. 2020 / Dhariwal & Nichol 2021). The last convolution starts at zero, so the
initial velocity is 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowsci.nn.embeddings import ConditionEmbedding


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """x (B, C_in, H, W), emb (B, E) -> (B, C_out, H, W); the embedding scales and shifts the
    normalised features between the two convolutions; the block starts as its skip path."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.modulation = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.modulation(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H·W positions of (B, C, H, W), with a residual."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channels ({channels})")
        self.norm = _norm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """v(x, t[, y]): x (B, channels, H, W), t (B,) -> (B, out_channels, H, W); ``out_channels``
    defaults to ``channels`` (a velocity field; another value for a backbone whose input carries
    more channels than its output, e.g. :class:`flowsci.nn.concat.ConcatConditioned`).

    ``multipliers`` gives the width of each level (width · m); every level but the last halves
    the resolution (any H, W: the expanding path resizes to the skip's size). With
    ``num_classes > 0`` the model is conditioned on integer labels y (B,) in [0, num_classes);
    the label -1 is the null condition of classifier-free guidance. With ``context_dim > 0`` it
    is conditioned on a text context (B, L, context_dim) and ``context_mask`` (B, L) through the
    pooled context added to the time embedding; a row without tokens is the null caption.
    """

    def __init__(self, channels: int = 1, width: int = 32, multipliers: list[int] | None = None,
                 blocks: int = 1, attention: bool = True, heads: int = 4, num_classes: int = 0,
                 time_dim: int = 64, context_dim: int = 0, out_channels: int | None = None):
        super().__init__()
        multipliers = list(multipliers or [1, 2])
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be >= 1 or None (= channels), got {out_channels}")
        if channels < 1 or width < 1 or blocks < 1 or not multipliers or min(multipliers) < 1:
            raise ValueError(f"channels, width, blocks and every multiplier must be >= 1, got channels="
                             f"{channels}, width={width}, blocks={blocks}, multipliers={multipliers}")
        emb_dim = 4 * width
        self.condition = ConditionEmbedding(emb_dim, time_dim, num_classes, context_dim=context_dim)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)

        self.down, self.downsample, level_channels = nn.ModuleList(), nn.ModuleList(), []
        c = width
        for i, m in enumerate(multipliers):
            self.down.append(nn.ModuleList(ResBlock(c if j == 0 else width * m, width * m, emb_dim)
                                           for j in range(blocks)))
            c = width * m
            level_channels.append(c)
            last = i == len(multipliers) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = nn.ModuleList([ResBlock(c, c, emb_dim), ResBlock(c, c, emb_dim)])
        self.middle_attention = SelfAttention2d(c, heads) if attention else nn.Identity()

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(multipliers))):
            out = level_channels[i]
            # the deepest level works at the middle's resolution; the others first map to their own
            # width at the coarser resolution (a 3×3 convolution, 4× cheaper there), then resize
            deepest = i == len(multipliers) - 1
            self.upsample.append(nn.Identity() if deepest else nn.Conv2d(c, out, 3, padding=1))
            c = c if deepest else out
            self.up.append(nn.ModuleList(ResBlock(c + out if j == 0 else out, out, emb_dim)
                                         for j in range(blocks)))
            c = out
        self.head = nn.Sequential(_norm(c), nn.SiLU(),
                                  nn.Conv2d(c, out_channels or channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"UNet takes images (B, C, H, W), got shape {tuple(x.shape)}")
        emb = self.condition(t, y, x.shape[0], context, context_mask).to(x.dtype)
        h, skips = self.stem(x), []
        for blocks, downsample in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = downsample(h)
        h = self.middle_attention(self.middle[0](h, emb))
        h = self.middle[1](h, emb)
        for blocks, upsample, skip in zip(self.up, self.upsample, reversed(skips)):
            h = upsample(h)
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.head(h)
