"""Factorized attention block of FactFormer / IFactFormer, chained (-o) and parallel (-m).

FactFormer: Li, Shu & Barati Farimani, NeurIPS 2023 (arXiv 2305.17560); IFactFormer-m/-o:
Yang, Wang & Wang, arXiv 2412.18840 (2024). Written from the equations of their factorized
attention block.

On a tensor-product grid u (B, n_1, ..., n_D, C) (D = 2 or 3, channels last) the block

1. normalises u (LayerNorm) and projects it to values V (B, h, n_1, ..., n_D, d);
2. reduces u to one 1-D function per axis a: mean over the other axes, a bias-free linear map
   shared by all axes, a bias-free linear map of the axis, LayerNorm, GEGLU MLP -> u_a (B, n_a, C);
3. forms the low-rank axis kernel K_a = q_a k_aᵀ (B, h, n_a, n_a) from q_a = R(x_a) W_q u_a and
   k_a = R(x_a) W_k u_a (R: 1-D rotary embedding of the axis coordinate), with no softmax, no
   scaling and no quadrature weights;
4. applies the kernels to V, either *chained* (the separable kernel K_1 ⊗ ... ⊗ K_D applied to V,
   FactFormer / IFactFormer-o) or *parallel* (each K_a along its own axis of the same V, the D
   results concatenated on channels, IFactFormer-m);
5. instance norm over the grid, then Linear -> GELU -> Linear back to C channels (bias-free).

Cost per block O(N (n_1 + ... + n_D) h d) for N = n_1 ... n_D grid points, instead of O(N²).
Averaging commutes with the bias-free linear maps of step 2, so they are applied after the mean.
Inside the block the values are channels first per head, V (B, h, d, n_1, ..., n_D), so that the
kernel products, the instance norm (a layer norm over the grid axis of (B, channels, N)) and the
output maps are batched matrix products on contiguous memory.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("parallel", "chained")
ROTARY_MIN_FREQ = 1.0 / 64.0  # fastest rotary frequency 1 / min_freq = 64 rad per unit coordinate
QK_INIT_GAIN = 0.02  # Xavier-uniform gain of W_q and W_k


def rotary_tables(positions: torch.Tensor, d: int,
                  min_freq: float = ROTARY_MIN_FREQ) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-width tables (C, S) of the 1-D rotary embedding: positions (n,) -> two (n, d), d even.

    Pair j < d/2 (features j and j + d/2) at point i turns by the angle
    θ_ij = positions[i] · 10000^(-2j/d) / min_freq (Su et al., RoFormer, arXiv 2104.09864);
    C = [cos θ, cos θ] and S = [-sin θ, sin θ] on the feature axis, for :func:`apply_rotary`.
    """
    if d % 2:
        raise ValueError(f"rotary embedding needs an even feature size, got {d}")
    half = d // 2
    freqs = torch.exp(torch.arange(half, dtype=positions.dtype, device=positions.device)
                      * (-2.0 * math.log(1e4) / d))
    angles = positions[:, None] * (freqs / min_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (..., n, d) with the tables (n, d) of :func:`rotary_tables`.

    (x_j, x_{j+d/2}) -> (x_j cos θ - x_{j+d/2} sin θ, x_{j+d/2} cos θ + x_j sin θ), so
    <R(p) q, R(p') k> depends on p - p' only.
    """
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * sin


def _check_kernels(kernels: list[torch.Tensor], v: torch.Tensor) -> None:
    n_dims = len(kernels)
    if n_dims not in (2, 3) or v.dim() != n_dims + 3:
        raise ValueError(f"need 2 or 3 axis kernels and values (B, h, d, *spatial) with that many "
                         f"spatial axes, got {n_dims} kernels and values of shape {tuple(v.shape)}")
    for axis, kernel in enumerate(kernels):
        n = v.shape[3 + axis]
        if kernel.shape != (*v.shape[:2], n, n):
            raise ValueError(f"kernel {axis} must have shape {(*v.shape[:2], n, n)}, "
                             f"got {tuple(kernel.shape)}")


def _axis_equation(axis: int, n_dims: int) -> str:
    """einsum applying a kernel (b, h, n, n) along spatial axis `axis` of V (b, h, c, *spatial)."""
    spatial = "xyz"[:n_dims]
    out_letter, in_letter = spatial[axis], "XYZ"[axis]
    return f"bh{out_letter}{in_letter},bhc{spatial.replace(out_letter, in_letter)}->bhc{spatial}"


def apply_parallel(kernels: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """Each axis kernel applied along its own axis of the same V, concatenated on channels.

    kernels: D tensors (B, h, n_a, n_a); v: (B, h, d, n_1, ..., n_D) ->
    (B, h, D·d, n_1, ..., n_D) = [K_1 ×₁ V ‖ K_2 ×₂ V (‖ K_3 ×₃ V)] (channels per head).
    """
    _check_kernels(kernels, v)
    return torch.cat([torch.einsum(_axis_equation(axis, len(kernels)), kernel, v)
                      for axis, kernel in enumerate(kernels)], dim=2)


def apply_chained(kernels: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    """The separable kernel K_1 ⊗ ... ⊗ K_D applied to V, one axis after the other.

    kernels: D tensors (B, h, n_a, n_a); v: (B, h, d, n_1, ..., n_D) -> (B, h, d, n_1, ..., n_D).
    """
    _check_kernels(kernels, v)
    for axis, kernel in enumerate(kernels):
        v = torch.einsum(_axis_equation(axis, len(kernels)), kernel, v)
    return v


def axis_coordinates(n: int, length: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Periodic grid coordinates length · i / n, i = 0 .. n-1: (n,)."""
    return torch.arange(n, dtype=dtype, device=device) * (length / n)


class _AxisKernel(nn.Module):
    """Pooled field (B, n_a, C) of one axis -> kernel K_a = q_a k_aᵀ (B, h, n_a, n_a)."""

    def __init__(self, dim: int, heads: int, kernel_dim: int, qk_gain: float):
        super().__init__()
        self.heads, self.kernel_dim = heads, kernel_dim
        self.axis_map = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.gated = nn.Linear(dim, 2 * dim)  # GEGLU: GELU(first half) * second half
        self.mlp_out = nn.Linear(dim, dim)
        self.to_q = nn.Linear(dim, heads * kernel_dim, bias=False)
        self.to_k = nn.Linear(dim, heads * kernel_dim, bias=False)
        nn.init.xavier_uniform_(self.to_q.weight, gain=QK_INIT_GAIN * qk_gain)
        nn.init.xavier_uniform_(self.to_k.weight, gain=QK_INIT_GAIN * qk_gain)

    def forward(self, pooled: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """pooled (B, n, C), rotary tables (n, kernel_dim) of :func:`rotary_tables` -> (B, h, n, n)."""
        value, gate = self.gated(self.norm(self.axis_map(pooled))).chunk(2, dim=-1)
        reduced = self.mlp_out(F.gelu(value) * gate)
        batch, n = reduced.shape[:2]
        # q and k from one product with the stacked weights (the state_dict keeps both maps)
        qk = F.linear(reduced, torch.cat([self.to_q.weight, self.to_k.weight]))
        q, k = apply_rotary(qk.view(batch, n, 2, self.heads, self.kernel_dim).permute(2, 0, 3, 1, 4),
                            *rotary).unbind(0)  # (B, h, n, kernel_dim) each
        return q @ k.transpose(-1, -2)


class FactorizedAttention(nn.Module):
    """Factorized attention block: u (B, n_1, ..., n_D, dim) -> (B, n_1, ..., n_D, dim).

    variant "parallel" (IFactFormer-m) or "chained" (FactFormer, IFactFormer-o); heads h of
    value width dim_head; the axis kernels have rank dim_head · kernel_multiplier per head. The
    grid is periodic with side `length` on every axis (coordinates length · i / n_a). W_q and
    W_k start Xavier-uniform with gain QK_INIT_GAIN · qk_gain (1: the reference initialisation).

    The rotary tables of each grid size are cached per (n_a, dtype, device), outside the
    state_dict.
    """

    def __init__(self, dim: int, n_dims: int = 2, heads: int = 4, dim_head: int = 32,
                 kernel_multiplier: int = 3, variant: str = "parallel", length: float = 2 * math.pi,
                 qk_gain: float = 1.0):
        super().__init__()
        if n_dims not in (2, 3):
            raise ValueError(f"n_dims must be 2 or 3, got {n_dims!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        for name, value in (("dim", dim), ("heads", heads), ("dim_head", dim_head),
                            ("kernel_multiplier", kernel_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if dim_head * kernel_multiplier % 2:
            raise ValueError(f"dim_head * kernel_multiplier must be even (rotary embedding), got "
                             f"{dim_head} * {kernel_multiplier}")
        if not length > 0:
            raise ValueError(f"length must be > 0, got {length!r}")
        if not qk_gain > 0:
            raise ValueError(f"qk_gain must be > 0, got {qk_gain!r}")
        self.n_dims, self.heads, self.dim_head = n_dims, heads, dim_head
        self.variant, self.length = variant, float(length)
        self.kernel_dim = dim_head * kernel_multiplier
        self.rotary_cache: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.norm = nn.LayerNorm(dim)
        self.to_value = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_reducer = nn.Linear(dim, dim, bias=False)
        self.kernel_nets = nn.ModuleList(
            _AxisKernel(dim, heads, self.kernel_dim, qk_gain) for _ in range(n_dims))
        mixed = heads * dim_head * (n_dims if variant == "parallel" else 1)
        # output maps, used through their weight matrices on channels-first (B, channels, N)
        self.mix = nn.Linear(mixed, dim, bias=False)  # then GELU
        self.out = nn.Linear(dim, dim, bias=False)

    def _check_input(self, u: torch.Tensor) -> None:
        if u.dim() != self.n_dims + 2 or u.shape[-1] != self.norm.normalized_shape[0]:
            raise ValueError(f"expected u of shape (B, *{self.n_dims} grid sizes, "
                             f"{self.norm.normalized_shape[0]}), got {tuple(u.shape)}")

    def rotary(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables (n, kernel_dim) of an axis of n points (made once, then cached)."""
        key = (n, dtype, device)
        if key not in self.rotary_cache:
            with torch.inference_mode(False):  # usable by autograd when first made in inference mode
                positions = axis_coordinates(n, self.length, dtype, device)
                self.rotary_cache[key] = rotary_tables(positions, self.kernel_dim)
        return self.rotary_cache[key]

    def _kernels(self, normed: torch.Tensor) -> list[torch.Tensor]:
        spatial = list(range(1, self.n_dims + 1))
        kernels = []
        for axis, kernel_net in enumerate(self.kernel_nets):
            others = [d for d in spatial if d != axis + 1]
            pooled = self.to_reducer(normed.mean(dim=others))
            rotary = self.rotary(normed.shape[axis + 1], normed.dtype, normed.device)
            kernels.append(kernel_net(pooled, rotary))
        return kernels

    def axis_kernels(self, u: torch.Tensor) -> list[torch.Tensor]:
        """The D axis kernels K_a (B, h, n_a, n_a) of the block for u (B, n_1, ..., n_D, dim)."""
        self._check_input(u)
        return self._kernels(self.norm(u))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self._check_input(u)
        normed = self.norm(u)
        kernels = self._kernels(normed)
        batch, grid = u.shape[0], u.shape[1:-1]
        # values channels first, (B, h·d, N) = W_v normedᵀ, then (B, h, d, *grid)
        v = torch.bmm(self.to_value.weight.expand(batch, -1, -1), normed.flatten(1, -2).transpose(1, 2))
        v = v.view(batch, self.heads, self.dim_head, *grid)
        apply = apply_parallel if self.variant == "parallel" else apply_chained
        z = apply(kernels, v).flatten(1, 2).flatten(2)  # (B, channels, N)
        z = F.layer_norm(z, z.shape[-1:], eps=1e-5)  # instance norm: each channel over the grid
        mixed = F.gelu(torch.bmm(self.mix.weight.expand(batch, -1, -1), z))
        out = torch.bmm(self.out.weight.expand(batch, -1, -1), mixed)  # (B, dim, N)
        return out.transpose(1, 2).view_as(u)
