"""Reference solutions on the Eulerian grid, for data-free evaluation.

- convection(–diffusion): exact in Fourier space, û_k(t) = û_k(0) exp(−i k β t − ν k² t);
- viscous Burgers: pseudo-spectral method of lines (FFT derivatives, 2/3 de-aliasing,
  scipy ``solve_ivp`` with DOP853). The constant C of u₀ = sin x + C is removed by Galilean
  invariance: v = u − C solves the same equation in the frame moving at speed C, so the
  solver integrates v and shifts it back exactly in Fourier space. This keeps the time step
  independent of C and avoids the phase error a fast-moving shock would accumulate.
- :func:`burgers_cole_hopf_sine`: the exact Cole–Hopf solution for u₀ = sin x (the test oracle).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from flowsci_domains.lpinn.problems import PERIOD, Problem


def grid(n_x: int, n_t: int, t_end: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation grid: x (n_x,) = 2π j / n_x (periodic, no endpoint), t (n_t,) from 0 to t_end."""
    return np.arange(n_x) * PERIOD / n_x, np.linspace(0.0, t_end, n_t)


def convection_diffusion_exact(u0: np.ndarray, beta: float, nu: float, t: np.ndarray) -> np.ndarray:
    """Exact periodic solution of u_t + β u_x = ν u_xx from u₀ sampled on the uniform grid.

    u0: (n_x,) on x_j = 2π j / n_x; t: (n_t,). Returns u (n_x, n_t). Exact for a u₀ whose
    Fourier modes are resolved by the grid (sin x is).
    """
    k = np.fft.fftfreq(len(u0), d=1.0 / len(u0))
    factor = np.exp(-(1j * beta * k[:, None] + nu * k[:, None] ** 2) * t[None, :])
    return np.fft.ifft(np.fft.fft(u0)[:, None] * factor, axis=0).real


def burgers_spectral(u0: np.ndarray, nu: float, t: np.ndarray, offset: float = 0.0,
                     rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """Viscous Burgers u_t + u u_x = ν u_xx, periodic on [0, 2π), by the pseudo-spectral method.

    u0: (n,) samples of u₀ − ``offset`` on x_j = 2π j / n (the zero-mean part); the solution
    is returned for u₀ = that + ``offset`` (Galilean shift). t: (n_t,). Returns u (n, n_t).
    """
    n = len(u0)
    k = np.fft.rfftfreq(n, d=1.0 / n)
    keep = k < n / 3  # 2/3 rule against aliasing of the quadratic term

    def rhs(_: float, state: np.ndarray) -> np.ndarray:
        v_hat = state[: len(k)] + 1j * state[len(k):]
        v = np.fft.irfft(v_hat, n)
        dv_hat = (-0.5j * k * np.fft.rfft(v * v) - nu * k**2 * v_hat) * keep
        return np.concatenate([dv_hat.real, dv_hat.imag])

    v0_hat = np.fft.rfft(u0) * keep
    sol = solve_ivp(rhs, (float(t[0]), float(t[-1])), np.concatenate([v0_hat.real, v0_hat.imag]),
                    t_eval=t, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"Burgers reference solver failed: {sol.message}")
    v_hat = sol.y[: len(k)] + 1j * sol.y[len(k):]
    shift = np.exp(-1j * k[:, None] * offset * t[None, :])  # v(x - C t, t)
    return np.fft.irfft(v_hat * shift, n, axis=0) + offset


def burgers_cole_hopf_sine(x: np.ndarray, t: np.ndarray, nu: float, dy: float = 1e-3) -> np.ndarray:
    """Exact solution of u_t + u u_x = ν u_xx with u₀ = sin x, by the Cole–Hopf integral.

    u(x, t) = ∫ (x − y)/t e^{−G/(2ν)} dy / ∫ e^{−G/(2ν)} dy with G = (1 − cos y) + (x − y)²/(2t),
    integrated over the real line by the trapezoid rule (step ``dy``) with the exponent shifted
    by its maximum (e^{−G/(2ν)} spans hundreds of orders of magnitude for small ν; the Fourier
    series of the same solution cancels catastrophically). x: (n_x,), t: (n_t,). Returns (n_x, n_t).
    """
    u = np.empty((len(x), len(t)))
    for j, tj in enumerate(t):
        if tj == 0:
            u[:, j] = np.sin(x)
            continue
        half_width = 12.0 * np.sqrt(4.0 * nu * tj) + 2.0 * tj  # the Gaussian and the drift
        offsets = np.arange(-half_width, half_width + dy, dy)
        y = x[:, None] - offsets[None, :]                          # (n_x, n_y), x − y = offsets
        exponent = -((1.0 - np.cos(y)) + offsets**2 / (2.0 * tj)) / (2.0 * nu)
        weight = np.exp(exponent - exponent.max(axis=1, keepdims=True))
        u[:, j] = (weight @ offsets) / tj / weight.sum(axis=1)
    return u


def reference_solution(problem: Problem, n_x: int, n_t: int, *, n_modes: int = 1024) -> np.ndarray:
    """u on :func:`grid` (n_x, n_t). Burgers is solved with ``n_modes`` Fourier modes (a
    multiple of n_x) and sampled on the evaluation grid."""
    x, t = grid(n_x, n_t, problem.t_end)
    if problem.equation != "burgers":
        return convection_diffusion_exact(problem.initial(x), problem.beta, problem.viscosity, t)
    if n_modes % n_x:
        raise ValueError(f"n_modes={n_modes} must be a multiple of the grid size {n_x}")
    fine = np.arange(n_modes) * PERIOD / n_modes
    u = burgers_spectral(problem.initial(fine) - problem.offset, problem.nu, t, offset=problem.offset)
    return u[:: n_modes // n_x]
