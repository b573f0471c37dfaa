"""Fourier neural operators: FNO (Li et al., ICLR 2021) and implicit FNO (You et al., 2022).

Written here rather than taken from the `neuraloperator` library: flowsci's default install must
not depend on peer libraries (neuraloperator is only an optional benchmark extra), and
neuraloperator has no weight-shared implicit (IFNO) variant.

Kept Fourier modes. On a grid (n_1, ..., n_D) the spectral convolution takes the real FFT
(``torch.fft.rfftn``, the last axis halved) and keeps the integer wavenumbers k with
|k_a| <= modes - 1 on every full-FFT axis a < D (both signs: 2·modes - 1 values) and
0 <= k_D <= modes - 1 on the rfft axis, i.e. all |k_a| < modes; every other mode is set to zero.
This needs modes <= n_a / 2 on every axis (checked at forward time). neuraloperator's
``n_modes=(12, 12)`` keeps k_1 in -6..5 and k_2 in 0..6, about this module's modes = 7.

Positional features. Li et al. append the grid coordinates to the input; with ``positional``
(the default) the periodic version [cos 2π i/n_a, sin 2π i/n_a] of every axis a is appended
instead, smooth across the periodic boundary. A position-dependent forcing (Kolmogorov flow's
sin 4y) makes the one-step map depend on absolute position, which a shift-equivariant operator
cannot represent; with ``positional=False`` the operator commutes exactly with periodic shifts.

Parameter counts count a complex weight as two real numbers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.nn import functional as F

_POINTWISE = {2: nn.Conv2d, 3: nn.Conv3d}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_n_dims(n_dims: int) -> None:
    if n_dims not in _POINTWISE:
        raise ValueError(f"n_dims must be 2 or 3, got {n_dims!r}")


def periodic_coordinates(grid: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[cos 2π i/n_a, sin 2π i/n_a] for every axis a of the grid: (2 · len(grid), *grid)."""
    features = []
    for axis, n in enumerate(grid):
        angles = torch.arange(n, dtype=dtype, device=device) * (2 * math.pi / n)
        shape = [1] * len(grid)
        shape[axis] = n
        for values in (angles.cos(), angles.sin()):
            features.append(values.view(shape).expand(grid))
    return torch.stack(features)


