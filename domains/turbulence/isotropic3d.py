"""Forced homogeneous isotropic turbulence in a periodic box [0, 2pi)^3, and its filtered DNS.

Velocity form, rotational advection, pressure removed by projection:

    du/dt = P[u x w] + nu lap(u) + f,   w = curl u,   P = I - k k^T / |k|^2 (in Fourier space).

Forcing: constant power, linear in u and confined to the large scales,
f_k = eps / (2 E_f) u_k for 0 < |k| <= k_f with E_f = 1/2 sum_{0 < |k| <= k_f} |u_k|^2, so the
forcing injects exactly ``energy_injection_rate`` eps into the kinetic energy 1/2 <|u|^2>
and does not change the direction of the forced modes.

Fields: velocity (..., 3, n, n, n) with u[..., c, i, j, l] the component c (x, y, z) at
(x_i, y_j, z_l) = 2 pi (i, j, l) / n. Spectral state: rfftn over the last three axes with
``norm="forward"`` (Fourier-series coefficients), (..., 3, n, n, n // 2 + 1), kept on the
modes |k_x|, |k_y|, |k_z| <= (n - 1) // 3 (the 2/3 rule). Time stepping: integrating-factor
RK4, viscosity exact, advection and forcing explicit.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm import tqdm

from flowsci_domains.turbulence.statistics import spectral_filter
from flowsci_domains.turbulence.timed_run import TimedRun

AttrValue = int | float | str | bool


def wavevectors(n: int, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Integer wavevectors of the rfftn layout, (3, n, n, n // 2 + 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    full = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)
    half = torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(full, full, half, indexing="ij"))


def _check_velocity(u: torch.Tensor, n: int | None = None) -> int:
    if u.dim() < 4 or u.shape[-4] != 3 or len(set(u.shape[-3:])) != 1:
        raise ValueError(f"u must have shape (..., 3, n, n, n), got {tuple(u.shape)}")
    if u.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"u must be float32 or float64, got {u.dtype}")
    if n is not None and u.shape[-1] != n:
        raise ValueError(f"u must have n={n} points per side, got shape {tuple(u.shape)}")
    return u.shape[-1]


def _mode_multiplicity(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n // 2 + 1,) how many modes each rfft column stands for (itself and its conjugate)."""
    weight = torch.full((n // 2 + 1,), 2.0, device=device, dtype=dtype)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight


def energy_spectrum_3d(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell-summed spectrum of u (..., 3, n, n, n): k = 1..n//2 (K,) and E (..., K) with
    E(k) = sum of 1/2 |u_k|^2 over k - 1/2 <= |k| < k + 1/2; sum_k E(k) = 1/2 <|u|^2> except
    for the mean flow and the modes with |k| >= n/2 + 1/2 (the corners of the cube)."""
    n = _check_velocity(u)
    k_vec = wavevectors(n, u.device, u.dtype)
    shell = torch.floor(k_vec.norm(dim=0) + 0.5).long().clamp(max=n // 2 + 1)
    u_hat = torch.fft.rfftn(u, dim=(-3, -2, -1), norm="forward")
    energy = 0.5 * u_hat.abs().square().sum(dim=-4) * _mode_multiplicity(n, u.device, u.dtype)
    flat = energy.reshape(*energy.shape[:-3], -1)
    spectrum = flat.new_zeros(*flat.shape[:-1], n // 2 + 2).index_add_(-1, shell.reshape(-1), flat)
    return torch.arange(1, n // 2 + 1, device=u.device, dtype=u.dtype), spectrum[..., 1:n // 2 + 1]


def enstrophy_3d(u: torch.Tensor) -> torch.Tensor:
    """1/2 <|grad u|^2> (...) of u (..., 3, n, n, n), spectrally: the enstrophy 1/2 <|curl u|^2>
    of a divergence-free u, whose viscous dissipation rate is 2 nu times it."""
    n = _check_velocity(u)
    k2 = wavevectors(n, u.device, u.dtype).square().sum(dim=0)
    u_hat = torch.fft.rfftn(u, dim=(-3, -2, -1), norm="forward")
    per_mode = 0.5 * k2 * u_hat.abs().square().sum(dim=-4) * _mode_multiplicity(n, u.device, u.dtype)
    return per_mode.sum(dim=(-3, -2, -1))


def random_solenoidal_velocity(n_batch: int, n: int, generator: torch.Generator | None = None, *,
                               peak_wavenumber: float = 3.0, energy: float = 0.5,
                               dtype: torch.dtype = torch.float32,
                               device: torch.device | str | None = None) -> torch.Tensor:
    """Random divergence-free zero-mean velocity fields (n_batch, 3, n, n, n).

    White noise (drawn with ``generator`` on the CPU) shaped by |k| exp(-|k|^2 / k_p^2)
    (energy spectrum ~ k^4 exp(-2 k^2 / k_p^2), peaked at k_p), projected onto divergence-free
    fields on the 2/3-rule modes, each sample scaled to kinetic energy 1/2 <|u|^2> = ``energy``.
    """
    if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
        raise ValueError(f"n_batch must be an integer >= 1, got {n_batch!r}")
    if peak_wavenumber <= 0 or energy <= 0:
        raise ValueError(f"peak_wavenumber and energy must be > 0, got {peak_wavenumber}, {energy}")
    solver = Isotropic3D(n, energy_injection_rate=0.0)
    noise = torch.randn(n_batch, 3, n, n, n, generator=generator, dtype=torch.float64)
    k2 = wavevectors(n).square().sum(dim=0)
    u_hat = solver.to_spectral(noise) * (k2.sqrt() * torch.exp(-k2 / peak_wavenumber ** 2))
    u = solver.to_physical(u_hat)
    u = u * (energy / (0.5 * u.square().sum(dim=-4).mean(dim=(-3, -2, -1)))).sqrt().reshape(-1, 1, 1, 1, 1)
    return u.to(dtype=dtype, device=device)


@dataclasses.dataclass
class _Operators:
    """Precomputed arrays of one (dt, dtype, device)."""

    k: torch.Tensor              # (3, n, n, n//2+1) wavevectors
    inv_k2: torch.Tensor         # 1/|k|^2, 0 at k = 0
    mask: torch.Tensor           # 1 on the kept (2/3-rule) modes
    forced_index: torch.Tensor   # (F,) flat indices of the forced modes 0 < |k| <= k_f
    forced_weight: torch.Tensor  # (F,) their rfft multiplicity (1 or 2)
    exp_half: torch.Tensor       # exp(-nu |k|^2 dt / 2)
    exp_full: torch.Tensor       # exp(-nu |k|^2 dt)


class Isotropic3D:
    """Forced isotropic turbulence solver (see the module docstring), batched, in torch.

    ``dt=None`` picks dt = 0.5 dx / 2 with dx = 2 pi / n (Courant number 0.5 for a peak speed
    of 2; the largest |u| measured in the default flow's steady state is about 2.5).
    Computations follow the input's dtype (float32 or float64) and device.
    """

    def __init__(self, n: int = 32, nu: float = 0.025, energy_injection_rate: float = 0.1,
                 forcing_wavenumber: float = 2.0, dt: float | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n!r}")
        if nu < 0:
            raise ValueError(f"nu must be >= 0, got {nu}")
        if energy_injection_rate < 0:
            raise ValueError(f"energy_injection_rate must be >= 0, got {energy_injection_rate}")
        self.kmax = (n - 1) // 3
        if not 1 <= forcing_wavenumber <= self.kmax:
            raise ValueError(f"forcing_wavenumber must be in [1, {self.kmax}] (the largest kept wavenumber "
                             f"at n={n}), got {forcing_wavenumber}")
        if dt is not None and not dt > 0:
            raise ValueError(f"dt must be > 0 or None, got {dt}")
        self.n = n
        self.nu = float(nu)
        self.energy_injection_rate = float(energy_injection_rate)
        self.forcing_wavenumber = float(forcing_wavenumber)
        self.dt = float(dt) if dt is not None else 0.5 * (2 * math.pi / n) / 2.0
        self._cache: dict[tuple[float, torch.dtype, torch.device], _Operators] = {}

    def to_spectral(self, u: torch.Tensor) -> torch.Tensor:
        """(..., 3, n, n, n) -> kept, divergence-free coefficients (..., 3, n, n, n // 2 + 1)."""
        _check_velocity(u, self.n)
        ops = self._operators(self.dt, u.dtype, u.device)
        return self._project(torch.fft.rfftn(u, dim=(-3, -2, -1), norm="forward") * ops.mask, ops)

    def to_physical(self, u_hat: torch.Tensor) -> torch.Tensor:
        """(..., 3, n, n, n // 2 + 1) -> (..., 3, n, n, n)."""
        return torch.fft.irfftn(u_hat, s=(self.n,) * 3, dim=(-3, -2, -1), norm="forward")

    def step(self, u_hat: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """One IF-RK4 step of length dt (default: the solver's dt) in spectral space."""
        h = self.dt if dt is None else float(dt)
        real = torch.float32 if u_hat.dtype == torch.complex64 else torch.float64
        ops = self._operators(h, real, u_hat.device)
        e1, e2 = ops.exp_half, ops.exp_full
        a = self._tendency(u_hat, ops)
        b = self._tendency(e1 * (u_hat + 0.5 * h * a), ops)
        c = self._tendency(e1 * u_hat + 0.5 * h * b, ops)
        d = self._tendency(e2 * u_hat + h * e1 * c, ops)
        return e2 * u_hat + (h / 6) * (e2 * a + 2 * e1 * (b + c) + d)

    def advance(self, u: torch.Tensor, duration: float, progress: bool = False) -> torch.Tensor:
        """Integrate u (B, 3, n, n, n) over ``duration`` in ceil(duration / dt) equal steps
        (dt shrunk for this call to hit the end time); u is first projected onto the kept,
        divergence-free modes. Returns (B, 3, n, n, n) in u's dtype."""
        if duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration}")
        u_hat = self.to_spectral(u)
        n_steps = math.ceil(duration / self.dt - 1e-9)
        h = duration / max(n_steps, 1)
        for _ in tqdm(range(n_steps), desc="Isotropic3D", unit="step", disable=not progress):
            u_hat = self.step(u_hat, h)
        u_end = self.to_physical(u_hat)
        if not torch.isfinite(u_end).all():
            raise FloatingPointError(f"Isotropic3D became unstable (non-finite velocity) with dt={h:.4g}; "
                                     f"pass a smaller dt")
        return u_end

    def _project(self, u_hat: torch.Tensor, ops: _Operators) -> torch.Tensor:
        """Remove the component along k: P u_hat = u_hat - k (k . u_hat) / |k|^2."""
        return u_hat - ops.k * ((ops.k * u_hat).sum(dim=-4, keepdim=True) * ops.inv_k2)

    def _tendency(self, u_hat: torch.Tensor, ops: _Operators) -> torch.Tensor:
        """P[(u x w)] on the kept modes plus the forcing, (..., 3, n, n, n // 2 + 1)."""
        kx, ky, kz = ops.k
        ux, uy, uz = u_hat.unbind(-4)
        w_hat = 1j * torch.stack([ky * uz - kz * uy, kz * ux - kx * uz, kx * uy - ky * ux], dim=-4)
        (u0, u1, u2), (w0, w1, w2) = (field.unbind(-4)
                                      for field in self.to_physical(torch.stack([u_hat, w_hat])))
        lamb = torch.stack([u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0], dim=-4)
        tendency = self._project(torch.fft.rfftn(lamb, dim=(-3, -2, -1), norm="forward") * ops.mask, ops)
        if self.energy_injection_rate > 0:
            forced = u_hat.flatten(-3)[..., ops.forced_index]                     # (..., 3, F)
            forced_energy = 0.5 * (forced.abs().square() * ops.forced_weight).sum(dim=(-2, -1), keepdim=True)
            gain = torch.where(forced_energy > 0, self.energy_injection_rate / (2 * forced_energy), 0.0)
            tendency = tendency.flatten(-3).index_add(-1, ops.forced_index, gain * forced).unflatten(
                -1, tendency.shape[-3:])
        return tendency

    def _operators(self, dt: float, dtype: torch.dtype, device: torch.device) -> _Operators:
        key = (dt, dtype, torch.device(device))
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            n = self.n
            k = wavevectors(n)
            k2 = k.square().sum(dim=0)
            kept = (k.abs() <= self.kmax).all(dim=0)
            is_forced = (k2 > 0) & (k2 <= self.forcing_wavenumber ** 2)
            forced_index = torch.nonzero(is_forced.reshape(-1)).reshape(-1)
            weight = _mode_multiplicity(n, torch.device("cpu"), torch.float64).expand(n, n, -1).reshape(-1)

            def put(t: torch.Tensor) -> torch.Tensor:
                return t.to(dtype=dtype, device=device)

            self._cache[key] = _Operators(
                k=put(k), inv_k2=put(torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0)),
                mask=put(kept.double()), forced_index=forced_index.to(device),
                forced_weight=put(weight[forced_index]),
                exp_half=put(torch.exp(-self.nu * k2 * dt / 2)), exp_full=put(torch.exp(-self.nu * k2 * dt)))
        return self._cache[key]


@dataclasses.dataclass
class IsotropicData:
    """Filtered-DNS trajectories of forced isotropic turbulence.

    velocity: (N, T, 3, n_les, n_les, n_les) float32; times: (T,) float64 time since the end of
    spin-up; attrs: every generation parameter and the measured statistics and timing.
    """

    velocity: torch.Tensor
    times: torch.Tensor
    attrs: dict[str, AttrValue]


def generate_isotropic3d(*, n_trajectories: int = 8, n_snapshots: int = 61, snapshot_dt: float = 0.5,
                         spinup_time: float = 20.0, n_dns: int = 32, n_les: int = 16, nu: float = 0.025,
                         energy_injection_rate: float = 0.1, forcing_wavenumber: float = 2.0,
                         dt: float | None = None, seed: int = 0, dtype: torch.dtype = torch.float32,
                         progress: bool = True) -> IsotropicData:
    """Integrate n_trajectories DNS (one batch) from seeded random solenoidal fields, discard
    ``spinup_time``, keep n_snapshots snapshots snapshot_dt apart (the first at the end of
    spin-up), each cut to n_les^3 with the sharp spectral filter (|k_i| < n_les / 2)."""
    for name, value in (("n_trajectories", n_trajectories), ("n_snapshots", n_snapshots)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(n_les, bool) or not isinstance(n_les, int) or n_les < 2 or n_les % 2 or n_les > n_dns:
        raise ValueError(f"n_les must be an even integer with 2 <= n_les <= n_dns={n_dns}, got {n_les!r}")
    if not snapshot_dt > 0 or not spinup_time >= 0:
        raise ValueError(f"snapshot_dt must be > 0 and spinup_time >= 0, got {snapshot_dt}, {spinup_time}")
    solver = Isotropic3D(n_dns, nu=nu, energy_injection_rate=energy_injection_rate,
                         forcing_wavenumber=forcing_wavenumber, dt=dt)
    u = random_solenoidal_velocity(n_trajectories, n_dns, torch.Generator().manual_seed(seed), dtype=dtype)
    total_time = spinup_time + (n_snapshots - 1) * snapshot_dt
    run = TimedRun(solver, total_time, "Isotropic DNS", progress)
    u = run.spin_up(u, spinup_time, snapshot_dt)
    snapshots = torch.empty(n_trajectories, n_snapshots, 3, n_les, n_les, n_les, dtype=torch.float32)
    spectrum_sum = torch.zeros(n_dns // 2, dtype=torch.float64)
    enstrophy_sum = 0.0
    for index in range(n_snapshots):
        if index > 0:
            u = run.advance(u, snapshot_dt)
        snapshots[:, index] = spectral_filter(u, n_les, ndim=3).float()
        spectrum_sum += energy_spectrum_3d(u)[1].double().sum(dim=0)
        enstrophy_sum += enstrophy_3d(u.double()).sum().item()
    run.close()

    n_fields = n_trajectories * n_snapshots
    spectrum = spectrum_sum / n_fields
    k = torch.arange(1, n_dns // 2 + 1, dtype=torch.float64)
    energy = spectrum.sum().item()
    dissipation = 2 * nu * enstrophy_sum / n_fields
    u_prime = math.sqrt(2 * energy / 3)                      # rms of one velocity component
    integral_scale = math.pi / (2 * u_prime ** 2) * (spectrum / k).sum().item()
    taylor_scale = math.sqrt(15 * nu * u_prime ** 2 / dissipation)
    kolmogorov_scale = (nu ** 3 / dissipation) ** 0.25
    seconds_per_time_batch = run.seconds_per_time_unit()
    attrs: dict[str, AttrValue] = {
        "equation": "du/dt = P(u x curl u) + nu lap u + f, constant-power forcing on 0 < |k| <= k_f",
        "n_trajectories": n_trajectories, "n_snapshots": n_snapshots, "snapshot_dt": snapshot_dt,
        "spinup_time": spinup_time, "n_dns": n_dns, "n_les": n_les, "nu": nu,
        "energy_injection_rate": energy_injection_rate, "forcing_wavenumber": forcing_wavenumber,
        "dt": solver.dt, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "filter": f"sharp spectral cut-off |k_x|, |k_y|, |k_z| < {n_les // 2}",
        "mean_energy": energy, "dissipation": dissipation, "u_prime": u_prime,
        "integral_scale": integral_scale, "large_eddy_turnover_time": integral_scale / u_prime,
        "taylor_reynolds_number": u_prime * taylor_scale / nu, "kolmogorov_scale": kolmogorov_scale,
        "kmax_eta": solver.kmax * kolmogorov_scale,
        "dns_seconds_per_time_unit_batch": seconds_per_time_batch,
        "dns_seconds_per_time_unit_per_trajectory": seconds_per_time_batch / n_trajectories,
        "torch_threads": torch.get_num_threads(),
    }
    times = snapshot_dt * torch.arange(n_snapshots, dtype=torch.float64)
    return IsotropicData(velocity=snapshots, times=times, attrs=attrs)
