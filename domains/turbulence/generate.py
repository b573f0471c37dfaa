"""Filtered-DNS trajectories of Kolmogorov flow, the coarse baselines (no closure, eddy-viscosity
LES), solver timing.

The DNS runs :class:`~flowsci_domains.turbulence.spectral.Kolmogorov2D` at n_dns^2 (2/3 rule),
every trajectory in one batch; after the spin-up, snapshots every ``snapshot_dt`` are cut
to the n_les^2 grid with :func:`~flowsci_domains.turbulence.statistics.spectral_filter` (the
"fDNS"). Large-eddy turnover time: L / u_rms with the forcing scale L = 2 pi / k_f and
u_rms = sqrt(<|u|^2>) (both velocity components) over all DNS snapshots; the attributes also
give the integral scale 2 pi sum_k E(k) / k / sum_k E(k) of the time-averaged DNS spectrum.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from flowsci_domains.turbulence.les import EddyViscosityClosure
from flowsci_domains.turbulence.spectral import Kolmogorov2D, grid_size, random_initial_vorticity
from flowsci_domains.turbulence.statistics import (
    energy_spectrum,
    enstrophy,
    kinetic_energy,
    spectral_filter,
    spectral_interpolate,
)
from flowsci_domains.turbulence.timed_run import TimedRun

# Spin-up of the default flow: from the random initial field the energy, enstrophy and the
# high-wavenumber spectrum level off by t ~ 20-25 (drag time 1 / alpha = 10).
DEFAULT_SPINUP_TIME = 30.0

AttrValue = int | float | str | bool


@dataclasses.dataclass
class KolmogorovData:
    """Filtered-DNS trajectories.

    vorticity: (N, T, n_les, n_les) float32 snapshots; times: (T,) float64 physical time since
    the end of spin-up (0, snapshot_dt, ...); attrs: every generation parameter and the
    measured quantities (energies, turnover time, DNS timing).
    """

    vorticity: torch.Tensor
    times: torch.Tensor
    attrs: dict[str, AttrValue]


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_closure(closure: EddyViscosityClosure) -> None:
    if not isinstance(closure, EddyViscosityClosure):
        raise ValueError(f"closure must be an EddyViscosityClosure (e.g. Smagorinsky(c=0.1)), "
                         f"got {closure!r}; coarse_solver_rollout runs without one")


def _check_spinup_grid(spinup_n_dns: int, n_dns: int, fine_time: float, spinup_time: float) -> None:
    if isinstance(spinup_n_dns, bool) or not isinstance(spinup_n_dns, int) or spinup_n_dns % 2 \
            or not 2 <= spinup_n_dns < n_dns:
        raise ValueError(f"spinup_n_dns must be an even integer below n_dns={n_dns} (or None), "
                         f"got {spinup_n_dns!r}")
    if not 0 <= fine_time <= spinup_time:
        raise ValueError(f"spinup_fine_time must be in [0, spinup_time={spinup_time}], got {fine_time}")


def _check_les_size(n_les: int, n_dns: int) -> None:
    if isinstance(n_les, bool) or not isinstance(n_les, int) or n_les < 2 or n_les % 2 or n_les > n_dns:
        raise ValueError(f"n_les must be an even integer with 2 <= n_les <= n_dns={n_dns}, got {n_les!r}")


def generate_kolmogorov(*, n_trajectories: int = 16, n_snapshots: int = 201, snapshot_dt: float = 0.2,
                        spinup_time: float = DEFAULT_SPINUP_TIME, n_dns: int = 128, n_les: int = 32,
                        nu: float = 1e-3, drag: float = 0.1, forcing_amplitude: float = 4.0,
                        forcing_wavenumber: int = 4, dt: float | None = None,
                        spinup_n_dns: int | None = None, spinup_fine_time: float = 5.0, seed: int = 0,
                        dtype: torch.dtype = torch.float32, progress: bool = True) -> KolmogorovData:
    """Integrate n_trajectories DNS from seeded random fields, discard ``spinup_time``, keep
    n_snapshots filtered snapshots (the first at the end of spin-up).

    ``spinup_n_dns`` (< n_dns) runs the spin-up but its last ``spinup_fine_time`` on that coarser
    grid (the large scales settle as well there, at a fraction of the cost), interpolates the
    fields spectrally to n_dns and lets the small scales settle for ``spinup_fine_time``.
    """
    _check_positive_int("n_trajectories", n_trajectories)
    _check_positive_int("n_snapshots", n_snapshots)
    _check_les_size(n_les, n_dns)
    if not snapshot_dt > 0:
        raise ValueError(f"snapshot_dt must be > 0, got {snapshot_dt}")
    if not spinup_time >= 0:
        raise ValueError(f"spinup_time must be >= 0, got {spinup_time}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    physics = {"nu": nu, "drag": drag, "forcing_amplitude": forcing_amplitude,
               "forcing_wavenumber": forcing_wavenumber}
    solver = Kolmogorov2D(n_dns, dt=dt, **physics)
    generator = torch.Generator().manual_seed(seed)
    total_time = spinup_time + (n_snapshots - 1) * snapshot_dt
    run = TimedRun(solver, total_time, "Kolmogorov DNS", progress)
    if spinup_n_dns is not None and spinup_n_dns != n_dns:
        _check_spinup_grid(spinup_n_dns, n_dns, spinup_fine_time, spinup_time)
        w = random_initial_vorticity(n_trajectories, spinup_n_dns, generator, dtype=dtype)
        run.solver = Kolmogorov2D(spinup_n_dns, **physics)
        w = run.spin_up(w, spinup_time - spinup_fine_time, snapshot_dt)
        w, run.solver = spectral_interpolate(w, n_dns), solver
        run.restart_stopwatch()
        w = run.spin_up(w, spinup_fine_time, snapshot_dt)
    else:
        w = random_initial_vorticity(n_trajectories, n_dns, generator, dtype=dtype)
        w = run.spin_up(w, spinup_time, snapshot_dt)
    snapshots = torch.empty(n_trajectories, n_snapshots, n_les, n_les, dtype=torch.float32)
    energy = torch.empty(n_trajectories, n_snapshots, dtype=torch.float64)
    enstrophy_dns = torch.empty(n_trajectories, n_snapshots, dtype=torch.float64)
    spectrum_sum = torch.zeros(n_dns // 2, dtype=torch.float64)
    for index in range(n_snapshots):
        if index > 0:
            w = run.advance(w, snapshot_dt)
        snapshots[:, index] = spectral_filter(w, n_les).float()
        energy[:, index] = kinetic_energy(w).double()
        enstrophy_dns[:, index] = enstrophy(w).double()
        spectrum_sum += energy_spectrum(w)[1].double().sum(dim=0)
    run.close()

    mean_energy = energy.mean().item()
    u_rms = math.sqrt(2 * mean_energy)
    forcing_scale = 2 * math.pi / forcing_wavenumber
    shells = torch.arange(1, n_dns // 2 + 1, dtype=torch.float64)
    integral_scale = 2 * math.pi * ((spectrum_sum / shells).sum() / spectrum_sum.sum()).item()
    turnover = forcing_scale / u_rms
    seconds_per_time_batch = run.seconds_per_time_unit()
    attrs: dict[str, AttrValue] = {
        "equation": "dw/dt + u.grad w = nu lap w - drag w + A cos(k_f y) on [0, 2pi)^2",
        "n_trajectories": n_trajectories, "n_snapshots": n_snapshots, "snapshot_dt": snapshot_dt,
        "spinup_time": spinup_time, "n_dns": n_dns, "n_les": n_les, "nu": nu, "drag": drag,
        "forcing_amplitude": forcing_amplitude, "forcing_wavenumber": forcing_wavenumber,
        "spinup_n_dns": spinup_n_dns or n_dns, "spinup_fine_time": spinup_fine_time,
        "dt": solver.dt, "steps_per_snapshot": math.ceil(snapshot_dt / solver.dt - 1e-9),
        "dealias": solver.dealias, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "filter": f"sharp spectral cut-off |k_x|, |k_y| < {n_les // 2}",
        "mean_energy": mean_energy, "mean_enstrophy": enstrophy_dns.mean().item(),
        "mean_energy_filtered": kinetic_energy(snapshots.double()).mean().item(),
        "mean_enstrophy_filtered": enstrophy(snapshots.double()).mean().item(),
        "u_rms": u_rms, "forcing_scale": forcing_scale, "integral_scale": integral_scale,
        "large_eddy_turnover_time": turnover, "snapshot_dt_in_turnovers": snapshot_dt / turnover,
        "dns_seconds_per_time_unit_batch": seconds_per_time_batch,
        "dns_seconds_per_time_unit_per_trajectory": seconds_per_time_batch / n_trajectories,
        "torch_threads": torch.get_num_threads(),
    }
    times = snapshot_dt * torch.arange(n_snapshots, dtype=torch.float64)
    return KolmogorovData(vorticity=snapshots, times=times, attrs=attrs)


def coarse_solver_rollout(w0: torch.Tensor, n_steps: int, snapshot_dt: float, *, nu: float = 1e-3,
                          drag: float = 0.1, forcing_amplitude: float = 4.0, forcing_wavenumber: int = 4,
                          dt: float | None = None, dealias: str = "three_halves") -> torch.Tensor:
    """The same equations solved directly on the coarse grid of w0 (B, m, m) without closure.

    Returns w0 followed by n_steps states snapshot_dt apart: (B, n_steps + 1, m, m) in w0's
    dtype. This is the "no-model LES" baseline. The default "three_halves" keeps exactly the
    modes that :func:`spectral_filter` keeps (|k_x|, |k_y| < m/2); "two_thirds" truncates
    further to |k| <= (m - 1) // 3 (see :class:`Kolmogorov2D`).
    """
    return _coarse_rollout(w0, n_steps, snapshot_dt, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                           forcing_wavenumber=forcing_wavenumber, dt=dt, dealias=dealias)


def les_rollout(w0: torch.Tensor, n_steps: int, snapshot_dt: float, *, closure: EddyViscosityClosure,
                nu: float = 1e-3, drag: float = 0.1, forcing_amplitude: float = 4.0,
                forcing_wavenumber: int = 4, dt: float | None = None,
                dealias: str = "three_halves") -> torch.Tensor:
    """:func:`coarse_solver_rollout` with an eddy-viscosity ``closure`` (e.g. Smagorinsky(c=0.1)):
    the classical LES baseline on the grid of w0 (B, m, m), Delta = 2 pi / m.

    Returns w0 followed by n_steps states snapshot_dt apart: (B, n_steps + 1, m, m).
    """
    _check_closure(closure)
    return _coarse_rollout(w0, n_steps, snapshot_dt, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                           forcing_wavenumber=forcing_wavenumber, dt=dt, dealias=dealias, closure=closure)


def _coarse_rollout(w0: torch.Tensor, n_steps: int, snapshot_dt: float, **settings: object) -> torch.Tensor:
    """w0 (B, m, m) and n_steps states snapshot_dt apart of Kolmogorov2D(m, **settings)."""
    m = grid_size(w0, "w0")
    if w0.dim() != 3:
        raise ValueError(f"w0 must have shape (B, m, m), got {tuple(w0.shape)}")
    _check_positive_int("n_steps", n_steps, minimum=0)
    if not snapshot_dt > 0:
        raise ValueError(f"snapshot_dt must be > 0, got {snapshot_dt}")
    solver = Kolmogorov2D(m, **settings)
    states = [w0]
    for _ in range(n_steps):
        states.append(solver.advance(states[-1], snapshot_dt))
    return torch.stack(states, dim=1)


def dns_seconds_per_time_unit(n: int = 128, batch: int = 1, duration: float = 2.0, *, nu: float = 1e-3,
                              drag: float = 0.1, forcing_amplitude: float = 4.0, forcing_wavenumber: int = 4,
                              dt: float | None = None, dtype: torch.dtype = torch.float32) -> float:
    """Measured wall-clock seconds per unit physical time of the n^2 DNS on a batch of
    ``batch`` random fields (the whole batch, torch threads as currently set)."""
    solver = Kolmogorov2D(n, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                          forcing_wavenumber=forcing_wavenumber, dt=dt)
    return _seconds_per_time_unit(solver, batch, duration, dtype)


def les_seconds_per_time_unit(n: int = 32, batch: int = 1, duration: float = 2.0, *,
                              closure: EddyViscosityClosure, nu: float = 1e-3, drag: float = 0.1,
                              forcing_amplitude: float = 4.0, forcing_wavenumber: int = 4,
                              dt: float | None = None, dealias: str = "three_halves",
                              dtype: torch.dtype = torch.float32) -> float:
    """Measured wall-clock seconds per unit physical time of the n^2 LES with ``closure`` (as run
    by :func:`les_rollout`) on a batch of ``batch`` random fields."""
    _check_closure(closure)
    solver = Kolmogorov2D(n, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                          forcing_wavenumber=forcing_wavenumber, dt=dt, dealias=dealias, closure=closure)
    return _seconds_per_time_unit(solver, batch, duration, dtype)


def _seconds_per_time_unit(solver: Kolmogorov2D, batch: int, duration: float, dtype: torch.dtype) -> float:
    """Wall-clock seconds per unit physical time of ``solver`` on ``batch`` random fields."""
    _check_positive_int("batch", batch)
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    w = random_initial_vorticity(batch, solver.n, torch.Generator().manual_seed(0), dtype=dtype)
    w = solver.advance(w, solver.dt)  # warm-up: operators built, FFT plans made
    start = time.perf_counter()
    solver.advance(w, duration)
    return (time.perf_counter() - start) / duration
