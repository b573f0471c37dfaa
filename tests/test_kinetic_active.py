"""The 2-D coarse-grained active-suspension solver against closed forms: the Stokes solution of a
single-mode stress, the isotropic steady state, exact linear decay and linear growth rates,
conservation laws, translation equivariance, second-order time convergence, and autograd
gradients against central finite differences."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from flowsci_domains.kinetic.active_suspension import (
    ActiveSuspension2D,
    ActiveSuspensionParams,
    energy_spectrum,
    order_parameter,
    stokes_velocity,
    time_averaged_spectrum,
)
from flowsci_domains.kinetic.closures import make_closure

DT = torch.float64
L = 10.0


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=DT) * L / n
    return torch.meshgrid(x, x, indexing="ij")


def isotropic(c: torch.Tensor) -> torch.Tensor:
    """c I/2: (..., n, n, 2, 2)."""
    return 0.5 * c[..., None, None] * torch.eye(2, dtype=DT)


def near_isotropic(n: int, gen: torch.Generator, amplitude: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth non-uniform c and D = c I/2 + Q (Q traceless) built from a few random low modes."""
    x, y = grid(n)
    k = 2 * math.pi / L
    fields = []
    for _ in range(3):
        a = torch.randn(4, dtype=DT, generator=gen)
        fields.append(a[0] * torch.cos(k * x + a[1]) + a[2] * torch.sin(k * (x + 2 * y) + a[3]))
    c = 1 + 0.5 * amplitude * fields[0]
    Q = amplitude * torch.stack([torch.stack([fields[1], fields[2]], -1),
                                 torch.stack([fields[2], -fields[1]], -1)], -2)
    return c, isotropic(c) + Q


def deviator_12(D: torch.Tensor) -> torch.Tensor:
    return D[..., 0, 1]


# ----------------------------------------------------------------------------- Stokes and diagnostics

def test_stokes_single_mode_matches_closed_form():
    # Σ = a cos(k·x) M  =>  ∇·Σ = −a sin(k·x) M k  =>  u = −a sin(k·x) (I − k̂k̂) M k / |k|².
    n = 32
    x, y = grid(n)
    k = 2 * math.pi / L * torch.tensor([2.0, -3.0], dtype=DT)
    M = torch.tensor([[0.7, -1.3], [-1.3, 0.4]], dtype=DT)
    phase = k[0] * x + k[1] * y
    u = stokes_velocity(1.5 * torch.cos(phase)[..., None, None] * M, L)
    projector = torch.eye(2, dtype=DT) - torch.outer(k, k) / k.dot(k)
    expected = -1.5 * torch.sin(phase)[..., None] * (projector @ M @ k) / k.dot(k)
    torch.testing.assert_close(u, expected, rtol=0, atol=1e-13)
    index = torch.fft.fftfreq(n, 1.0 / n, dtype=DT) * 2 * math.pi / L
    u_hat = torch.fft.fft2(u, dim=(0, 1))
    divergence = torch.fft.ifft2(1j * (index[:, None] * u_hat[..., 0] + index[None, :] * u_hat[..., 1]))
    assert float(divergence.abs().max()) < 1e-12
    assert float(u.abs().max()) > 0.1  # a non-trivial flow


def test_energy_spectrum_parseval_and_single_mode():
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 24, 24, 2, dtype=DT, generator=gen)
    k, spectrum = energy_spectrum(u, L)
    dk = 2 * math.pi / L
    torch.testing.assert_close(spectrum.sum(-1) * dk, 0.5 * u.square().sum(-1).mean((-2, -1)), rtol=1e-13,
                               atol=0)
    x, y = grid(24)
    wave = torch.cos(2 * math.pi / L * (3 * x + 4 * y))
    k, spectrum = energy_spectrum(torch.stack([2 * wave, torch.zeros_like(wave)], -1), L)
    assert torch.isclose(k[5], torch.tensor(5 * dk, dtype=DT))
    expected = torch.zeros_like(spectrum)
    expected[5] = 4 * 0.25 / dk                     # <(2 cos)²>/2 = 1 = E(k_5) Δk
    torch.testing.assert_close(spectrum, expected, rtol=0, atol=1e-13)


def test_order_parameter_matches_eigenvalues():
    gen = torch.Generator().manual_seed(4)
    angle = 2 * math.pi * torch.rand(8, 8, dtype=DT, generator=gen)
    lam = torch.rand(8, 8, 2, dtype=DT, generator=gen)
    R = torch.stack([torch.stack([torch.cos(angle), -torch.sin(angle)], -1),
                     torch.stack([torch.sin(angle), torch.cos(angle)], -1)], -2)
    D = R @ torch.diag_embed(lam) @ R.transpose(-1, -2)
    c = lam.sum(-1)
    expected = ((lam[..., 0] - lam[..., 1]).abs() / c).mean()
    torch.testing.assert_close(order_parameter(c, D), expected, rtol=1e-13, atol=0)


