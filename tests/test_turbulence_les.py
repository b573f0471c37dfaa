"""Oracles for the eddy-viscosity LES of the Kolmogorov-flow solver: closed-form eddy viscosities,
the constant-viscosity and energy-budget identities of curl div(2 nu_t S), the no-closure limit."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci_domains.turbulence.generate import les_rollout, les_seconds_per_time_unit
from flowsci_domains.turbulence.les import EddyViscosityClosure, Leith, Smagorinsky
from flowsci_domains.turbulence.spectral import Kolmogorov2D, random_initial_vorticity
from flowsci_domains.turbulence.statistics import enstrophy, kinetic_energy

F64 = torch.float64
# psi = sum_j a_j cos(p_j x + q_j y + phase_j), |k| <= 5: kept by both dealias rules at n = 32
PSI_MODES = [(1.0, 1, 2, 0.3), (0.5, 3, -1, 1.1), (0.3, 2, 3, -0.7), (0.2, 0, 1, 0.0)]


class ConstantViscosity(EddyViscosityClosure):
    """nu_t = c everywhere: the SGS term must then be c lap(w)."""

    def eddy_viscosity(self, strain_rate: torch.Tensor, vorticity_gradient: torch.Tensor | None,
                       delta: float) -> torch.Tensor:
        return torch.full_like(strain_rate, self.c)


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 1) and y (1, n): x along the first axis, y along the last."""
    points = 2 * math.pi * torch.arange(n, dtype=F64) / n
    return points.reshape(n, 1), points.reshape(1, n)


def analytic_fields(n: int) -> dict[str, torch.Tensor]:
    """Closed-form psi, w, |S| = sqrt((2 u_x)^2 + (u_y + v_x)^2) and |grad w| of PSI_MODES on n x n."""
    x, y = grid(n)
    f = {key: torch.zeros(n, n, dtype=F64) for key in ("psi", "w", "u_x", "u_y", "v_x", "w_x", "w_y")}
    for a, p, q, phase in PSI_MODES:
        theta = p * x + q * y + phase
        k2 = p * p + q * q
        f["psi"] += a * torch.cos(theta)
        f["w"] += a * k2 * torch.cos(theta)
        f["u_x"] += -a * q * p * torch.cos(theta)       # u = psi_y = -a q sin(theta)
        f["u_y"] += -a * q * q * torch.cos(theta)
        f["v_x"] += a * p * p * torch.cos(theta)        # v = -psi_x = a p sin(theta)
        f["w_x"] += -a * k2 * p * torch.sin(theta)
        f["w_y"] += -a * k2 * q * torch.sin(theta)
    f["strain_rate"] = ((2 * f["u_x"]) ** 2 + (f["u_y"] + f["v_x"]) ** 2).sqrt()
    f["vorticity_gradient"] = (f["w_x"] ** 2 + f["w_y"] ** 2).sqrt()
    return f


def random_kept_field(solver: Kolmogorov2D, seed: int, rms: float = 2.0) -> torch.Tensor:
    w = random_initial_vorticity(2, solver.n, torch.Generator().manual_seed(seed), peak_wavenumber=3.0,
                                 rms=rms, dtype=F64)
    return solver.to_physical(solver.to_spectral(w))


