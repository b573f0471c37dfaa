"""The DINo Navier-Stokes data set (Yin et al., ICLR 2023; used by Janny et al., ICLR 2024).

2-D incompressible Navier-Stokes in vorticity form on the unit torus [0, 1)^2:

    dw/dt + u . grad(w) = nu lap(w) + f,   u = (d psi/dy, -d psi/dx),   -lap(psi) = w,
    f(x, y) = A (sin(2 pi (x + y)) + cos(2 pi (x + y))),   nu = 1e-3,   A = 0.1,

from zero-mean Gaussian random initial vorticity (alpha = 2.5, tau = 7, see
:func:`gaussian_random_field`). Fields follow the domain's convention: w[..., i, j] = w(x_i, y_j)
with x_i = i / n, y_j = j / n.

The solver is :class:`~flowsci_domains.turbulence.spectral.Kolmogorov2D` on [0, 2 pi)^2 with the
lengths scaled by 2 pi and time unchanged: velocities scale by 2 pi, the vorticity is unchanged,
nu' = (2 pi)^2 nu, no drag, and the forcing is the same function of the scaled coordinates,
A (sin(x' + y') + cos(x' + y')). Dealiasing is the 2/3 rule (kept modes |k_x|, |k_y| <= (n - 1) // 3).

Default time step ``DEFAULT_DT`` = 0.02 (time units of the unit box). Measured on the default
data (64^2, 64 trajectories): max |u| = 0.12 at t = 0, rising to 0.23 at t = 20 as the forced
mode (k = (1, 1), growth time 1 / (8 pi^2 nu) = 12.7) builds up; vorticity rms 0.25 -> 0.96.
On the scaled box |u'| = 2 pi |u| <= 1.5, so at n = 64 the Courant number |u'| dt / dx' is 0.3
and |u'| k_max dt = 0.6, well inside the RK4 limit (~2.8). Halving dt changes the frames by
~1e-10 relative (float32 rounding is 6e-8).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from tqdm import tqdm

from flowsci_domains.turbulence.spectral import Kolmogorov2D

DEFAULT_DT = 2e-2


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def gaussian_random_field(n_batch: int, n: int, *, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-mean Gaussian random fields (n_batch, n, n) float64 on the n x n unit-box grid.

    The FNO/DINo convention: w = Re(ifft2(c)) (ifft2 with its 1/n^2) with
    c_k = n^2 sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) xi_k, sigma = tau^(alpha - 1),
    k the integer wavenumbers, c_0 = 0, and xi_k complex with independent standard normal real and
    imaginary parts (drawn on the CPU with ``generator``). The Fourier coefficient of w at k
    (not a Nyquist mode) then has E|w_k|^2 = 2 sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha).
    """
    n_batch = _positive_int("n_batch", n_batch)
    n = _positive_int("n", n, 2)
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    tau = _positive("tau", tau)
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    k2 = k.reshape(n, 1) ** 2 + k.reshape(1, n) ** 2
    sigma = tau ** (alpha - 1)
    amplitude = n ** 2 * math.sqrt(2.0) * sigma * (4 * math.pi ** 2 * k2 + tau ** 2) ** (-alpha / 2)
    amplitude[0, 0] = 0.0
    xi = torch.randn(n_batch, n, n, 2, generator=generator, dtype=torch.float64)
    return torch.fft.ifft2(amplitude * torch.view_as_complex(xi)).real


def dino_forcing(n: int, amplitude: float = 0.1) -> torch.Tensor:
    """The DINo forcing A (sin(2 pi (x + y)) + cos(2 pi (x + y))) (n, n) float64 on the grid x_i = i / n."""
    n = _positive_int("n", n, 2)
    if not (isinstance(amplitude, (int, float)) and math.isfinite(amplitude)):
        raise ValueError(f"amplitude must be a finite number, got {amplitude!r}")
    x = torch.arange(n, dtype=torch.float64) / n
    phase = 2 * math.pi * (x.reshape(n, 1) + x.reshape(1, n))
    return amplitude * (torch.sin(phase) + torch.cos(phase))


def unit_box_solver(n: int, *, nu: float = 1e-3, forcing_amplitude: float = 0.1,
                    dt: float = DEFAULT_DT) -> Kolmogorov2D:
    """The :class:`Kolmogorov2D` that integrates the unit-box problem on [0, 2 pi)^2 (module docstring)."""
    nu = _non_negative("nu", nu)
    dt = _positive("dt", dt)
    return Kolmogorov2D(n, nu=(2 * math.pi) ** 2 * nu, drag=0.0, dt=dt, dealias="two_thirds",
                        forcing=dino_forcing(n, forcing_amplitude))


