"""Oracles for the Kolmogorov-flow solver, the spectral filter, the flow statistics and the
trajectory generator of the turbulence domain (closed forms and exact identities)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.turbulence.generate import (
    coarse_solver_rollout,
    dns_seconds_per_time_unit,
    generate_kolmogorov,
)
from flowsci_domains.turbulence.spectral import (
    Kolmogorov2D,
    random_initial_vorticity,
    velocity_from_vorticity,
)
from flowsci_domains.turbulence.statistics import energy_spectrum, enstrophy, kinetic_energy, spectral_filter

F64 = torch.float64

# Streamfunction psi = sum_j a_j cos(p_j x + q_j y + phase_j): a smooth band-limited test field.
PSI_MODES = [(1.0, 1, 2, 0.3), (0.5, 3, -1, 1.1), (0.3, 2, 3, -0.7), (0.2, 0, 1, 0.0)]


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 1) and y (1, n): x along the first axis, y along the last."""
    points = 2 * math.pi * torch.arange(n, dtype=F64) / n
    return points.reshape(n, 1), points.reshape(1, n)


def analytic_fields(n: int, modes: list[tuple[float, int, int, float]] = PSI_MODES
                    ) -> dict[str, torch.Tensor]:
    """Closed-form psi, u = psi_y, v = -psi_x, w = -lap psi and grad w on the n x n grid."""
    x, y = grid(n)
    fields = {key: torch.zeros(n, n, dtype=F64) for key in ("psi", "u", "v", "w", "w_x", "w_y")}
    for a, p, q, phase in modes:
        theta = p * x + q * y + phase
        k2 = p * p + q * q
        fields["psi"] += a * torch.cos(theta)
        fields["u"] += -a * q * torch.sin(theta)
        fields["v"] += a * p * torch.sin(theta)
        fields["w"] += a * k2 * torch.cos(theta)
        fields["w_x"] += -a * k2 * p * torch.sin(theta)
        fields["w_y"] += -a * k2 * q * torch.sin(theta)
    return fields


def relative_drift(solver: Kolmogorov2D, w0: torch.Tensor, duration: float) -> tuple[float, float]:
    w1 = solver.advance(w0, duration)
    drift_e = ((kinetic_energy(w1) - kinetic_energy(w0)).abs() / kinetic_energy(w0)).max().item()
    drift_z = ((enstrophy(w1) - enstrophy(w0)).abs() / enstrophy(w0)).max().item()
    return drift_e, drift_z


# ------------------------------------------------------------------------------------- solver
@pytest.mark.parametrize("dealias", ["two_thirds", "three_halves"])
def test_inviscid_unforced_flow_conserves_energy_and_enstrophy(dealias: str) -> None:
    # The Galerkin-truncated Euler equations conserve both quadratic invariants exactly; what is
    # left is RK4's error, which must shrink at least like dt^4 (it is nearer dt^5 here, the
    # amplitude error |R(i y)|^2 = 1 - y^6 / 72 of RK4 dominating).
    w0 = random_initial_vorticity(2, 32, torch.Generator().manual_seed(1), peak_wavenumber=3.0, rms=1.0,
                                  dtype=F64)
    w0 = Kolmogorov2D(32, dealias=dealias).to_physical(Kolmogorov2D(32, dealias=dealias).to_spectral(w0))
    drifts = [relative_drift(Kolmogorov2D(32, nu=0.0, drag=0.0, forcing_amplitude=0.0, dt=dt,
                                          dealias=dealias),
                             w0, 1.0) for dt in (0.08, 0.04)]
    (energy_coarse, enstrophy_coarse), (energy_fine, enstrophy_fine) = drifts
    assert max(energy_fine, enstrophy_fine) < 1e-6
    assert min(energy_fine, enstrophy_fine) > 1e-12          # above round-off, so the ratio means something
    assert energy_coarse / energy_fine > 16
    assert enstrophy_coarse / enstrophy_fine > 16