# ----------------------------------------------------------------------------- dynamics

@pytest.mark.parametrize("name", ["quadratic", "bingham2d"])
def test_uniform_isotropic_state_is_steady(name):
    sim = ActiveSuspension2D(ActiveSuspensionParams(n=16, alpha=-3.0, zeta=5.0, dt=0.01), make_closure(name))
    c = torch.ones(16, 16, dtype=DT)
    state = sim.make_state(c, isotropic(c))
    for _ in range(20):
        state = sim.step(state)
    assert float((state.c - 1).abs().max()) < 1e-14
    assert float((state.D - isotropic(c)).abs().max()) < 1e-14
    assert float(sim.velocity(state).abs().max()) < 1e-14


def test_linear_decay_matches_sbdf2_recurrence_and_exponential():
    # α = β = ζ = 0: u ≡ 0, the deviator of D decays at λ = d_T|k|² + 4 d_R, c at d_T|k'|².
    p = ActiveSuspensionParams(n=16, alpha=0.0, beta=0.0, zeta=0.0, d_t=0.05, d_r=0.05, dt=2e-3)
    sim = ActiveSuspension2D(p, make_closure("quadratic"))
    x, y = grid(16)
    k = 2 * math.pi / L * torch.tensor([1.0, 2.0], dtype=DT)
    k_c = 2 * math.pi / L * torch.tensor([3.0, 0.0], dtype=DT)
    mode, mode_c = torch.cos(k[0] * x + k[1] * y), torch.cos(k_c[0] * x + k_c[1] * y)
    c = 1 + 0.1 * mode_c
    Q = 0.1 * torch.tensor([[0.3, 0.2], [0.2, -0.3]], dtype=DT) * mode[..., None, None]
    state = sim.make_state(c, isotropic(c) + Q)
    n_steps = 250
    for _ in range(n_steps):
        state = sim.step(state)
    assert float(sim.velocity(state).abs().max()) == 0.0

    def amplitude(rate: float) -> tuple[float, float]:
        """SBDF2 started by IMEX Euler on y' = −rate·y, y0 = 1, in closed form (roots of
        (3/2 + rate·dt) g² − 2 g + 1/2), and the exact exp(−rate·t)."""
        g = np.roots([1.5 + rate * p.dt, -2.0, 0.5])
        y1 = 1 / (1 + rate * p.dt)
        b = (y1 - g[0]) / (g[1] - g[0])
        return (float(np.real((1 - b) * g[0] ** n_steps + b * g[1] ** n_steps)),
                math.exp(-rate * n_steps * p.dt))

    discrete_q, exact_q = amplitude(p.d_t * float(k.dot(k)) + 4 * p.d_r)
    discrete_c, exact_c = amplitude(p.d_t * float(k_c.dot(k_c)))
    Q_end = state.D - isotropic(state.c)
    torch.testing.assert_close(Q_end, discrete_q * Q, rtol=0, atol=1e-14)
    torch.testing.assert_close(state.c - 1, discrete_c * 0.1 * mode_c, rtol=0, atol=1e-14)
    assert abs(discrete_q / exact_q - 1) < 1e-6 and abs(discrete_c / exact_c - 1) < 1e-6
    assert exact_q < 0.9 and exact_c < 0.95  # the decay is visible


def test_mass_trace_and_band_are_kept_under_the_full_dynamics():
    gen = torch.Generator().manual_seed(0)
    sim = ActiveSuspension2D(ActiveSuspensionParams(n=24, alpha=-4.0, zeta=5.0, dt=5e-3),
                             make_closure("bingham2d"))
    c0, D0 = near_isotropic(24, gen, 0.2)
    state = sim.make_state(c0, D0)
    mass = float(state.c.mean())
    for _ in range(40):
        state = sim.step(state)
    assert abs(float(state.c.mean()) - mass) < 1e-12
    assert float((state.D.diagonal(dim1=-2, dim2=-1).sum(-1) - state.c).abs().max()) < 1e-12
    assert float((state.c - c0).abs().max()) > 1e-4  # c was transported
    index = torch.fft.fftfreq(24, 1.0 / 24).abs()
    outside = (index[:, None] >= 8) | (index[None, :] >= 8)             # 2/3 rule: keep |m| < 24/3
    D_hat = torch.fft.fft2(state.D, dim=(0, 1)) / 24**2
    assert float(D_hat[outside].abs().max()) < 1e-15 < float(D_hat[~outside].abs().max())