# ------------------------------------------------------------------------- eddy viscosities
@pytest.mark.parametrize("p, q", [(0, 3), (2, 1), (3, -4)])
@pytest.mark.parametrize("dealias", ["two_thirds", "three_halves"])
def test_eddy_viscosity_of_a_plane_wave_matches_the_closed_form(p: int, q: int, dealias: str) -> None:
    # psi = a cos(theta), theta = p x + q y: |S| = |k|^2 |a cos(theta)| and |grad w| = |k|^3 |a sin(theta)|.
    # (p, q) = (0, 3) is the shear flow u = (A sin(3y), 0) with A = -3a: |S| = |A k cos(k y)|,
    # w = -A k cos(k y), |grad w| = |A| k^2 |sin(k y)|.
    n, a = 32, -0.5
    x, y = grid(n)
    theta = p * x + q * y
    k2 = p * p + q * q
    w = (a * k2 * torch.cos(theta)).unsqueeze(0)
    delta = 2 * math.pi / n
    smagorinsky = Kolmogorov2D(n, dealias=dealias, closure=Smagorinsky(c=0.2)).eddy_viscosity(w)[0]
    expected = (0.2 * delta) ** 2 * k2 * (a * torch.cos(theta)).abs()
    assert torch.allclose(smagorinsky, expected, rtol=0, atol=1e-12 * expected.max())
    leith = Kolmogorov2D(n, dealias=dealias, closure=Leith(c=0.3)).eddy_viscosity(w)[0]
    expected = (0.3 * delta) ** 3 * k2 ** 1.5 * (a * torch.sin(theta)).abs()
    assert torch.allclose(leith, expected, rtol=0, atol=1e-12 * expected.max())