def test_time_stepping_is_fourth_order_with_forcing_viscosity_and_drag() -> None:
    w0 = random_initial_vorticity(2, 32, torch.Generator().manual_seed(1), peak_wavenumber=3.0, rms=2.0,
                                  dtype=F64)
    physics = dict(nu=0.01, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=2)
    reference = Kolmogorov2D(32, dt=0.005, **physics).advance(w0, 1.0)
    errors = [(Kolmogorov2D(32, dt=dt, **physics).advance(w0, 1.0) - reference).norm() / reference.norm()
              for dt in (0.05, 0.025)]
    assert 12 < (errors[0] / errors[1]).item() < 20          # 2^4 = 16


@pytest.mark.parametrize("dealias", ["two_thirds", "three_halves", "none"])
def test_modes_of_one_shell_decay_at_the_closed_form_rate(dealias: str) -> None:
    # Any combination of modes with the same |k| is a steady Euler flow (u is normal to grad w);
    # with viscosity and drag it decays as exp(-(nu |k|^2 + alpha) t).
    x, y = grid(32)
    w0 = torch.cos(3 * x + 4 * y) + 0.7 * torch.sin(5 * x + 0.2) - 0.4 * torch.cos(4 * x - 3 * y)
    nu, drag, duration = 0.01, 0.1, 2.0
    solver = Kolmogorov2D(32, nu=nu, drag=drag, forcing_amplitude=0.0, dt=0.05, dealias=dealias)
    w1 = solver.advance(w0.unsqueeze(0), duration)[0]
    expected = math.exp(-(nu * 25 + drag) * duration) * w0
    assert torch.allclose(w1, expected, rtol=0, atol=1e-12)


def test_forced_mode_follows_the_linear_ode_and_laminar_state_is_steady() -> None:
    x, y = grid(32)
    nu, drag, amplitude, k_f = 0.02, 0.1, 2.0, 3
    rate = nu * k_f ** 2 + drag
    solver = Kolmogorov2D(32, nu=nu, drag=drag, forcing_amplitude=amplitude, forcing_wavenumber=k_f, dt=0.05)
    profile = torch.cos(k_f * y).expand(32, 32)          # depends on y = the last axis only
    w, elapsed = torch.zeros(1, 32, 32, dtype=F64), 0.0
    for t in (0.5, 3.0, 10.0):
        w, elapsed = solver.advance(w, t - elapsed), t
        expected = amplitude * (1 - math.exp(-rate * t)) / rate * profile
        assert torch.allclose(w[0], expected, rtol=0, atol=1e-12)
    laminar = (amplitude / rate * profile).unsqueeze(0)
    assert torch.allclose(solver.advance(laminar, 20.0), laminar, rtol=0, atol=1e-12)


def test_advection_and_velocity_match_closed_form_derivatives() -> None:
    fields = analytic_fields(32)
    solver = Kolmogorov2D(32)
    w = fields["w"].unsqueeze(0)
    expected = fields["u"] * fields["w_x"] + fields["v"] * fields["w_y"]
    assert torch.allclose(solver.advection(w)[0], expected, rtol=0, atol=1e-11)
    velocity = solver.velocity(w)[0]
    assert torch.allclose(velocity[0], fields["u"], rtol=0, atol=1e-12)
    assert torch.allclose(velocity[1], fields["v"], rtol=0, atol=1e-12)


def test_dns_state_stays_on_the_two_thirds_modes() -> None:
    w0 = random_initial_vorticity(1, 32, torch.Generator().manual_seed(2), peak_wavenumber=8.0, dtype=F64)
    w1 = Kolmogorov2D(32).advance(w0, 0.3)
    w_hat = torch.fft.fft2(w1, norm="forward").abs()
    k = torch.fft.fftfreq(32, 1 / 32).abs()
    outside = (k.reshape(-1, 1) > 10) | (k.reshape(1, -1) > 10)
    assert w_hat[..., outside].max() < 1e-14
    assert w_hat[..., ~outside].max() > 1e-2


def test_float32_input_gives_float32_output_close_to_float64() -> None:
    w0 = random_initial_vorticity(1, 32, torch.Generator().manual_seed(3), dtype=F64)
    solver = Kolmogorov2D(32)
    w64 = solver.advance(w0, 0.5)
    w32 = solver.advance(w0.float(), 0.5)
    assert w32.dtype == torch.float32
    assert ((w32.double() - w64).norm() / w64.norm()).item() < 1e-5


