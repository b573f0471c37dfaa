"""The 2-D coarse-grained active suspension (Maddu, Weady & Shelley, J. Comput. Phys. 2024): a
differentiable pseudo-spectral solver.

Fields on the periodic square [0, L)², sampled at (x_i, y_j) = (i h, j h), h = L/n, stored as
field[..., i, j]: the concentration c (..., n, n), the second moment D (..., n, n, 2, 2)
(symmetric, tr D = c) and the Stokes velocity u (..., n, n, 2) with (∇u)_ab = ∂u_a/∂x_b:

    ∂c/∂t + ∇·(u c) = d_T Δc
    ∂D/∂t + ∇·(u D) − (∇u·D + D·∇uᵀ) + 2 S:E = 4ζ(D·D − S:D) + d_T ΔD − 4 d_R (D − c I/2)
    −Δu + ∇q = ∇·Σ,   ∇·u = 0,   Σ = α D + β S:E − 2ζβ (D·D − S:D),   E = (∇u + ∇uᵀ)/2,

with S:E, S:D from a closure ``closure(D, E) -> (S:E, S:D)`` applied pointwise. The transport is
written in flux form (∇·(u X) = u·∇X as ∇·u = 0), so ∫c is conserved to round-off, and tr D = c
holds to round-off for any closure with S_iikl = D_kl (the trace of the D equation is then the c
equation, term by term, in the same discretisation).

Space: Fourier pseudo-spectral (rfft2). Products and closure terms are formed on the grid, and
every nonlinear term, the stress included, is truncated to |k_x|, |k_y| < n/3 (2/3 rule: exact
de-aliasing of the quadratic terms, a spectral filter for the closure); the state stays in that
band. Stokes in Fourier space: û = (I − k̂k̂)(i k·Σ̂)/|k|², û(k = 0) = 0.

Time: SBDF2, first step IMEX Euler. The linear terms d_T Δ (on c and D) and the relaxation
−4 d_R (D − c I/2) are implicit (diagonal in Fourier space; c is advanced first, so c^{n+1} is
known in the D solve); transport, stretching, closure and alignment terms are extrapolated.
SBDF2 is chosen over IMEX Euler throughout because it is second order at the same cost (one
closure evaluation per step), which the time-step convergence test confirms; SBDF2 is also
the scheme of the reference solver (Weady et al.) behind Maddu, Weady & Shelley (2024).

Stress–velocity coupling: Σ depends on E = sym ∇u, so u solves u = 𝒮[Σ(D, E(u))], a fixed point
of the "sweep" map (closure, stress, Stokes solve). The map is a contraction (measured rate
0.101 at isotropy, = β c/8, and 0.18 in the nematic state of α = −2, ζ = 5 with Bingham). Each
step starts from the extrapolation 2 u^{n−1} − u^{n−2} of the sweep outputs of the two previous
steps (error O(dt²)) and applies ``sweeps − 1`` sweeps; the resulting velocity advances D, with
S:E evaluated at its own strain, so every term of the D equation sees the same u (that keeps
tr D = c to round-off), and one more Stokes solve with the same closure values gives the sweep
output stored for the next extrapolation. ``sweeps = 1`` keeps the scheme second order with one
closure call per step (3 sweeps change mean |u| by ≤ 4e-4 relative at dt = 5e-3, 64², a fifth
of the change from dt = 5e-3 to 2e-3). Everything is torch, so gradients flow through an unrolled
rollout (to the closure's parameters, and to D wherever the closure is differentiable in D).

Realizability: nothing in the scheme keeps D positive semi-definite. At 64² with ζ = 5,
d_T = d_R = 0.05 the nematic state (λ_min/c ≈ 0.005) is undershot by the truncated spectrum to
λ_min/c ≈ −0.01 from t ≈ 1.1 on; a closure that checks D (the Bingham closure with its default
tol) then raises, naming the step. With a looser tol (0.05 in the a-posteriori runs) the run goes
on; the Bingham closure then takes the fourth harmonic of perfect alignment and keeps
S_iikl = D_kl, so tr D = c still holds to round-off. At 128² the same run stays realizable
(λ_min/c = 0.004 at t = 2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from tqdm import tqdm

ClosureFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

CONVERGED = 1e-12   # relative change of û that ends the fixed-point iteration in :meth:`velocity`
MAX_SWEEPS = 200


@dataclasses.dataclass(frozen=True)
class ActiveSuspensionParams:
    """Physical and numerical parameters.

    ``alpha`` < 0: pushers (extensile), > 0: pullers; ``beta`` the constraint-stress coefficient;
    ``zeta`` the steric alignment strength; ``d_t``, ``d_r`` translational and rotational
    diffusion. The Well's active_matter uses L = 10, α ∈ {−1, …, −5}, β = 0.8, ζ ∈ {1, 3, …, 17}.
    ``dt`` = 5e-3 at 64² (α = −2, ζ = 5, Bingham): steps up to 4e-2 ran to t = 10, 8e-2 left the
    realizable set within 13 steps, so 5e-3 keeps an 8× margin; it reproduces the dt = 2e-3 mean |u|
    to 2e-5 (relative) at t = 5 and to 2e-3 during the fastest growth (t = 0.5). ``sweeps`` ≥ 1
    fixed-point sweeps of the stress–velocity coupling per step (module docstring).
    """

    n: int = 64
    length: float = 10.0
    alpha: float = -2.0
    beta: float = 0.8
    zeta: float = 5.0
    d_t: float = 0.05
    d_r: float = 0.05
    dt: float = 5e-3
    sweeps: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 8 or self.n % 2:
            raise ValueError(f"n must be an even integer >= 8, got {self.n!r}")
        if isinstance(self.sweeps, bool) or not isinstance(self.sweeps, int) or self.sweeps < 1:
            raise ValueError(f"sweeps must be an integer >= 1, got {self.sweeps!r}")
        for name in ("length", "dt"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("beta", "zeta", "d_t", "d_r"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")


@dataclasses.dataclass(frozen=True)
class _Previous:
    """What SBDF2 and the velocity extrapolation keep of the previous step (Fourier space)."""

    c_hat: torch.Tensor      # (..., n, m)
    D_hat: torch.Tensor      # (..., n, m, 2, 2)
    nc_hat: torch.Tensor     # explicit terms of the c equation, (..., n, m)
    nd_hat: torch.Tensor     # explicit terms of the D equation, (..., n, m, 2, 2)
    u_hat: torch.Tensor      # sweep output of that step, (..., n, m, 2)


@dataclasses.dataclass(frozen=True)
class SuspensionState:
    """c: (..., n, n), D: (..., n, n, 2, 2) at ``time`` after ``step`` steps. ``u_hat``
    (..., n, n//2+1, 2) is the velocity (Fourier) that advances this state; ``previous`` is None
    before the first step (IMEX Euler) and the SBDF2 history after it. Build states with
    :meth:`ActiveSuspension2D.make_state` or :meth:`ActiveSuspension2D.initial_state`."""

    c: torch.Tensor
    D: torch.Tensor
    time: float
    step: int
    u_hat: torch.Tensor
    previous: _Previous | None


def _rfft(x: torch.Tensor, rank: int) -> torch.Tensor:
    """rfft2 over the two grid axes of a field with ``rank`` trailing component axes."""
    return torch.fft.rfft2(x, dim=(-2 - rank, -1 - rank))


def _irfft(x_hat: torch.Tensor, n: int, rank: int) -> torch.Tensor:
    return torch.fft.irfft2(x_hat, s=(n, n), dim=(-2 - rank, -1 - rank))


def _wavevectors(n: int, length: float) -> torch.Tensor:
    """k: (n, n//2+1, 2), float64, of the rfft2 layout; the Nyquist components are set to 0 (the
    odd derivatives of the Nyquist modes of a real field vanish)."""
    index = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    index[n // 2] = 0.0
    kx = (2 * math.pi / length) * index
    ky = (2 * math.pi / length) * torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)
    ky[-1] = 0.0
    return torch.stack(torch.broadcast_tensors(kx[:, None], ky[None, :]), dim=-1)


def _stokes_hat(sigma_hat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """û = (I − k̂k̂)(i k·Σ̂)/|k|², û(0) = 0. sigma_hat: (..., n, m, 2, 2), k: (n, m, 2) -> (..., n, m, 2)."""
    k2 = (k * k).sum(-1)
    inverse = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    force = 1j * torch.einsum("...a,...ab->...b", k.to(sigma_hat.dtype), sigma_hat)
    longitudinal = (k * force).sum(-1, keepdim=True) * inverse[..., None]
    return (force - longitudinal * k) * inverse[..., None]


def stokes_velocity(stress: torch.Tensor, length: float) -> torch.Tensor:
    """The periodic Stokes velocity of an extra stress: −Δu + ∇q = ∇·Σ, ∇·u = 0, zero mean.

    stress: (..., n, n, 2, 2) on the grid of side ``length``; returns u: (..., n, n, 2).
    (∇·Σ)_b = ∂Σ_ab/∂x_a (Σ need not be symmetric)."""
    if not isinstance(stress, torch.Tensor) or stress.ndim < 4 or stress.shape[-2:] != (2, 2) \
            or stress.shape[-4] != stress.shape[-3] or stress.shape[-4] % 2:
        got = tuple(stress.shape) if isinstance(stress, torch.Tensor) else type(stress).__name__
        raise ValueError(f"stress must be a tensor (..., n, n, 2, 2) with n even, got {got}")
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"length must be a finite number > 0, got {length!r}")
    n = stress.shape[-3]
    k = _wavevectors(n, length).to(stress.device)
    return _irfft(_stokes_hat(_rfft(stress, 2), k), n, 1)


def energy_spectrum(u: torch.Tensor, length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell-summed kinetic-energy spectrum of a periodic velocity u: (..., n, n, 2).

    Returns k (K,) = j·2π/L for shells j = 0 … K − 1 (every mode of the grid, corners included) and
    E (..., K) with E(k_j) Δk = Σ_{modes with round(|k|/Δk) = j} |û|²/2 (û normalised per grid
    point, Δk = 2π/L), so that Σ_j E(k_j) Δk = ⟨|u|²⟩/2, the mean kinetic energy density."""
    if not isinstance(u, torch.Tensor) or u.ndim < 3 or u.shape[-1] != 2 or u.shape[-3] != u.shape[-2]:
        raise ValueError(f"u must be a tensor (..., n, n, 2), got "
                         f"{tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}")
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"length must be a finite number > 0, got {length!r}")
    n = u.shape[-2]
    u_hat = torch.fft.fft2(u, dim=(-3, -2)) / n**2
    energy = 0.5 * u_hat.abs().square().sum(-1)
    index = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=u.device)
    shell = torch.round(torch.sqrt(index[:, None] ** 2 + index[None, :] ** 2)).long().reshape(-1)
    n_shells = int(shell.max()) + 1
    flat = energy.reshape(*energy.shape[:-2], n * n)
    spectrum = flat.new_zeros(*flat.shape[:-1], n_shells).index_add_(-1, shell, flat)
    dk = 2 * math.pi / length
    return dk * torch.arange(n_shells, dtype=u.dtype, device=u.device), spectrum / dk


