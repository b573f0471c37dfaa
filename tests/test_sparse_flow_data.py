"""Oracles for the sparse_flow data: the Kolmogorov2D forcing field, the DINo Navier-Stokes
generator (closed-form solutions on the unit torus, an independent numpy right-hand side, the
random-field spectrum) and the observation masks (brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.sparse_flow.navier_stokes import (
    dino_forcing,
    gaussian_random_field,
    generate_navier_stokes,
    integrate,
)
from flowsci_domains.sparse_flow.observations import (
    error_splits,
    grid_positions,
    observed_frames,
    observed_points,
    split_mse,
)
from flowsci_domains.turbulence.spectral import Kolmogorov2D, random_initial_vorticity

F64 = torch.float64
TWO_PI = 2 * math.pi


def unit_grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 1) and y (1, n) of the unit-box grid x_i = i / n."""
    points = torch.arange(n, dtype=F64) / n
    return points.reshape(n, 1), points.reshape(1, n)


# ----------------------------------------------------------------- Kolmogorov2D(forcing=...)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forcing_field_reproduces_the_builtin_cosine(dtype: torch.dtype) -> None:
    n, amplitude, wavenumber = 16, 2.5, 3
    y = TWO_PI * torch.arange(n, dtype=F64) / n
    field = amplitude * torch.cos(wavenumber * y).expand(n, n)
    w0 = random_initial_vorticity(2, n, torch.Generator().manual_seed(0), dtype=dtype)
    options = {"nu": 0.02, "drag": 0.1, "dt": 0.01}
    builtin = Kolmogorov2D(n, forcing_amplitude=amplitude, forcing_wavenumber=wavenumber, **options)
    given = Kolmogorov2D(n, forcing=field, **options)
    unforced = Kolmogorov2D(n, forcing=torch.zeros(n, n), **options)
    expected = builtin.advance(w0, 0.3)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(given.advance(w0, 0.3), expected, atol=tolerance, rtol=0)
    assert (unforced.advance(w0, 0.3) - expected).abs().max() > 0.1


@pytest.mark.parametrize("bad", [torch.zeros(16, 15), torch.zeros(16), torch.zeros(1, 16, 16),
                                 torch.zeros(16, 16, dtype=torch.complex128), np.zeros((16, 16))])
def test_forcing_field_of_wrong_shape_or_type_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="forcing"):
        Kolmogorov2D(16, forcing=bad)


# ------------------------------------------------------------------------ the NS integrator
def test_taylor_green_shell_decays_exactly() -> None:
    # Any field in one eigenspace of the Laplacian (|k|^2 = 5: k = (+-1, +-2), (+-2, +-1)) has a
    # stream function proportional to itself, so u . grad w = 0: w(t) = w0 exp(-nu 4 pi^2 5 t).
    n, nu = 16, 0.01
    x, y = unit_grid(n)
    w0 = (torch.cos(TWO_PI * x) * torch.cos(2 * TWO_PI * y)
          + 0.7 * torch.sin(2 * TWO_PI * x + 0.3) * torch.cos(TWO_PI * y)).unsqueeze(0)
    times = [0.0, 0.5, 1.0, 2.5]
    w = integrate(w0, times, nu=nu, forcing_amplitude=0.0, dt=0.05)
    decay = torch.exp(-nu * TWO_PI ** 2 * 5 * torch.tensor(times, dtype=F64)).reshape(1, -1, 1, 1)
    exact = w0.unsqueeze(1) * decay
    assert decay[0, -1, 0, 0] < 0.4
    assert ((w - exact).abs().max() / exact[:, -1].abs().max()).item() < 1e-8


def test_forced_shell_relaxes_to_the_closed_form() -> None:
    # f = A (sin + cos)(2 pi (x + y)) lies in the |k|^2 = 2 eigenspace; so does w0 = c sin(2 pi (x - y)).
    # With lam = nu 8 pi^2: w(t) = w0 e^{-lam t} + f (1 - e^{-lam t}) / lam.
    n, nu, amplitude = 16, 0.005, 0.1
    x, y = unit_grid(n)
    w0 = (0.8 * torch.sin(TWO_PI * (x - y))).unsqueeze(0)
    times = torch.tensor([0.0, 1.0, 3.0, 6.0], dtype=F64)
    w = integrate(w0, times, nu=nu, forcing_amplitude=amplitude, dt=0.1)
    lam = nu * 2 * TWO_PI ** 2
    decay = torch.exp(-lam * times).reshape(1, -1, 1, 1)
    forcing = amplitude * (torch.sin(TWO_PI * (x + y)) + torch.cos(TWO_PI * (x + y)))
    exact = w0.unsqueeze(1) * decay + forcing * (1 - decay) / lam
    assert ((w - exact).abs().max() / exact.abs().max()).item() < 1e-8
    torch.testing.assert_close(dino_forcing(n, amplitude), forcing, atol=1e-15, rtol=0)