@pytest.mark.parametrize("dealias", ["two_thirds", "three_halves"])
def test_sgs_term_of_a_constant_eddy_viscosity_is_its_laplacian(dealias: str) -> None:
    solver = Kolmogorov2D(32, dealias=dealias, closure=ConstantViscosity(c=0.03))
    w = random_kept_field(solver, seed=1)
    k = torch.fft.fftfreq(32, 1 / 32, dtype=F64)
    k2 = k.reshape(-1, 1) ** 2 + k.reshape(1, -1) ** 2
    laplacian = torch.fft.ifft2(-k2 * torch.fft.fft2(w)).real
    scale = laplacian.abs().max()
    assert torch.allclose(solver.sgs_tendency(w), 0.03 * laplacian, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("closure", [Smagorinsky(c=0.17), Leith(c=0.5)], ids=["smagorinsky", "leith"])
@pytest.mark.parametrize("dealias", ["two_thirds", "three_halves"])
def test_sgs_energy_rate_is_minus_the_mean_of_nu_t_times_strain_squared(closure: EddyViscosityClosure,
                                                                        dealias: str) -> None:
    # dE/dt = <psi dw/dt> = <u . div(2 nu_t S)> = -<2 nu_t S_ij S_ij> = -<nu_t |S|^2>, exactly
    # on the grid where the stress is formed (discrete Parseval), from closed-form derivatives.
    solver = Kolmogorov2D(32, dealias=dealias, closure=closure)
    fields = analytic_fields(32)
    rate = (fields["psi"] * solver.sgs_tendency(fields["w"].unsqueeze(0))[0]).mean()
    fine = analytic_fields(solver.product_grid)
    nu_t = closure.eddy_viscosity(fine["strain_rate"], fine["vorticity_gradient"], 2 * math.pi / 32)
    expected = -(nu_t * fine["strain_rate"] ** 2).mean()
    assert expected < 0
    assert rate.item() == pytest.approx(expected.item(), rel=1e-10)


# ------------------------------------------------------------------------------ time stepping
@pytest.mark.parametrize("closure", [Smagorinsky(c=0.0), Leith(c=0.0)], ids=["smagorinsky", "leith"])
def test_zero_coefficient_les_equals_the_plain_solver(closure: EddyViscosityClosure) -> None:
    physics = dict(nu=0.01, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=2, dt=0.05,
                   dealias="three_halves")
    plain, les = Kolmogorov2D(32, **physics), Kolmogorov2D(32, closure=closure, **physics)
    w = random_kept_field(plain, seed=2)
    w_hat = plain.to_spectral(w)
    assert torch.allclose(les.step(w_hat), plain.step(w_hat), rtol=0, atol=1e-13)
    assert torch.allclose(les.advance(w, 1.0), plain.advance(w, 1.0), rtol=0, atol=1e-12)


def test_constant_eddy_viscosity_is_integrated_by_the_rk4_stages() -> None:
    # A one-shell field (|k| = 5) is a steady Euler flow: nu and the drag decay it exactly (the
    # integrating factor), nu_t = const by classical RK4's amplification factor R(z) per step,
    # R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24 with z = -nu_t |k|^2 dt.
    x, y = grid(32)
    w0 = (torch.cos(3 * x + 4 * y) + 0.7 * torch.sin(5 * x + 0.2)).unsqueeze(0)
    nu, nu_t, drag, dt, n_steps = 0.01, 0.02, 0.1, 0.1, 20
    solver = Kolmogorov2D(32, nu=nu, drag=drag, forcing_amplitude=0.0, dt=dt,
                          closure=ConstantViscosity(c=nu_t))
    z = -nu_t * 25 * dt
    rk4 = 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24
    expected = rk4 ** n_steps * math.exp(-(nu * 25 + drag) * dt * n_steps) * w0
    assert torch.allclose(solver.advance(w0, dt * n_steps), expected, rtol=0, atol=1e-14)
    assert not torch.allclose(expected, math.exp(-((nu + nu_t) * 25 + drag) * dt * n_steps) * w0,
                              rtol=0, atol=1e-12)


@pytest.mark.parametrize("closure", [Smagorinsky(c=0.2), Leith(c=0.5)], ids=["smagorinsky", "leith"])
def test_les_time_stepping_stays_fourth_order(closure: EddyViscosityClosure) -> None:
    # the eddy-viscosity term is evaluated in every RK4 stage: the error still falls like dt^4
    physics = dict(nu=0.01, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=2, dealias="three_halves",
                   closure=closure)
    w0 = random_kept_field(Kolmogorov2D(32, dealias="three_halves"), seed=3)
    reference = Kolmogorov2D(32, dt=0.005, **physics).advance(w0, 1.0)
    errors = [(Kolmogorov2D(32, dt=dt, **physics).advance(w0, 1.0) - reference).norm() / reference.norm()
              for dt in (0.05, 0.025)]
    assert 12 < (errors[0] / errors[1]).item() < 20          # 2^4 = 16


def test_smagorinsky_dissipates_decaying_turbulence_faster() -> None:
    physics = dict(nu=1e-3, drag=0.0, forcing_amplitude=0.0, dealias="three_halves")
    w0 = random_initial_vorticity(2, 32, torch.Generator().manual_seed(4), peak_wavenumber=6.0, rms=4.0,
                                  dtype=F64)
    plain = Kolmogorov2D(32, **physics).advance(w0, 2.0)
    les = Kolmogorov2D(32, closure=Smagorinsky(c=0.2), **physics).advance(w0, 2.0)
    assert (enstrophy(les) < 0.8 * enstrophy(plain)).all()
    assert (kinetic_energy(les) < kinetic_energy(plain)).all()


# ------------------------------------------------------------------------- rollout and timing
def test_les_rollout_is_a_chain_of_les_solves() -> None:
    w0 = random_initial_vorticity(2, 16, torch.Generator().manual_seed(5), dtype=F64)
    closure = Leith(c=0.4)
    rollout = les_rollout(w0, 2, 0.2, closure=closure, forcing_wavenumber=2)
    assert rollout.shape == (2, 3, 16, 16)
    assert torch.equal(rollout[:, 0], w0)
    solver = Kolmogorov2D(16, forcing_wavenumber=2, dealias="three_halves", closure=closure)
    assert torch.allclose(rollout[:, 2], solver.advance(solver.advance(w0, 0.2), 0.2), rtol=0, atol=1e-12)
    assert les_seconds_per_time_unit(n=16, duration=0.2, closure=closure, forcing_wavenumber=2) > 0


def test_les_rejects_bad_arguments() -> None:
    for c in (-0.1, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="c must be a finite number"):
            Smagorinsky(c=c)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closure must be an EddyViscosityClosure"):
        Kolmogorov2D(32, closure="smagorinsky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no closure"):
        Kolmogorov2D(32).eddy_viscosity(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="no closure"):
        Kolmogorov2D(32).sgs_tendency(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="closure must be an EddyViscosityClosure"):
        les_rollout(torch.zeros(1, 16, 16), 1, 0.1, closure=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vorticity gradient"):
        Leith(c=0.5).eddy_viscosity(torch.ones(4, 4), None, 0.1)
