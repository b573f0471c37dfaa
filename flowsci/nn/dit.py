"""DiT: a diffusion transformer velocity field v(x, t[, y]) for images (Peebles & Xie 2023).

The image (B, C, H, W) is cut into p×p patches, each flattened patch is mapped linearly to a
token of width ``width``, and a fixed 2-D sin-cos embedding of the patch grid position is added.
``depth`` transformer blocks follow, each conditioned on a vector c (time and label) by
adaLN-Zero: a linear map of SiLU(c) gives a shift, a scale and a gate for each of the two
sub-blocks,

    x <- x + gate_a · Attn(LN(x) (1 + scale_a) + shift_a)
    x <- x + gate_m · MLP(LN(x) (1 + scale_m) + shift_m)

with LN a layer norm without affine parameters. The modulation maps start at zero, so every
block starts as the identity. A last adaLN (shift, scale) and a linear map to p·p·C values per
token, both zero-initialised (so the initial velocity is exactly 0), are folded back into an
image. The helpers here (patchify, position embedding, conditioning, final layer) are shared
with :mod:`flowsci.nn.mmdit`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flowsci.nn.embeddings import ConditionEmbedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), shift and scale (B, D) -> x (1 + scale) + shift, per sample."""
    return x * (1 + scale[:, None]) + shift[:, None]


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int, device: torch.device | None = None,
                              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed 2-D sin-cos embedding (grid_h·grid_w, dim) of a row-major patch grid.

    A quarter of the features each: sin and cos of the row index, sin and cos of the column
    index, at frequencies 10000^(-k / (dim/4)), k = 0 .. dim/4 - 1. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = 10000.0 ** (-torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    rows = torch.arange(grid_h, device=device, dtype=torch.float64)[:, None].expand(grid_h, grid_w)
    cols = torch.arange(grid_w, device=device, dtype=torch.float64)[None, :].expand(grid_h, grid_w)
    a = rows.reshape(-1, 1) * freqs
    b = cols.reshape(-1, 1) * freqs
    return torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], dim=-1).to(dtype)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """x (B, C, H, W) -> (B, (H/p)·(W/p), C·p·p): row-major patches, each flattened as (C, p, p)."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}×{w} is not a multiple of the patch size {patch}")
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(tokens: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`patchify`: (B, (H/p)·(W/p), C·p·p) -> (B, C, H, W)."""
    b = tokens.shape[0]
    gh, gw = height // patch, width // patch
    x = tokens.reshape(b, gh, gw, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)


def check_image(x: torch.Tensor, patch: int, channels: int, name: str) -> None:
    """Raise ValueError unless x is (B, channels, H, W) with H, W multiples of ``patch``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} takes images (B, {channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % patch or x.shape[3] % patch:
        raise ValueError(f"{name}: image size {x.shape[2]}×{x.shape[3]} is not a multiple of the "
                         f"patch size {patch}")


def check_sizes(channels: int, patch: int, width: int, depth: int, heads: int, num_classes: int) -> None:
    """The argument checks shared by DiT and MMDiT."""
    if min(channels, patch, width, depth, heads) < 1:
        raise ValueError(f"channels, patch, width, depth and heads must be >= 1, got channels={channels}, "
                         f"patch={patch}, width={width}, depth={depth}, heads={heads}")
    if width % heads:
        raise ValueError(f"attention heads ({heads}) must divide the width ({width})")
    if width % 4:
        raise ValueError(f"width must be a multiple of 4 (2-D sin-cos position embedding), got {width}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")


class FinalLayer(nn.Module):
    """tokens (B, N, D), c (B, D) -> (B, N, p·p·C): adaLN (shift, scale) and a linear map, both
    zero-initialised, so the output starts at exactly 0."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_features)
        for layer in (self.modulation, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(c)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def mlp(width: int, ratio: int = 4) -> nn.Sequential:
    """The transformer MLP D -> ratio·D -> D with a tanh-approximated GELU."""
    return nn.Sequential(nn.Linear(width, ratio * width), nn.GELU(approximate="tanh"),
                         nn.Linear(ratio * width, width))


def xavier_init_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every nn.Linear under ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DiTBlock(nn.Module):
    """tokens (B, N, D), c (B, D) -> (B, N, D): self-attention and an MLP (ratio 4), each
    modulated by adaLN-Zero. ``modulation(SiLU(c))`` splits into (shift_attn, scale_attn,
    gate_attn, shift_mlp, scale_mlp, gate_mlp); it starts at zero, so the block starts as the
    identity. ``value_hook`` (default None: no effect), when set, maps the attention values
    V (B, heads, N, D/heads) to the V the attention uses (RF-Edit's feature sharing,
    :mod:`flowsci.editing`); it is not a parameter or buffer."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention heads ({heads}) must divide the width ({width})")
        self.heads = heads
        self.value_hook: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = mlp(width)
        self.modulation = nn.Linear(width, 6 * width)
        xavier_init_linears(self)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention (B, N, D) -> (B, N, D), output projection included."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.value_hook is not None:
            v = self.value_hook(v)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(F.silu(c)).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.attention(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class DiT(nn.Module):
    """v(x, t[, y]): x (B, channels, H, W), t (B,) in [0, 1] -> (B, channels, H, W).

    H and W must be multiples of ``patch``; the sequence has (H/p)·(W/p) tokens of width
    ``width``. With ``num_classes > 0`` the model is conditioned on integer labels y (B,) in
    [0, num_classes); the label -1 is the null condition of classifier-free guidance. With
    ``context_dim > 0`` it is conditioned on a text context (B, L, context_dim) with its
    ``context_mask`` (B, L) through the pooled (masked mean) context added to c; a row without
    tokens is the null caption.
    """

    def __init__(self, channels: int = 1, patch: int = 2, width: int = 64, depth: int = 4, heads: int = 4,
                 num_classes: int = 0, time_dim: int = 64, context_dim: int = 0):
        super().__init__()
        check_sizes(channels, patch, width, depth, heads, num_classes)
        self.channels, self.patch, self.width = channels, patch, width
        self.patch_embedding = nn.Linear(channels * patch * patch, width)
        nn.init.xavier_uniform_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)
        self.conditioning = ConditionEmbedding(width, time_dim, num_classes, init_std=0.02,
                                               context_dim=context_dim)
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.final = FinalLayer(width, channels * patch * patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        check_image(x, self.patch, self.channels, "DiT")
        b, _, h, w = x.shape
        c = self.conditioning(t, y, b, context, context_mask).to(x.dtype)
        tokens = self.patch_embedding(patchify(x, self.patch))
        tokens = tokens + sincos_position_embedding(h // self.patch, w // self.patch, self.width,
                                                    x.device, x.dtype)
        for block in self.blocks:
            tokens = block(tokens, c)
        return unpatchify(self.final(tokens, c), self.patch, self.channels, h, w)