def _check_times(times: torch.Tensor | Sequence[float]) -> torch.Tensor:
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.dim() != 1 or times.numel() < 1 or not torch.isfinite(times).all():
        raise ValueError(f"times must be a non-empty 1-D sequence of finite times, "
                         f"got shape {tuple(times.shape)}")
    if times.numel() > 1 and not (times.diff() > 0).all():
        raise ValueError(f"times must be strictly increasing, got {times.tolist()}")
    return times


def _frames(solver: Kolmogorov2D, w0: torch.Tensor, times: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the vorticity (B, n, n) at each of ``times``, w0 (B, n, n) being the state at times[0]:
    frame 0 is w0 projected onto the kept modes, each interval is covered in ceil(interval / dt)
    equal steps."""
    w_hat = solver.to_spectral(w0)
    yield solver.to_physical(w_hat)
    for interval in times.diff().tolist():
        n_steps = math.ceil(interval / solver.dt - 1e-9)
        for _ in range(n_steps):
            w_hat = solver.step(w_hat, interval / n_steps)
        w = solver.to_physical(w_hat)
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"the Navier-Stokes solver became unstable (non-finite vorticity) with "
                                     f"dt={solver.dt:.4g}; pass a smaller dt")
        yield w


def integrate(w0: torch.Tensor, times: torch.Tensor | Sequence[float], *, nu: float = 1e-3,
              forcing_amplitude: float = 0.1, dt: float = DEFAULT_DT) -> torch.Tensor:
    """Vorticity (B, F, n, n) float64 at the F ``times`` from w0 (B, n, n), the state at times[0].

    Unit-box problem of the module docstring, solved in float64; frame 0 is w0 projected onto the
    solver's kept modes. :func:`generate_navier_stokes` runs the same integrator.
    """
    if w0.dim() != 3 or w0.shape[-1] != w0.shape[-2] or not w0.is_floating_point():
        raise ValueError(f"w0 must be a real tensor of shape (B, n, n), got {w0.dtype} {tuple(w0.shape)}")
    times = _check_times(times)
    solver = unit_box_solver(w0.shape[-1], nu=nu, forcing_amplitude=forcing_amplitude, dt=dt)
    return torch.stack(list(_frames(solver, w0.to(torch.float64), times)), dim=1)


def generate_navier_stokes(n_trajectories: int, *, n: int = 64, n_frames: int = 21, frame_dt: float = 1.0,
                           nu: float = 1e-3, forcing_amplitude: float = 0.1, alpha: float = 2.5,
                           tau: float = 7.0, dt: float = DEFAULT_DT, seed: int = 0, progress: bool = False,
                           batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """DINo trajectories: vorticity (n_trajectories, n_frames, n, n) float32 and times (n_frames,) float64.

    Initial fields from :func:`gaussian_random_field` (all drawn first from a generator seeded by
    ``seed``, so the data do not depend on ``batch``), integrated in float64 in batches of
    ``batch`` trajectories; frame f is at time f * frame_dt, frame 0 the initial field projected
    onto the solver's kept modes. ``progress`` shows a tqdm bar over trajectories x frames.
    """
    n_trajectories = _positive_int("n_trajectories", n_trajectories)
    n = _positive_int("n", n, 4)
    n_frames = _positive_int("n_frames", n_frames)
    frame_dt = _positive("frame_dt", frame_dt)
    batch = _positive_int("batch", batch)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    solver = unit_box_solver(n, nu=nu, forcing_amplitude=forcing_amplitude, dt=dt)
    times = torch.arange(n_frames, dtype=torch.float64) * frame_dt
    generator = torch.Generator().manual_seed(seed)
    initial = gaussian_random_field(n_trajectories, n, alpha=alpha, tau=tau, generator=generator)
    vorticity = torch.empty(n_trajectories, n_frames, n, n, dtype=torch.float32)
    bar = tqdm(total=n_trajectories * n_frames, desc="navier-stokes", unit="frame", disable=not progress)
    with bar:
        for start in range(0, n_trajectories, batch):
            stop = min(start + batch, n_trajectories)
            for f, w in enumerate(_frames(solver, initial[start:stop], times)):
                vorticity[start:stop, f] = w.to(torch.float32)
                bar.update(stop - start)
    return vorticity, times
