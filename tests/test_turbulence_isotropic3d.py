"""Oracles for the 3-D forced isotropic turbulence solver, its 3-D spectral filter and generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.turbulence.isotropic3d import (
    Isotropic3D,
    energy_spectrum_3d,
    enstrophy_3d,
    generate_isotropic3d,
    random_solenoidal_velocity,
)
from flowsci_domains.turbulence.spectral import Kolmogorov2D, random_initial_vorticity
from flowsci_domains.turbulence.statistics import spectral_filter

F64 = torch.float64


def coordinates(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    points = 2 * math.pi * torch.arange(n, dtype=F64) / n
    return points.reshape(n, 1, 1), points.reshape(1, n, 1), points.reshape(1, 1, n)


def numpy_divergence(u: torch.Tensor) -> np.ndarray:
    """div u (..., n, n, n) by numpy's FFT, independent of the solver's transforms."""
    n = u.shape[-1]
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky, kz = np.meshgrid(k, k, k, indexing="ij")
    u_hat = np.fft.fftn(u.numpy(), axes=(-3, -2, -1))
    div_hat = 1j * (kx * u_hat[..., 0, :, :, :] + ky * u_hat[..., 1, :, :, :] + kz * u_hat[..., 2, :, :, :])
    return np.fft.ifftn(div_hat, axes=(-3, -2, -1)).real


def kinetic_energy(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * u.square().sum(dim=-4).mean(dim=(-3, -2, -1))


def test_forced_flow_stays_divergence_free() -> None:
    u0 = random_solenoidal_velocity(2, 16, torch.Generator().manual_seed(0), dtype=F64)
    assert np.abs(numpy_divergence(u0)).max() < 1e-12
    u1 = Isotropic3D(16, nu=0.02, energy_injection_rate=0.2).advance(u0, 1.0)
    assert np.abs(numpy_divergence(u1)).max() < 1e-12 * u1.abs().max().item()
    assert kinetic_energy(u0).numpy() == pytest.approx(0.5, rel=1e-12)


def test_inviscid_unforced_flow_conserves_energy() -> None:
    u0 = random_solenoidal_velocity(1, 16, torch.Generator().manual_seed(1), energy=0.5, dtype=F64)
    drifts = []
    for dt in (0.1, 0.05):
        u1 = Isotropic3D(16, nu=0.0, energy_injection_rate=0.0, dt=dt).advance(u0, 1.0)
        drifts.append(abs(kinetic_energy(u1).item() / kinetic_energy(u0).item() - 1))
    assert 1e-12 < drifts[1] < 1e-5              # above round-off, so the ratio means something
    assert drifts[0] / drifts[1] > 16            # RK4: at least fourth order


def test_single_mode_decays_at_the_viscous_rate() -> None:
    # u = a sin(k.x + phase) with a . k = 0 is a steady Euler flow ((u.grad) u = 0).
    x, y, z = coordinates(16)
    theta = 1 * x + 2 * y - 2 * z + 0.4
    u0 = torch.stack([2 * torch.sin(theta), -torch.sin(theta), torch.zeros_like(theta)]).unsqueeze(0)
    nu, duration = 0.03, 1.5
    u1 = Isotropic3D(16, nu=nu, energy_injection_rate=0.0, dt=0.05).advance(u0, duration)
    assert torch.allclose(u1, math.exp(-nu * 9 * duration) * u0, rtol=0, atol=1e-12)
    # curl u = (k x a) cos(theta): 1/2 <|curl u|^2> = |k|^2 |a|^2 / 4 = 9 * 5 / 4
    assert enstrophy_3d(u0).item() == pytest.approx(45 / 4, rel=1e-12)


def test_flow_independent_of_z_evolves_like_the_two_dimensional_vorticity_solver() -> None:
    # A z-independent flow with u_z = 0 obeys 2-D Navier-Stokes; the vorticity solver and the
    # velocity solver are the same Galerkin system in different variables, and RK4 commutes
    # with that linear change of variables, so they agree to round-off.
    w0 = random_initial_vorticity(1, 16, torch.Generator().manual_seed(4), peak_wavenumber=2.0, dtype=F64)
    two_d = Kolmogorov2D(16, nu=0.01, drag=0.0, forcing_amplitude=0.0, dt=0.05)
    w0 = two_d.to_physical(two_d.to_spectral(w0))
    planar = two_d.velocity(w0)                                              # (1, 2, n, n)
    u0 = torch.cat([planar, torch.zeros_like(planar[:, :1])], dim=1).unsqueeze(-1).expand(-1, -1, -1, -1, 16)
    u1 = Isotropic3D(16, nu=0.01, energy_injection_rate=0.0, dt=0.05).advance(u0.contiguous(), 1.0)
    expected = two_d.velocity(two_d.advance(w0, 1.0))
    assert torch.allclose(u1[:, :2, :, :, 5], expected, rtol=0, atol=1e-12)
    assert u1[:, 2].abs().max() < 1e-14


def test_constant_power_forcing_adds_energy_at_the_injection_rate() -> None:
    u0 = random_solenoidal_velocity(2, 16, torch.Generator().manual_seed(2), energy=0.3, dtype=F64)
    rate, duration = 0.2, 1.0
    u1 = Isotropic3D(16, nu=0.0, energy_injection_rate=rate, dt=0.025).advance(u0, duration)
    assert torch.allclose(kinetic_energy(u1), kinetic_energy(u0) + rate * duration, rtol=1e-8)


def test_three_dimensional_filter_keeps_low_modes_and_is_idempotent() -> None:
    x, y, z = coordinates(16)
    low = torch.cos(x + 2 * y - 3 * z) + 0.5 * torch.sin(3 * y + 0.2) + 0.1
    fine = low + torch.cos(5 * x) + torch.sin(4 * z + y)            # |k_x| = 5 and |k_z| = 4 = m/2: removed
    cx, cy, cz = coordinates(8)
    expected = torch.cos(cx + 2 * cy - 3 * cz) + 0.5 * torch.sin(3 * cy + 0.2) + 0.1
    filtered = spectral_filter(fine, 8, ndim=3)
    assert torch.allclose(filtered, expected, rtol=0, atol=1e-12)
    noise = torch.randn(2, 3, 16, 16, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    once = spectral_filter(noise, 8, ndim=3)
    assert once.shape == (2, 3, 8, 8, 8)
    assert torch.allclose(spectral_filter(once, 8, ndim=3), once, rtol=0, atol=1e-12)


def test_energy_spectrum_3d_shells_and_total() -> None:
    x, y, z = coordinates(16)
    a = (torch.sin(3 * x + 4 * z) + 0 * y).expand(16, 16, 16)        # |k| = 5, direction (3, 0, 4)
    b = torch.cos(x + y + z)                                          # |k| = sqrt(3) = 1.73: shell 2
    u = torch.stack([4 * a + 2 * b, -2 * b, -3 * a])                  # divergence-free: a . k = b . k = 0
    k, spectrum = energy_spectrum_3d(u)
    assert k.shape == (8,) and spectrum.shape == (8,)
    assert spectrum[4].item() == pytest.approx(0.5 * 25 * 0.5, rel=1e-12)      # 1/2 <(4a)^2 + (3a)^2>
    assert spectrum[1].item() == pytest.approx(0.5 * 8 * 0.5, rel=1e-12)       # 1/2 <(2b)^2 + (2b)^2>
    assert spectrum[[0, 2, 3, 5, 6, 7]].abs().max() < 1e-14
    assert spectrum.sum().item() == pytest.approx(kinetic_energy(u).item(), rel=1e-12)


def test_generate_isotropic3d_shapes_and_reproducibility() -> None:
    settings = dict(n_trajectories=2, n_snapshots=3, snapshot_dt=0.1, spinup_time=0.2, n_dns=16, n_les=8,
                    progress=False)
    data = generate_isotropic3d(seed=0, **settings)
    assert data.velocity.shape == (2, 3, 3, 8, 8, 8) and data.velocity.dtype == torch.float32
    assert torch.isfinite(data.velocity).all()
    assert torch.allclose(data.times, torch.tensor([0.0, 0.1, 0.2], dtype=F64))
    assert torch.equal(generate_isotropic3d(seed=0, **settings).velocity, data.velocity)
    assert not torch.allclose(generate_isotropic3d(seed=1, **settings).velocity, data.velocity)
    assert data.attrs["mean_energy"] > 0 and data.attrs["n_les"] == 8


def test_isotropic_solver_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        Isotropic3D(16, forcing_wavenumber=6.0)
    with pytest.raises(ValueError, match="u must have shape"):
        Isotropic3D(16).advance(torch.zeros(1, 2, 16, 16, 16), 1.0)
    with pytest.raises(ValueError, match="n=16"):
        Isotropic3D(16).advance(torch.zeros(1, 3, 8, 8, 8), 1.0)