def order_parameter(c: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Spatial mean of λ1 − λ2 of D/c. c: (..., n, n), D: (..., n, n, 2, 2) -> (...)."""
    gap = torch.sqrt((D[..., 0, 0] - D[..., 1, 1]) ** 2 + 4 * D[..., 0, 1] * D[..., 1, 0])
    return (gap / c).mean(dim=(-2, -1))


def time_averaged_spectrum(series: dict[str, torch.Tensor],
                           start_time: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the recorded spectra ``series["spectrum"]`` (R, ..., K) over the records with
    time >= ``start_time``. Returns (``series["wavenumber"]`` (K,), E (..., K))."""
    missing = {"time", "spectrum", "wavenumber"} - set(series)
    if missing:
        raise ValueError("series must hold the keys of ActiveSuspension2D.rollout; "
                         f"missing {sorted(missing)}")
    keep = series["time"] >= start_time
    if not bool(keep.any()):
        raise ValueError(f"no record at time >= start_time = {start_time}; the records span "
                         f"[{float(series['time'][0])}, {float(series['time'][-1])}]")
    return series["wavenumber"], series["spectrum"][keep].mean(0)


class ActiveSuspension2D:
    """The solver of the module docstring for ``params`` and a pointwise ``closure(D, E) -> (S:E, S:D)``
    (D, E: (..., 2, 2), float64; e.g. :func:`flowsci_domains.kinetic.closures.make_closure`)."""

    def __init__(self, params: ActiveSuspensionParams, closure: ClosureFn):
        if not isinstance(params, ActiveSuspensionParams):
            raise ValueError(f"params must be an ActiveSuspensionParams, got {type(params).__name__}")
        if not callable(closure):
            raise ValueError("closure must be callable as closure(D, E) -> (S:E, S:D), "
                             f"got {type(closure).__name__}")
        self.params, self.closure = params, closure
        n = params.n
        self.k = _wavevectors(n, params.length)                       # (n, m, 2)
        self.k2 = (self.k * self.k).sum(-1)                            # (n, m)
        index = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64).abs()
        index_y = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)
        self.mask = ((index[:, None] < n / 3) & (index_y[None, :] < n / 3)).to(torch.float64)
        self.eye = torch.eye(2, dtype=torch.float64)

    # ------------------------------------------------------------------ states

    def make_state(self, c: torch.Tensor, D: torch.Tensor, time: float = 0.0) -> SuspensionState:
        """A state from fields c: (..., n, n) and D: (..., n, n, 2, 2) (float64, D symmetric), projected
        onto the de-aliased band, with its self-consistent velocity (fixed point iterated to
        convergence). Differentiable in c, D and the closure's parameters."""
        n = self.params.n
        if (not isinstance(c, torch.Tensor) or c.dtype != torch.float64 or c.ndim < 2
                or c.shape[-2:] != (n, n)):
            got = (c.dtype, tuple(c.shape)) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"c must be a float64 tensor (..., {n}, {n}), got {got}")
        if not isinstance(D, torch.Tensor) or D.dtype != torch.float64 or D.shape != c.shape + (2, 2):
            got = (D.dtype, tuple(D.shape)) if isinstance(D, torch.Tensor) else type(D).__name__
            raise ValueError(f"D must be a float64 tensor of shape {tuple(c.shape) + (2, 2)} "
                             f"(c's shape + (2, 2)), got {got}")
        if not bool(torch.isfinite(c).all() & torch.isfinite(D).all()):
            raise ValueError("c and D must be finite, got NaN or inf entries")
        asymmetry = float((D - D.transpose(-1, -2)).abs().max())
        if asymmetry > 1e-12 * max(1.0, float(D.abs().max())):
            raise ValueError(f"D must be symmetric, got max |D − Dᵀ| = {asymmetry:.3g}")
        c = _irfft(self.mask * _rfft(c, 0), n, 0)
        D = _irfft(self.mask[..., None, None] * _rfft(D, 2), n, 2)
        zero = torch.zeros(*c.shape[:-1], n // 2 + 1, 2, dtype=torch.complex128)
        return SuspensionState(c, D, float(time), 0, self._converge(D, zero, 0), None)

    def initial_state(self, generator: torch.Generator, amplitude: float = 0.01,
                      max_mode: int = 4) -> SuspensionState:
        """Near-isotropic state: c = 1, D = I/2 + Q with Q traceless symmetric, a smooth random field
        (white noise low-passed to integer wave numbers 0 < |m| <= ``max_mode``, i.e. |k| <= 2π m/L)
        scaled so that max_x |λ(Q)| = ``amplitude`` (in (0, 1/2), so D stays positive definite)."""
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not isinstance(amplitude, (int, float)) or not 0 < amplitude < 0.5:
            raise ValueError(f"amplitude must lie in (0, 0.5), got {amplitude!r}")
        if (isinstance(max_mode, bool) or not isinstance(max_mode, int)
                or not 1 <= max_mode < self.params.n / 3):
            raise ValueError(f"max_mode must be an integer in [1, n/3) = [1, {self.params.n / 3:.4g}), "
                             f"got {max_mode!r}")
        n = self.params.n
        index = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
        radius2 = index[:, None] ** 2 + torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)[None, :] ** 2
        band = (radius2 > 0) & (radius2 <= max_mode**2)
        noise = torch.randn(n, n, 2, dtype=torch.float64, generator=generator)
        smooth = _irfft(band[..., None] * _rfft(noise, 1), n, 1)      # (n, n, 2): Q11 = −Q22, Q12
        smooth = smooth * (amplitude / smooth.norm(dim=-1).max())
        Q = torch.stack([torch.stack([smooth[..., 0], smooth[..., 1]], -1),
                         torch.stack([smooth[..., 1], -smooth[..., 0]], -1)], -2)
        return self.make_state(torch.ones(n, n, dtype=torch.float64), 0.5 * self.eye + Q)

    # ------------------------------------------------------------------ velocity

    def _sweep(self, D: torch.Tensor, u_hat: torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """One pass of the stress–velocity map at D (..., n, n, 2, 2) from the velocity û (..., n, m, 2).
        Returns ∇u (of û), S:E and S:D at its strain, D·D, and the velocity of the resulting stress.
        A ValueError of the closure is re-raised naming ``step``."""
        p = self.params
        grad_u = _irfft(1j * u_hat[..., :, None] * self.k[..., None, :], p.n, 2)
        strain = 0.5 * (grad_u + grad_u.transpose(-1, -2))
        try:
            se, sd = self.closure(D, strain)
        except ValueError as error:
            raise ValueError(f"the closure rejected the fields at step {step}: {error}") from error
        dd = D @ D
        stress = p.alpha * D + p.beta * se - 2 * p.zeta * p.beta * (dd - sd)
        return grad_u, se, sd, dd, _stokes_hat(self.mask[..., None, None] * _rfft(stress, 2), self.k)

    def _converge(self, D: torch.Tensor, u_hat: torch.Tensor, step: int) -> torch.Tensor:
        """Iterate the sweep from û to its fixed point (relative change <= CONVERGED)."""
        for _ in range(MAX_SWEEPS):
            new = self._sweep(D, u_hat, step)[-1]
            if not bool(torch.isfinite(new).all()):
                raise FloatingPointError(f"the velocity became non-finite at step {step}")
            change, scale = float((new - u_hat).detach().abs().max()), float(new.detach().abs().max())
            u_hat = new
            if change <= CONVERGED * scale:
                return u_hat
        raise RuntimeError(f"the stress–velocity fixed point did not converge in {MAX_SWEEPS} sweeps "
                           f"(last relative change {change / scale:.3g}); "
                           "the coupling β S:E may be too strong")

    def velocity(self, state: SuspensionState) -> torch.Tensor:
        """The self-consistent Stokes velocity u: (..., n, n, 2) of the state (fixed point converged)."""
        self._check_state(state)
        return _irfft(self._converge(state.D, state.u_hat, state.step), self.params.n, 1)

    def energy_spectrum(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`energy_spectrum` of u: (..., n, n, 2) on this solver's box: k (K,), E (..., K)."""
        return energy_spectrum(u, self.params.length)

    # ------------------------------------------------------------------ time stepping

    def step(self, state: SuspensionState) -> SuspensionState:
        """Advance by dt: IMEX Euler from a state without history, SBDF2 otherwise. Raises
        FloatingPointError naming the step if c or D become non-finite."""
        self._check_state(state)
        p = self.params
        u_hat = state.u_hat
        for _ in range(p.sweeps - 1):
            u_hat = self._sweep(state.D, u_hat, state.step)[-1]
        grad_u, se, sd, dd, u_out = self._sweep(state.D, u_hat, state.step)

        u = _irfft(u_hat, p.n, 1)
        c_hat = self.mask * _rfft(state.c, 0)
        D_hat = self.mask[..., None, None] * _rfft(state.D, 2)
        flux_c = _rfft(u * state.c[..., None], 1)                                     # (..., n, m, 2)
        flux_d = _rfft(u[..., :, None, None] * state.D[..., None, :, :], 3)           # (..., n, m, 2, 2, 2)
        local = grad_u @ state.D + state.D @ grad_u.transpose(-1, -2) - 2 * se + 4 * p.zeta * (dd - sd)
        nc_hat = self.mask * (-1j * (self.k * flux_c).sum(-1))
        nd_hat = self.mask[..., None, None] * (-1j * torch.einsum("nmb,...nmbij->...nmij",
                                                                  self.k.to(flux_d.dtype),
                                                                  flux_d) + _rfft(local, 2))

        previous = state.previous
        if previous is None:
            a0, rhs_c, rhs_d = 1.0, c_hat + p.dt * nc_hat, D_hat + p.dt * nd_hat
            next_guess = u_out
        else:
            a0 = 1.5
            rhs_c = 2 * c_hat - 0.5 * previous.c_hat + p.dt * (2 * nc_hat - previous.nc_hat)
            rhs_d = 2 * D_hat - 0.5 * previous.D_hat + p.dt * (2 * nd_hat - previous.nd_hat)
            next_guess = 2 * u_out - previous.u_hat
        c_new_hat = rhs_c / (a0 + p.dt * p.d_t * self.k2)
        D_new_hat = ((rhs_d + (2 * p.dt * p.d_r) * c_new_hat[..., None, None] * self.eye)
                     / (a0 + p.dt * (p.d_t * self.k2 + 4 * p.d_r))[..., None, None])
        c_new = _irfft(c_new_hat, p.n, 0)
        D_new = _irfft(D_new_hat, p.n, 2)
        D_new = 0.5 * (D_new + D_new.transpose(-1, -2))
        time = state.time + p.dt
        if not bool(torch.isfinite(c_new).all() & torch.isfinite(D_new).all()):
            raise FloatingPointError(f"c or D became non-finite at step {state.step + 1} (t = {time:.6g}); "
                                     f"try a smaller dt (now {p.dt:g})")
        return SuspensionState(c_new, D_new, time, state.step + 1, next_guess,
                               _Previous(c_hat, D_hat, nc_hat, nd_hat, u_out))

    def rollout(self, state: SuspensionState, n_steps: int, record_every: int,
                progress: bool = False) -> tuple[SuspensionState, dict[str, torch.Tensor]]:
        """``n_steps`` steps from ``state``. Records (detached, without gradients) the state and every
        ``record_every``-th step: series["time"] (R,), ["mean_speed"] (R, ...) = spatial mean of |u|,
        ["order_parameter"] (R, ...) (:func:`order_parameter`), ["spectrum"] (R, ..., K) and
        ["wavenumber"] (K,) (:func:`energy_spectrum` of the converged velocity). Returns the final
        state (with its autograd graph) and the series."""
        for name, value in (("n_steps", n_steps), ("record_every", record_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        records = [self.record(state)]
        for index in tqdm(range(1, n_steps + 1), desc="active suspension", unit="step", disable=not progress):
            state = self.step(state)
            if index % record_every == 0:
                records.append(self.record(state))
        series = {key: torch.stack([r[key] for r in records]) for key in records[0] if key != "wavenumber"}
        series["wavenumber"] = records[0]["wavenumber"]
        return state, series

    def record(self, state: SuspensionState) -> dict[str, torch.Tensor]:
        """One record of :meth:`rollout` (detached): time (), mean_speed (...), order_parameter (...),
        spectrum (..., K) and wavenumber (K,)."""
        with torch.no_grad():
            detached = dataclasses.replace(state, c=state.c.detach(), D=state.D.detach(),
                                           u_hat=state.u_hat.detach())
            u = self.velocity(detached)
            k, spectrum = self.energy_spectrum(u)
            return {"time": torch.tensor(state.time, dtype=torch.float64),
                    "mean_speed": u.norm(dim=-1).mean(dim=(-2, -1)),
                    "order_parameter": order_parameter(detached.c, detached.D),
                    "spectrum": spectrum, "wavenumber": k}

    # ------------------------------------------------------------------ checks

    def _check_state(self, state: SuspensionState) -> None:
        if not isinstance(state, SuspensionState):
            raise ValueError(f"state must be a SuspensionState, got {type(state).__name__}")
        if state.c.shape[-2:] != (self.params.n, self.params.n):
            raise ValueError(f"state is on a {tuple(state.c.shape[-2:])} grid, this solver on "
                             f"({self.params.n}, {self.params.n})")