def test_numpy_integer_parameters_read_back_from_hdf5_are_accepted() -> None:
    solver = Kolmogorov2D(np.int64(32), forcing_wavenumber=np.int64(4), nu=np.float64(1e-3),
                          dt=np.float64(0.05))
    assert solver.n == 32 and solver.forcing_wavenumber == 4 and isinstance(solver.forcing_wavenumber, int)


def test_solver_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dealias"):
        Kolmogorov2D(32, dealias=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        Kolmogorov2D(32, forcing_wavenumber=11)
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        Kolmogorov2D(32, forcing_wavenumber=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dt"):
        Kolmogorov2D(32, dt=0.0)
    with pytest.raises(ValueError, match="n=32"):
        Kolmogorov2D(32).advance(torch.zeros(1, 16, 16), 1.0)
    with pytest.raises(ValueError, match="duration"):
        Kolmogorov2D(32).advance(torch.zeros(1, 32, 32), -1.0)


def test_random_initial_vorticity_is_seeded_zero_mean_with_the_requested_rms() -> None:
    first = random_initial_vorticity(3, 32, torch.Generator().manual_seed(5), rms=2.5, dtype=F64)
    again = random_initial_vorticity(3, 32, torch.Generator().manual_seed(5), rms=2.5, dtype=F64)
    other = random_initial_vorticity(3, 32, torch.Generator().manual_seed(6), rms=2.5, dtype=F64)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert torch.allclose(first.mean(dim=(-2, -1)), torch.zeros(3, dtype=F64), atol=1e-12)
    assert torch.allclose(first.square().mean(dim=(-2, -1)).sqrt(), torch.full((3,), 2.5, dtype=F64))


# ---------------------------------------------------------------------------- spectral filter
def test_spectral_filter_keeps_point_values_of_low_modes_and_removes_the_rest() -> None:
    def low(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cos(3 * x + 5 * y) + 0.5 * torch.sin(2 * x - 7 * y + 0.4) + 0.25

    x, y = grid(64)
    fine = low(x, y) + torch.cos(9 * x) + 0.3 * torch.sin(2 * x + 8 * y) + 0.2 * torch.cos(8 * x)
    coarse_x, coarse_y = grid(16)
    assert torch.allclose(spectral_filter(fine, 16), low(coarse_x, coarse_y), rtol=0, atol=1e-12)


def test_spectral_filter_is_idempotent_and_composes() -> None:
    w = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(7), dtype=F64)
    once = spectral_filter(w, 32)
    assert torch.allclose(spectral_filter(once, 32), once, rtol=0, atol=1e-12)
    assert torch.allclose(spectral_filter(once, 16), spectral_filter(w, 16), rtol=0, atol=1e-12)


def test_spectral_filter_to_the_same_grid_is_the_identity_without_nyquist_content() -> None:
    x, y = grid(32)
    w = torch.cos(15 * x - 7 * y) + torch.sin(3 * x + 15 * y + 1.0) + 0.1 * torch.cos(x)
    assert torch.allclose(spectral_filter(w, 32), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m", [15, 34, 0])
def test_spectral_filter_rejects_odd_or_too_large_sizes(m: int) -> None:
    with pytest.raises(ValueError, match="m must be an even integer"):
        spectral_filter(torch.zeros(32, 32), m)


# --------------------------------------------------------------------------------- statistics
def test_energy_spectrum_sums_to_the_physical_kinetic_energy() -> None:
    fields = analytic_fields(32)
    physical = 0.5 * (fields["u"].square() + fields["v"].square()).mean()
    k, spectrum = energy_spectrum(fields["w"].unsqueeze(0))
    assert k.shape == (16,) and spectrum.shape == (1, 16)
    assert torch.allclose(spectrum.sum(), physical, rtol=1e-12)
    assert torch.allclose(kinetic_energy(fields["w"]), physical, rtol=1e-12)
    # modes |k|^2 = 5, 10, 13, 1 fall in shells 2, 3, 4, 1 (shell k holds k - 1/2 <= |k| < k + 1/2)
    expected = torch.zeros(16, dtype=F64)
    for a, p, q, _ in PSI_MODES:
        shell = {1: 1, 5: 2, 10: 3, 13: 4}[p * p + q * q]
        expected[shell - 1] += a * a * (p * p + q * q) / 4   # 1/2 <|u|^2> of a cos mode of psi
    assert torch.allclose(spectrum[0], expected, rtol=1e-12, atol=1e-15)


def test_single_shell_five_field_puts_all_energy_in_shell_five() -> None:
    x, y = grid(32)
    w = torch.cos(3 * x + 4 * y) + 2 * torch.sin(5 * y)
    _, spectrum = energy_spectrum(w)
    expected_energy = (1 + 4) / 25 / 4          # 1/2 <|u|^2> with |u_k| = |w_k| / |k|
    assert spectrum[4].item() == pytest.approx(expected_energy, rel=1e-12)
    assert spectrum.sum().item() == pytest.approx(expected_energy, rel=1e-12)


def test_enstrophy_of_known_modes_and_batched_shapes() -> None:
    fields = analytic_fields(32)
    expected = sum(a * a * (p * p + q * q) ** 2 for a, p, q, _ in PSI_MODES) / 4
    batch = torch.stack([fields["w"], 2 * fields["w"]]).unsqueeze(0)      # (1, 2, n, n)
    assert torch.allclose(enstrophy(batch), torch.tensor([[1.0, 4.0]], dtype=F64) * expected, rtol=1e-12)
    assert kinetic_energy(batch).shape == (1, 2)
    assert velocity_from_vorticity(batch).shape == (1, 2, 2, 32, 32)


# --------------------------------------------------------------------------------- generation
def tiny_data(seed: int, **overrides: object):
    settings = dict(n_trajectories=2, n_snapshots=3, snapshot_dt=0.1, spinup_time=0.3, n_dns=32, n_les=16,
                    seed=seed, progress=False)
    settings.update(overrides)
    return generate_kolmogorov(**settings)


def test_generate_kolmogorov_shapes_reproducibility_and_attributes() -> None:
    data = tiny_data(0)
    assert data.vorticity.shape == (2, 3, 16, 16) and data.vorticity.dtype == torch.float32
    assert torch.isfinite(data.vorticity).all()
    assert torch.allclose(data.times, torch.tensor([0.0, 0.1, 0.2], dtype=F64))
    assert torch.equal(tiny_data(0).vorticity, data.vorticity)
    assert not torch.allclose(tiny_data(1).vorticity, data.vorticity)
    for key in ("nu", "drag", "n_dns", "n_les", "spinup_time", "mean_energy", "mean_enstrophy",
                "large_eddy_turnover_time", "dns_seconds_per_time_unit_batch",
                "dns_seconds_per_time_unit_per_trajectory"):
        assert key in data.attrs
    assert data.attrs["u_rms"] == pytest.approx(math.sqrt(2 * data.attrs["mean_energy"]))


def test_generated_snapshots_are_filtered_solver_states_after_spin_up() -> None:
    data = tiny_data(4, spinup_time=0.0, n_snapshots=2, dtype=F64)
    initial = random_initial_vorticity(2, 32, torch.Generator().manual_seed(4), dtype=F64)
    assert torch.allclose(data.vorticity[:, 0].double(), spectral_filter(initial, 16), atol=1e-6)
    later = Kolmogorov2D(32).advance(initial, 0.1)
    assert torch.allclose(data.vorticity[:, 1].double(), spectral_filter(later, 16), atol=1e-6)


def test_coarse_rollout_keeps_the_filter_modes_and_decays_them_exactly() -> None:
    x, y = grid(32)
    w0 = (torch.cos(15 * x) + torch.sin(15 * y)).unsqueeze(0)   # |k| = 15 < 32/2: kept by the filter
    rollout = coarse_solver_rollout(w0, 3, 0.2, nu=0.001, drag=0.1, forcing_amplitude=0.0)
    assert rollout.shape == (1, 4, 32, 32)
    assert torch.equal(rollout[:, 0], w0)
    for step in range(4):
        expected = math.exp(-(0.001 * 225 + 0.1) * 0.2 * step) * w0
        assert torch.allclose(rollout[:, step], expected, rtol=0, atol=1e-12)


def test_dns_timing_helper_returns_a_positive_number() -> None:
    assert dns_seconds_per_time_unit(n=16, batch=1, duration=0.2) > 0