class SpectralConv(nn.Module):
    """Fourier-space linear map on the kept modes |k_a| < modes: (B, C_in, *grid) -> (B, C_out, *grid).

    weight: (2·modes-1, ..., 2·modes-1, modes, 2, C_in, C_out) real/imaginary parts, one complex
    C_in x C_out matrix per kept mode (full-FFT axes stored from k = -(modes-1) to modes-1).
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int, modes: int):
        super().__init__()
        _check_n_dims(n_dims)
        _check_positive(in_channels=in_channels, out_channels=out_channels, modes=modes)
        self.n_dims, self.modes, self.out_channels = n_dims, modes, out_channels
        kept = (2 * modes - 1,) * (n_dims - 1) + (modes,)
        std = (1.0 / (in_channels + out_channels)) ** 0.5  # complex magnitude std sqrt(2/(in+out))
        self.weight = nn.Parameter(torch.randn(*kept, 2, in_channels, out_channels) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = x.shape[2:]
        if len(grid) != self.n_dims or any(2 * self.modes > n for n in grid):
            raise ValueError(f"modes={self.modes} needs a {self.n_dims}-D grid with every size >= "
                             f"2 * modes = {2 * self.modes}, got grid {tuple(grid)}")
        dims = tuple(range(2, 2 + self.n_dims))
        full_dims, shift = dims[:-1], (self.modes - 1,) * (self.n_dims - 1)
        # roll the full-FFT axes so that k = -(modes-1) .. modes-1 sit at indices 0 .. 2·modes-2
        spectrum = torch.roll(torch.fft.rfftn(x, dim=dims), shifts=shift, dims=full_dims)
        block = (..., *(slice(0, 2 * self.modes - 1),) * (self.n_dims - 1), slice(0, self.modes))
        mixed = self._mix(spectrum[block])
        out = spectrum.new_zeros(x.shape[0], self.out_channels, *spectrum.shape[2:])
        out[block] = mixed
        out = torch.roll(out, shifts=tuple(-s for s in shift), dims=full_dims)
        return torch.fft.irfftn(out, s=grid, dim=dims)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """One complex C_in x C_out matrix per kept mode: x (B, C_in, *kept) complex -> (B, C_out, *kept).

        As two real batched matmuls over the M kept modes, [Re x; Im x] @ Re W and [Re x; Im x] @ Im W:
        torch's complex bmm on CPU takes a per-element path for such small matrices (a 32² FNO of
        width 32 spent three quarters of its forward there, ~20 ms at batch 1), and the weight's
        (M, 2, C_in, C_out) layout is used in place.
        """
        batch, _, *kept = x.shape
        parts = torch.view_as_real(x).flatten(2, -2).permute(2, 3, 0, 1)   # (M, 2, B, C_in)
        stacked = parts.reshape(parts.shape[0], 2 * batch, -1)             # (M, 2B, C_in): Re rows, Im rows
        weight = self.weight.flatten(0, -4)                                # (M, 2, C_in, C_out)
        by_re, by_im = torch.bmm(stacked, weight[:, 0]), torch.bmm(stacked, weight[:, 1])  # (M, 2B, C_out)
        mixed = torch.complex(by_re[:, :batch] - by_im[:, batch:], by_im[:, :batch] + by_re[:, batch:])
        return mixed.permute(1, 2, 0).reshape(batch, self.out_channels, *kept)


class FourierLayer(nn.Module):
    """Spectral convolution plus pointwise linear skip (no activation): (B, W, *grid) -> (B, W, *grid)."""

    def __init__(self, width: int, n_dims: int, modes: int):
        super().__init__()
        self.spectral = SpectralConv(width, width, n_dims, modes)
        self.skip = _POINTWISE[n_dims](width, width, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral(x) + self.skip(x)


class _FourierOperator(nn.Module, ABC):
    """Shared lifting / projection of FNO and IFNO; subclasses define the hidden map."""

    def __init__(self, in_channels: int, out_channels: int, n_dims: int, modes: int, width: int,
                 positional: bool):
        super().__init__()
        _check_n_dims(n_dims)
        _check_positive(in_channels=in_channels, out_channels=out_channels, modes=modes, width=width)
        if not isinstance(positional, bool):
            raise ValueError(f"positional must be True or False, got {positional!r}")
        self.in_channels, self.n_dims, self.positional = in_channels, n_dims, positional
        conv = _POINTWISE[n_dims]
        self.lift = conv(in_channels + (2 * n_dims if positional else 0), width, kernel_size=1)
        self.project = nn.Sequential(conv(width, 4 * width, kernel_size=1), nn.GELU(),
                                     conv(4 * width, out_channels, kernel_size=1))

    @abstractmethod
    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The map between lifting and projection, (B, width, *grid) -> (B, width, *grid)."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != self.n_dims + 2 or u.shape[1] != self.in_channels:
            raise ValueError(f"expected u of shape (B, {self.in_channels}, *{self.n_dims} grid sizes), "
                             f"got {tuple(u.shape)}")
        if self.positional:
            features = periodic_coordinates(u.shape[2:], u.dtype, u.device)
            u = torch.cat([u, features.expand(u.shape[0], *features.shape)], dim=1)
        return self.project(self._hidden(self.lift(u)))


class FNO(_FourierOperator):
    """Fourier neural operator: u (B, in_channels, *grid) -> (B, out_channels, *grid).

    Pointwise lifting of the input (plus the periodic coordinate features if `positional`) to
    `width` channels; n_layers Fourier layers (spectral convolution keeping |k_a| < modes plus
    pointwise skip) with GELU after every layer but the last; pointwise projection
    width -> 4·width -> GELU -> out_channels.
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 2, modes: int = 12,
                 width: int = 32, n_layers: int = 4, positional: bool = True):
        super().__init__(in_channels, out_channels, n_dims, modes, width, positional)
        _check_positive(n_layers=n_layers)
        self.layers = nn.ModuleList(FourierLayer(width, n_dims, modes) for _ in range(n_layers))

    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < len(self.layers) - 1:
                h = F.gelu(h)
        return h


class IFNO(_FourierOperator):
    """Implicit FNO: one Fourier layer F with shared weights iterated n_layer times,
    h <- h + GELU(F(h)) / n_layer, between the FNO lifting (with the same optional positional
    features) and projection.

    u (B, in_channels, *grid) -> (B, out_channels, *grid); the parameter count does not depend
    on n_layer.
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 2, modes: int = 12,
                 width: int = 32, n_layer: int = 6, positional: bool = True):
        super().__init__(in_channels, out_channels, n_dims, modes, width, positional)
        _check_positive(n_layer=n_layer)
        self.n_layer = n_layer
        self.layer = FourierLayer(width, n_dims, modes)

    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        for _ in range(self.n_layer):
            h = h + F.gelu(self.layer(h)) / self.n_layer
        return h
