"""Flow statistics and the sharp spectral filter of periodic 2-D vorticity fields.

Fields are (..., n, n) tensors on [0, 2pi)^2 with the axis convention of
:mod:`flowsci_domains.turbulence.spectral` (last axis = y). All functions are batched over the
leading dimensions. Conventions: kinetic energy = 1/2 <|u|^2> and enstrophy = 1/2 <w^2>, with
<.> the spatial mean (the 1/2 in both); the velocity is the one implied by w (its mean ignored).
"""

from __future__ import annotations

import torch

from flowsci_domains.turbulence.spectral import grid_size, wavenumbers


def spectral_filter(w: torch.Tensor, m: int, ndim: int = 2) -> torch.Tensor:
    """Sharp spectral cut-off of w (..., n, n) to the m x m grid: (..., m, m).

    Keeps the Fourier modes with |k_x| < m/2 and |k_y| < m/2 (the coarse Nyquist modes are
    dropped, so the result is real-symmetric and the filter idempotent) and samples that
    band-limited field at the m x m grid points x_i = 2 pi i / m. m must be even, 2 <= m <= n.
    ``ndim`` = 3 filters the last three axes the same way: (..., n, n, n) -> (..., m, m, m).
    """
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    if w.dim() < ndim or len(set(w.shape[-ndim:])) != 1 or not w.is_floating_point():
        raise ValueError(f"w must be a real tensor of shape (...{', n' * ndim}), "
                         f"got {tuple(w.shape)} {w.dtype}")
    n = w.shape[-1]
    if isinstance(m, bool) or not isinstance(m, int) or m < 2 or m % 2 or m > n:
        raise ValueError(f"m must be an even integer with 2 <= m <= n={n}, got {m!r}")
    half = m // 2
    axes = tuple(range(-ndim, 0))
    w_hat = torch.fft.rfftn(w, dim=axes, norm="forward")
    pieces = [w_hat[..., :half], w_hat.new_zeros(*w_hat.shape[:-1], 1)]      # k_y = 0 .. m/2 - 1, Nyquist 0
    w_hat = torch.cat(pieces, dim=-1)
    for axis in axes[:-1]:
        nyquist_shape = list(w_hat.shape)
        nyquist_shape[axis] = 1
        w_hat = torch.cat([w_hat.narrow(axis, 0, half), w_hat.new_zeros(nyquist_shape),
                           w_hat.narrow(axis, n - half + 1, half - 1)], dim=axis)
    return torch.fft.irfftn(w_hat, s=(m,) * ndim, dim=axes, norm="forward")


def spectral_interpolate(w: torch.Tensor, n: int) -> torch.Tensor:
    """Trigonometric interpolation of the periodic field w (..., m, m) onto the n x n grid:
    (..., n, n), the inverse of :func:`spectral_filter`.

    The modes |k_x|, |k_y| < m/2 keep their amplitudes, the coarse Nyquist lines are dropped and
    every finer mode is zero, so ``spectral_filter(spectral_interpolate(w, n), m)`` returns w
    whenever w has no Nyquist content (every filtered field). n must be even, n >= m.
    """
    m = grid_size(w)
    if isinstance(n, bool) or not isinstance(n, int) or n < m or n % 2:
        raise ValueError(f"n must be an even integer >= m={m}, got {n!r}")
    half = m // 2
    w_hat = torch.fft.rfft2(w, norm="forward")
    padded = w_hat.new_zeros(*w_hat.shape[:-2], n, n // 2 + 1)
    padded[..., :half, :half] = w_hat[..., :half, :half]                    # k_x = 0 .. m/2 - 1
    padded[..., n - half + 1:, :half] = w_hat[..., m - half + 1:, :half]    # k_x = -(m/2 - 1) .. -1
    return torch.fft.irfft2(padded, s=(n, n), norm="forward")


def _mode_energy(w: torch.Tensor) -> torch.Tensor:
    """1/2 |u_hat_k|^2 per rfft2 mode (..., n, n // 2 + 1), counting each mode's conjugate
    partner, so that the sum over all entries is 1/2 <|u|^2>."""
    n = w.shape[-1]
    kx, ky = wavenumbers(n, w.device, w.dtype)
    k2 = kx ** 2 + ky ** 2
    w_hat = torch.fft.rfft2(w, norm="forward")
    # |u_hat|^2 = |w_hat|^2 / |k|^2; columns 0 < k_y < n/2 stand for two modes (k and -k).
    multiplicity = torch.full_like(ky, 2.0)
    multiplicity[..., 0] = 1.0
    if n % 2 == 0:
        multiplicity[..., -1] = 1.0
    return 0.5 * multiplicity * w_hat.abs().square() / torch.where(k2 > 0, k2, torch.inf)


def energy_spectrum(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell-summed kinetic-energy spectrum of the velocity of w (..., n, n).

    Returns k = 1..K (K,) and E (..., K) with K = n // 2 and E(k) the energy 1/2 |u_hat|^2
    summed over the modes with k - 1/2 <= |k| < k + 1/2, so that sum_k E(k) = 1/2 <|u|^2>
    except for the modes with |k| >= K + 1/2 (the corners of the square grid), which are
    left out.
    """
    n = grid_size(w)
    n_shells = n // 2
    kx, ky = wavenumbers(n, w.device, w.dtype)
    shell = torch.floor(torch.sqrt(kx ** 2 + ky ** 2) + 0.5).long()
    energy = _mode_energy(w)
    flat = energy.reshape(*energy.shape[:-2], -1)
    index = shell.reshape(-1).clamp(max=n_shells + 1)
    spectrum = flat.new_zeros(*flat.shape[:-1], n_shells + 2).index_add_(-1, index, flat)
    k = torch.arange(1, n_shells + 1, device=w.device, dtype=w.dtype)
    return k, spectrum[..., 1:n_shells + 1]


def kinetic_energy(w: torch.Tensor) -> torch.Tensor:
    """1/2 <|u|^2> (...) of the velocity implied by the vorticity w (..., n, n)."""
    grid_size(w)
    return _mode_energy(w).sum(dim=(-2, -1))


def enstrophy(w: torch.Tensor) -> torch.Tensor:
    """1/2 <w^2> (...) of the vorticity w (..., n, n)."""
    grid_size(w)
    return 0.5 * w.square().mean(dim=(-2, -1))
