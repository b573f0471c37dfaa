"""Implicit factorized transformer (IFactFormer-m / -o): one attention block, weights shared.

Yang, Wang & Wang, arXiv 2412.18840 (2024), as in their code (huiyu-2002/IFactFormer-m).
For u (B, C_in, *grid):

1. lifting: pointwise Linear(C_in -> dim/2) -> GELU -> Linear(dim/2 -> dim, no bias);
2. fixed Gaussian-Fourier features of the grid coordinates (scaled to the unit box),
   [sin 2π x·B, cos 2π x·B] with B (D, dim/2) ~ N(0, fourier_scale²), through Linear(dim, dim),
   added once to the lifted field;
3. the same factorized attention block F (:mod:`factorized_attention`) applied n_layer times,
   u <- u + F(u) / n_layer: forward Euler in a pseudo-time s in [0, 1] with shared weights, so
   the parameter count does not depend on n_layer;
4. projection: pointwise Linear(dim -> dim/2, no bias) -> GELU -> Linear(dim/2 -> C_out).

The paper lifts with a convolution grouped by input channel; a dense pointwise map is used here
so that any number of input channels (e.g. a state concatenated with a noisy sample) works; it
is the same map for one input channel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci_domains.turbulence.factorized_attention import FactorizedAttention


class GaussianFourierFeatures(nn.Module):
    """Fixed random Fourier features of the unit-box grid coordinates: -> (*grid, dim).

    frequencies: (n_dims, dim/2) ~ N(0, scale²), a buffer saved with the model (Tancik et al.,
    NeurIPS 2020, arXiv 2006.10739). The features depend on the grid and that buffer only, so
    they are cached per (grid, dtype, device), outside the state_dict, and made again whenever
    the buffer is replaced or written in place (e.g. by ``load_state_dict``).
    """

    def __init__(self, n_dims: int, dim: int, scale: float):
        super().__init__()
        self.register_buffer("frequencies", torch.randn(n_dims, dim // 2) * scale)
        self.cache: dict[tuple[tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}
        self.cached_from: tuple[torch.Tensor, int] | None = None  # (frequencies, its version)

    def features(self, grid: tuple[int, ...]) -> torch.Tensor:
        """The features computed afresh in the buffer's dtype: (*grid, dim)."""
        freqs = self.frequencies
        axes = [torch.arange(n, dtype=freqs.dtype, device=freqs.device) / n for n in grid]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        angles = 2 * math.pi * coords @ freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, grid: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The features of ``grid`` cast to ``dtype``: (*grid, dim), from the cache when valid."""
        if torch.compiler.is_compiling():  # a traced graph computes them inline: no guard on the version
            return self.features(tuple(grid)).to(dtype)
        freqs = self.frequencies
        stamp = self.cached_from
        if stamp is None or stamp[0] is not freqs or stamp[1] != freqs._version:
            self.cache.clear()
            self.cached_from = (freqs, freqs._version)
        key = (tuple(grid), dtype, freqs.device)
        if key not in self.cache:
            with torch.inference_mode(False):  # usable by autograd when first made in inference mode
                self.cache[key] = self.features(tuple(grid)).to(dtype)
        return self.cache[key]


class IFactFormer(nn.Module):
    """Implicit factorized transformer: u (B, in_channels, *grid) -> (B, out_channels, *grid).

    grid = (nx, ny) or (nx, ny, nz), any sizes, periodic with side `length` on every axis.
    variant "parallel" is IFactFormer-m, "chained" IFactFormer-o; qk_gain scales the initial
    query and key maps (see :class:`FactorizedAttention`).
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 2, dim: int = 48,
                 heads: int = 4, dim_head: int = 32, kernel_multiplier: int = 3, n_layer: int = 6,
                 variant: str = "parallel", length: float = 2 * math.pi, fourier_scale: float = 8.0,
                 qk_gain: float = 1.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("n_layer", n_layer)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2, got {dim!r}")
        if not fourier_scale > 0:
            raise ValueError(f"fourier_scale must be > 0, got {fourier_scale!r}")
        self.block = FactorizedAttention(dim, n_dims, heads, dim_head, kernel_multiplier,
                                         variant, length, qk_gain)
        self.in_channels, self.n_dims, self.n_layer = in_channels, n_dims, n_layer
        self.lift = nn.Sequential(nn.Linear(in_channels, dim // 2), nn.GELU(),
                                  nn.Linear(dim // 2, dim, bias=False))
        self.fourier_features = GaussianFourierFeatures(n_dims, dim, fourier_scale)
        self.position_map = nn.Linear(dim, dim)
        self.project = nn.Sequential(nn.Linear(dim, dim // 2, bias=False), nn.GELU(),
                                     nn.Linear(dim // 2, out_channels))

    def _lifted(self, u: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *grid) -> lifted field plus positional features, channels last (B, *grid, dim)."""
        if u.dim() != self.n_dims + 2 or u.shape[1] != self.in_channels:
            raise ValueError(f"expected u of shape (B, {self.in_channels}, *{self.n_dims} grid sizes), "
                             f"got {tuple(u.shape)}")
        positional = self.position_map(self.fourier_features(tuple(u.shape[2:]), u.dtype))
        return self.lift(u.movedim(1, -1)) + positional

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = self._lifted(u)
        for _ in range(self.n_layer):
            h = h + self.block(h) / self.n_layer
        return self.project(h).movedim(-1, 1)

    @torch.no_grad()
    def attention_kernels(self, u: torch.Tensor) -> list[list[torch.Tensor]]:
        """Axis kernels seen at each of the n_layer iterations: [layer][axis] (B, h, n_a, n_a)."""
        h = self._lifted(u)
        kernels = []
        for _ in range(self.n_layer):
            kernels.append(self.block.axis_kernels(h))
            h = h + self.block(h) / self.n_layer
        return kernels


class IFactFormerM(IFactFormer):
    """IFactFormer-m: the implicit shell around the parallel factorized attention block."""

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 2, dim: int = 48,
                 heads: int = 4, dim_head: int = 32, kernel_multiplier: int = 3, n_layer: int = 6,
                 length: float = 2 * math.pi, fourier_scale: float = 8.0, qk_gain: float = 1.0):
        super().__init__(in_channels, out_channels, n_dims, dim, heads, dim_head, kernel_multiplier,
                         n_layer, "parallel", length, fourier_scale, qk_gain)


class IFactFormerO(IFactFormer):
    """IFactFormer-o: the implicit shell around the chained (separable-kernel) block."""

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 2, dim: int = 48,
                 heads: int = 4, dim_head: int = 32, kernel_multiplier: int = 3, n_layer: int = 6,
                 length: float = 2 * math.pi, fourier_scale: float = 8.0, qk_gain: float = 1.0):
        super().__init__(in_channels, out_channels, n_dims, dim, heads, dim_head, kernel_multiplier,
                         n_layer, "chained", length, fourier_scale, qk_gain)