def test_translation_equivariance():
    gen = torch.Generator().manual_seed(1)
    sim = ActiveSuspension2D(ActiveSuspensionParams(n=16, dt=5e-3), make_closure("bingham2d"))
    state = sim.initial_state(gen, amplitude=0.1, max_mode=3)
    shift = (5, 11)
    rolled = torch.roll(state.c, shift, (0, 1)), torch.roll(state.D, shift, (0, 1))
    batch = sim.make_state(torch.stack([state.c, rolled[0]]), torch.stack([state.D, rolled[1]]))
    final, series = sim.rollout(batch, 20, 10)
    torch.testing.assert_close(final.c[1], torch.roll(final.c[0], shift, (0, 1)), rtol=0, atol=1e-13)
    torch.testing.assert_close(final.D[1], torch.roll(final.D[0], shift, (0, 1)), rtol=0, atol=1e-13)
    assert float((final.D[0] - state.D).abs().max()) > 1e-3  # the state moved
    assert series["mean_speed"].shape == (3, 2) and series["spectrum"].shape[:2] == (3, 2)
    torch.testing.assert_close(series["mean_speed"][:, 0], series["mean_speed"][:, 1], rtol=1e-12, atol=0)
    torch.testing.assert_close(series["time"], torch.tensor([0.0, 0.05, 0.1], dtype=DT))
    k, spectrum = time_averaged_spectrum(series, start_time=0.04)
    torch.testing.assert_close(spectrum, series["spectrum"][1:].mean(0))


@pytest.mark.parametrize("alpha", [-2.0, 2.0])
@pytest.mark.parametrize("zeta", [0.0, 0.5])
@pytest.mark.parametrize("name", ["quadratic", "bingham2d"])
def test_linear_growth_rate_of_a_shear_mode(name, zeta, alpha):
    # Isotropic base state (c = 1, D = I/2), perturbation Q12 = ε cos(kx). Linearising (derivation
    # in the report): Σ12 = α_eff Q12 + βγ E12, E12 = −Σ12/2, dQ12/dt = (1 − 2γ) E12 + (4ζκ − λ) Q12,
    # with S₀:E = γE, (D·D − S:D)' = κQ, α_eff = α − 2ζβκ, λ = d_T k² + 4 d_R;
    # Bingham: γ = κ = 1/4, quadratic: γ = 0, κ = 1/2. Pushers (α < 0) grow at ζ = 0, pullers decay.
    gamma, kappa = (0.25, 0.25) if name == "bingham2d" else (0.0, 0.5)
    p = ActiveSuspensionParams(n=16, alpha=alpha, zeta=zeta, dt=0.01)
    k = 2 * math.pi / L
    alpha_eff = alpha - 2 * zeta * p.beta * kappa
    rate = (-(1 - 2 * gamma) * alpha_eff / (2 * (1 + p.beta * gamma / 2)) + 4 * zeta * kappa
            - (p.d_t * k * k + 4 * p.d_r))
    sim = ActiveSuspension2D(p, make_closure(name))
    x, _ = grid(16)
    c = torch.ones(16, 16, dtype=DT)
    Q = 1e-6 * torch.cos(k * x)[..., None, None] * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT)
    _, series = sim.rollout(sim.make_state(c, isotropic(c) + Q), 60, 20)
    speed = series["mean_speed"]
    measured = math.log(float(speed[3] / speed[1])) / (float(series["time"][3] - series["time"][1]))
    # SBDF2 resolves the rate to O(a³ dt²), a = rate + λ the explicit part (measured constants 1…3);
    # ε = 1e-6 keeps the dynamics linear
    explicit = rate + p.d_t * k * k + 4 * p.d_r
    assert abs(measured - rate) < 4 * abs(explicit) ** 3 * p.dt**2 + 1e-6
    if zeta == 0.0:
        assert (rate > 0.1 and float(speed[-1]) > float(speed[0])) if alpha < 0 else \
            (rate < -0.1 and float(speed[-1]) < float(speed[0]))


def test_time_step_convergence_is_second_order():
    gen = torch.Generator().manual_seed(2)
    c0, D0 = near_isotropic(16, gen, 0.15)
    finals = []
    for dt in (0.02, 0.01, 0.005):
        sim = ActiveSuspension2D(ActiveSuspensionParams(n=16, alpha=-3.0, zeta=1.0, dt=dt),
                                 make_closure("bingham2d"))
        state = sim.make_state(c0, D0)
        for _ in range(round(0.4 / dt)):
            state = sim.step(state)
        finals.append(torch.cat([state.c.flatten(), state.D.flatten()]))
    coarse, fine = (finals[0] - finals[1]).norm(), (finals[1] - finals[2]).norm()
    assert float(coarse) > 1e-6
    assert 3.5 < float(coarse / fine) < 4.5