def numpy_tendency(w: np.ndarray, nu: float, amplitude: float) -> np.ndarray:
    """-u . grad w + nu lap w + f on the unit torus, by numpy FFT derivatives (2 pi k wavenumbers)."""
    n = w.shape[-1]
    k = 2 * np.pi * np.fft.fftfreq(n, d=1.0 / n)
    kx, ky = k[:, None], k[None, :]
    k2 = kx ** 2 + ky ** 2
    w_hat = np.fft.fft2(w)
    psi_hat = w_hat / np.where(k2 > 0, k2, 1.0)
    psi_hat[0, 0] = 0.0

    def real(field_hat: np.ndarray) -> np.ndarray:
        return np.fft.ifft2(field_hat).real

    u, v = real(1j * ky * psi_hat), real(-1j * kx * psi_hat)
    advection = u * real(1j * kx * w_hat) + v * real(1j * ky * w_hat)
    x = np.arange(n) / n
    phase = 2 * np.pi * (x[:, None] + x[None, :])
    return -advection + nu * real(-k2 * w_hat) + amplitude * (np.sin(phase) + np.cos(phase))


def test_integrator_tendency_matches_an_independent_unit_box_rhs() -> None:
    # A non-steady band-limited field (modes |k| <= 2 on 16^2: products are alias-free and kept):
    # the one-sided second-order difference (-3 w0 + 4 w(h) - w(2h)) / (2h) is dw/dt(0) + O(h^2).
    n, nu, amplitude, h = 16, 0.003, 0.1, 1e-3
    x, y = unit_grid(n)
    w0 = (torch.cos(TWO_PI * x + 0.4) + 0.6 * torch.sin(TWO_PI * (x + 2 * y))
          + 0.5 * torch.cos(2 * TWO_PI * y - 1.0)).unsqueeze(0)
    w = integrate(w0, [0.0, h, 2 * h], nu=nu, forcing_amplitude=amplitude, dt=h)
    derivative = (-3 * w[0, 0] + 4 * w[0, 1] - w[0, 2]) / (2 * h)
    expected = numpy_tendency(w0[0].numpy(), nu, amplitude)
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(derivative.numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_integrate_rejects_bad_times_and_fields() -> None:
    w0 = torch.zeros(1, 8, 8, dtype=F64)
    with pytest.raises(ValueError, match="times"):
        integrate(w0, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="w0"):
        integrate(w0[0], [0.0, 1.0])
    with pytest.raises(ValueError, match="dt"):
        integrate(w0, [0.0, 1.0], dt=0.0)


# --------------------------------------------------------------------- Gaussian random field
def test_gaussian_random_field_is_zero_mean_with_the_matern_spectrum() -> None:
    n, alpha, tau, batch = 32, 2.5, 7.0, 1024
    w = gaussian_random_field(batch, n, alpha=alpha, tau=tau, generator=torch.Generator().manual_seed(3))
    assert w.shape == (batch, n, n) and w.dtype == F64
    assert w.mean(dim=(-2, -1)).abs().max() < 1e-12
    coefficients = torch.fft.fft2(w) / n ** 2
    power = coefficients.abs().square().mean(0)
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=F64)
    kx, ky = k.reshape(n, 1), k.reshape(1, n)
    k2 = kx ** 2 + ky ** 2
    model = (4 * math.pi ** 2 * k2 + tau ** 2) ** (-alpha)
    keep = (k2 > 0) & (kx.abs() < n / 2) & (ky.abs() < n / 2)
    shell = k2.sqrt().round().long()
    ratios = torch.stack([power[keep & (shell == s)].sum() / model[keep & (shell == s)].sum()
                          for s in range(1, n // 2)])
    constant = ratios.mean()
    assert (ratios / constant - 1).abs().max() < 0.05
    # the FNO/DINo scale: E|w_k|^2 = 2 sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha), sigma = tau^(alpha - 1)
    assert abs(constant / (2 * tau ** (2 * alpha - 2)) - 1) < 0.03
    # a stationary field: real and imaginary parts of the coefficients carry equal power
    share = coefficients.imag.square().mean(0)[keep].sum() / power[keep].sum()
    assert abs(share - 0.5) < 0.02


# ------------------------------------------------------------------------------ the generator
def test_generator_is_deterministic_by_seed_and_starts_from_the_projected_field() -> None:
    options = {"n": 16, "n_frames": 3, "frame_dt": 0.2, "dt": 0.05}
    w, times = generate_navier_stokes(3, seed=5, batch=2, **options)
    assert w.shape == (3, 3, 16, 16) and w.dtype == torch.float32
    assert times.dtype == F64 and times.tolist() == pytest.approx([0.0, 0.2, 0.4])
    again, _ = generate_navier_stokes(3, seed=5, batch=3, **options)
    torch.testing.assert_close(again, w, atol=1e-6, rtol=0)
    other, _ = generate_navier_stokes(3, seed=6, batch=2, **options)
    assert (other - w).abs().max() > 0.05
    initial = gaussian_random_field(3, 16, generator=torch.Generator().manual_seed(5))
    expected = integrate(initial, [0.0, 0.2, 0.4], dt=0.05)
    torch.testing.assert_close(w, expected.to(torch.float32), atol=1e-6, rtol=0)
    # frame 0 keeps only |k_x|, |k_y| <= (16 - 1) // 3 = 5 of the random field
    k = torch.fft.fftfreq(16, d=1.0 / 16).abs()
    kept = (k.reshape(16, 1) <= 5) & (k.reshape(1, 16) <= 5)
    projected = torch.fft.ifft2(torch.fft.fft2(initial) * kept).real
    torch.testing.assert_close(w[:, 0], projected.to(torch.float32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("argument", [{"n_trajectories": 0}, {"n_frames": 0}, {"frame_dt": -1.0},
                                      {"batch": 0}, {"tau": 0.0}, {"nu": -1.0}])
def test_generator_rejects_bad_arguments(argument: dict[str, float]) -> None:
    options = {"n_trajectories": 1, "n": 8, "n_frames": 2} | argument
    with pytest.raises(ValueError, match=next(iter(argument))):
        generate_navier_stokes(**options)


# ----------------------------------------------------------------------------- observations
def test_observed_points_count_uniqueness_order_and_seed() -> None:
    points = observed_points(10, 0.25, seed=1)
    assert points.dtype == torch.long and points.shape == (25,)
    assert points.unique().numel() == 25 and torch.equal(points, points.sort().values)
    assert points.min() >= 0 and points.max() < 100
    assert torch.equal(points, observed_points(10, 0.25, seed=1))
    assert not torch.equal(points, observed_points(10, 0.25, seed=2))
    assert observed_points(10, 0.001, seed=0).numel() == 3
    assert torch.equal(observed_points(4, 1.0, seed=0), torch.arange(16))


@pytest.mark.parametrize("space_sub", [0.0, -0.1, 1.01, float("nan")])
def test_observed_points_rejects_fractions_outside_the_unit_interval(space_sub: float) -> None:
    with pytest.raises(ValueError, match="space_sub"):
        observed_points(8, space_sub, seed=0)


def test_grid_positions_and_frames_follow_the_flat_convention() -> None:
    n = 5
    positions = grid_positions(n)
    assert positions.shape == (n * n, 2) and positions.dtype == torch.float32
    for i in range(n):
        for j in range(n):
            assert positions[i * n + j].tolist() == pytest.approx([i / n, j / n])
    field = torch.arange(n * n).reshape(n, n)
    assert field.reshape(-1)[2 * n + 3] == field[2, 3]
    assert observed_frames(21, 4).tolist() == [0, 4, 8, 12, 16, 20]
    assert observed_frames(5, 1).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="time_sub"):
        observed_frames(21, 0)


def test_error_splits_partition_and_split_mse_match_brute_force() -> None:
    n, n_frames = 4, 6
    observed, frames = observed_points(n, 0.3, seed=0), observed_frames(n_frames, 2)
    masks = error_splits(n, n_frames, observed, frames)
    assert sorted(masks) == ["in_t_in_s", "in_t_out_s", "out_t_in_s", "out_t_out_s"]
    assert torch.equal(sum(m.long() for m in masks.values()), torch.ones(n_frames, n * n, dtype=torch.long))
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(3, n_frames, n, n, generator=generator)
    truth = torch.randn(3, n_frames, n, n, generator=generator)
    sums, counts = {}, {}
    frame_list, point_list = frames.tolist(), observed.tolist()
    for b in range(3):
        for f in range(n_frames):
            for p in range(n * n):
                key = ("in_t" if f in frame_list else "out_t") + ("_in_s" if p in point_list else "_out_s")
                assert masks[key][f, p]
                error = (prediction[b, f, p // n, p % n].item() - truth[b, f, p // n, p % n].item()) ** 2
                sums[key] = sums.get(key, 0.0) + error
                counts[key] = counts.get(key, 0) + 1
    expected = {f"mse_{key}": sums[key] / counts[key] for key in sums}
    result = split_mse(prediction, truth, masks)
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-6)
    assert split_mse(prediction.flatten(-2), truth.flatten(-2), masks) == pytest.approx(result)
    every_frame = error_splits(n, n_frames, observed, observed_frames(n_frames, 1))
    assert set(split_mse(prediction, truth, every_frame)) == {"mse_in_t_in_s", "mse_in_t_out_s"}


def test_error_splits_rejects_out_of_range_indices() -> None:
    with pytest.raises(ValueError, match="observed"):
        error_splits(4, 3, torch.tensor([0, 16]), torch.tensor([0]))
    with pytest.raises(ValueError, match="frames"):
        error_splits(4, 3, torch.tensor([0, 1]), torch.tensor([3]))