def test_enough_sweeps_make_the_step_independent_of_the_velocity_guess():
    gen = torch.Generator().manual_seed(5)
    c0, D0 = near_isotropic(16, gen, 0.2)
    results = {}
    for sweeps in (1, 40):
        sim = ActiveSuspension2D(ActiveSuspensionParams(n=16, dt=0.01, sweeps=sweeps),
                                 make_closure("bingham2d"))
        state = sim.step(sim.make_state(c0, D0))
        zero_guess = dataclasses.replace(state, u_hat=torch.zeros_like(state.u_hat))
        results[sweeps] = (sim.step(state).D - sim.step(zero_guess).D).abs().max()
    assert float(results[40]) < 1e-13
    assert float(results[1]) > 1e-6


def test_gradient_through_ten_steps_matches_central_difference():
    gen = torch.Generator().manual_seed(6)
    c0, D0 = near_isotropic(16, gen, 0.15)
    weights = torch.randn(16, 16, 2, 2, dtype=DT, generator=gen)
    eye = torch.eye(2, dtype=DT)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        def closure(D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # θ · quadratic + (1 − θ) · isotropic fourth moment
            c = D.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]

            def iso(X: torch.Tensor) -> torch.Tensor:
                return c / 8 * (2 * X + X.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * eye)

            def quad(X: torch.Tensor) -> torch.Tensor:
                return D * (D * X).sum((-2, -1), keepdim=True) / c

            return theta * quad(E) + (1 - theta) * iso(E), theta * quad(D) + (1 - theta) * iso(D)

        sim = ActiveSuspension2D(ActiveSuspensionParams(n=16, alpha=-3.0, zeta=5.0, dt=0.01), closure)
        state = sim.make_state(c0, D0)
        for _ in range(10):
            state = sim.step(state)
        return (weights * state.D).sum() + (weights[..., 0, 0] * state.c).sum()

    theta = torch.tensor(0.6, dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(theta), theta)
    h = 1e-5
    with torch.no_grad():
        fd = (loss(theta + h) - loss(theta - h)) / (2 * h)
    assert float(grad.abs()) > 1e-3
    assert abs(float(grad - fd)) < 1e-6 * max(1.0, abs(float(fd)))


# ----------------------------------------------------------------------------- errors

def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="n must be an even integer"):
        ActiveSuspensionParams(n=15)
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        ActiveSuspensionParams(dt=0.0)
    with pytest.raises(ValueError, match="zeta must be a finite number >= 0"):
        ActiveSuspensionParams(zeta=-1.0)
    with pytest.raises(ValueError, match="sweeps must be an integer >= 1"):
        ActiveSuspensionParams(sweeps=0)
    sim = ActiveSuspension2D(ActiveSuspensionParams(n=8), make_closure("quadratic"))
    c = torch.ones(8, 8, dtype=DT)
    with pytest.raises(ValueError, match="c must be a float64 tensor"):
        sim.make_state(c.float(), isotropic(c))
    with pytest.raises(ValueError, match="D must be a float64 tensor of shape"):
        sim.make_state(c, isotropic(c)[..., 0])
    with pytest.raises(ValueError, match="D must be symmetric"):
        sim.make_state(c, isotropic(c) + torch.tensor([[0.0, 0.1], [0.0, 0.0]], dtype=DT))
    with pytest.raises(ValueError, match="closure rejected the fields at step 0: "
                                         "D must be positive semi-definite"):
        sim.make_state(c, isotropic(c) + torch.tensor([[0.6, 0.0], [0.0, -0.6]], dtype=DT))
    with pytest.raises(ValueError, match="amplitude must lie in"):
        sim.initial_state(torch.Generator(), amplitude=0.5)
    with pytest.raises(ValueError, match="state is on a"):
        ActiveSuspension2D(ActiveSuspensionParams(n=16),
                           make_closure("quadratic")).step(sim.make_state(c, isotropic(c)))

    def nan_closure(D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(D, math.nan), torch.full_like(D, math.nan)

    state = sim.step(sim.step(sim.make_state(c, isotropic(c))))
    with pytest.raises(FloatingPointError, match="non-finite at step 3"):
        ActiveSuspension2D(ActiveSuspensionParams(n=8), nan_closure).step(state)
    _, series = sim.rollout(state, 2, 1)
    with pytest.raises(ValueError, match="no record at time >= start_time"):
        time_averaged_spectrum(series, start_time=1.0)
