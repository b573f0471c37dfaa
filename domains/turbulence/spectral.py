"""Pseudo-spectral solver of 2-D forced incompressible Navier-Stokes (Kolmogorov flow).

Vorticity form on the periodic box [0, 2pi)^2:

    dw/dt + u . grad(w) = nu lap(w) - alpha w + f,   u = (d psi/dy, -d psi/dx),   -lap(psi) = w,
    f(x, y) = A cos(k_f y)   (or any given forcing field f, ``Kolmogorov2D(forcing=...)``).

An LES adds the curl of the divergence of an eddy-viscosity stress, curl div(2 nu_t S), with
nu_t from a closure of :mod:`flowsci_domains.turbulence.les` (``Kolmogorov2D(closure=...)``).

The vorticity forcing A cos(k_f y) is the curl of the body force -(A / k_f) sin(k_f y) e_x,
i.e. the "sin(4y) forcing" of Kolmogorov flow up to sign and scale.

Axis convention (used by every function of the turbulence domain): a field w of shape
(..., n, n) holds w[..., i, j] = w(x_i, y_j) with x_i = 2 pi i / n and y_j = 2 pi j / n, so
y (the forcing direction) is the last axis. Velocities are stacked as (..., 2, n, n) with
channel 0 = u (x-component) and channel 1 = v (y-component). The mean vorticity (the k = 0
mode) carries no velocity; the dynamics only damp it by the drag.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import torch
from tqdm import tqdm

from flowsci_domains.turbulence.les import EddyViscosityClosure

# Default time step: dt = COURANT * dx / VELOCITY_SCALE with dx = 2 pi / n; VELOCITY_SCALE is
# the typical peak speed of the default flow's statistically steady state (nu = 1e-3,
# drag 0.1, A = 4, k_f = 4); see Kolmogorov2D's docstring.
COURANT = 1.0
VELOCITY_SCALE = 4.0
DEALIAS_RULES = ("two_thirds", "three_halves", "none")


def wavenumbers(n: int, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers of the rfft2 layout: k_x (n, 1) and k_y (1, n // 2 + 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    kx = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype).reshape(n, 1)
    ky = torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=dtype).reshape(1, n // 2 + 1)
    return kx, ky


def grid_size(w: torch.Tensor, name: str = "w") -> int:
    """n of a real square field (..., n, n); ValueError naming ``name`` otherwise."""
    if w.dim() < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n), got {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"{name} must be a real floating-point tensor, got {w.dtype}")
    return w.shape[-1]


def velocity_from_vorticity(w: torch.Tensor) -> torch.Tensor:
    """Velocity (..., 2, n, n) of the periodic vorticity field w (..., n, n).

    Solves -lap(psi) = w spectrally (the mean of w is ignored) and returns
    u = d psi/dy, v = -d psi/dx. Modes on the Nyquist lines (even n) get zero derivative.
    """
    n = grid_size(w)
    kx, ky = wavenumbers(n, w.device, w.dtype)
    kx, ky = _drop_nyquist(kx, n), _drop_nyquist(ky, n)
    k2 = kx ** 2 + ky ** 2
    psi_hat = torch.fft.rfft2(w) / torch.where(k2 > 0, k2, torch.ones_like(k2))
    u_hat = torch.stack([1j * ky * psi_hat, -1j * kx * psi_hat], dim=-3)
    return torch.fft.irfft2(u_hat, s=(n, n))


def _drop_nyquist(k: torch.Tensor, n: int) -> torch.Tensor:
    """Wavenumbers with the (even-n) Nyquist entry set to 0, for first derivatives."""
    return torch.where(k.abs() * 2 == n, torch.zeros_like(k), k)


def random_initial_vorticity(n_batch: int, n: int, generator: torch.Generator | None = None, *,
                             peak_wavenumber: float = 4.0, rms: float = 4.0,
                             dtype: torch.dtype = torch.float32,
                             device: torch.device | str | None = None) -> torch.Tensor:
    """Smooth zero-mean Gaussian random vorticity fields (n_batch, n, n).

    White noise (drawn with ``generator`` on the CPU) filtered by exp(-|k|^2 / (2 k_p^2)) with
    k_p = ``peak_wavenumber``, mean removed, each sample scaled to spatial rms ``rms``.
    """
    if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
        raise ValueError(f"n_batch must be an integer >= 1, got {n_batch!r}")
    if peak_wavenumber <= 0:
        raise ValueError(f"peak_wavenumber must be > 0, got {peak_wavenumber}")
    if rms <= 0:
        raise ValueError(f"rms must be > 0, got {rms}")
    kx, ky = wavenumbers(n)
    noise = torch.randn(n_batch, n, n, generator=generator, dtype=torch.float64)
    w_hat = torch.fft.rfft2(noise) * torch.exp(-(kx ** 2 + ky ** 2) / (2 * peak_wavenumber ** 2))
    w_hat[..., 0, 0] = 0
    w = torch.fft.irfft2(w_hat, s=(n, n))
    w = w * (rms / w.square().mean(dim=(-2, -1), keepdim=True).sqrt())
    return w.to(dtype=dtype, device=device)


def _integer(name: str, value: int) -> int:
    """value as a Python int (numpy integers, e.g. read back from HDF5, included); ValueError
    naming ``name`` for bools, floats and anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _fft_friendly_size(minimum: int) -> int:
    """The smallest even integer >= minimum whose only prime factors are 2, 3 and 5."""
    size = minimum + minimum % 2
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 2


@dataclasses.dataclass
class _Operators:
    """Precomputed arrays of one (dt, dtype, device), in the solver's spectral layout."""

    kx: torch.Tensor             # (1, 2K+1) k_x of each column
    ky: torch.Tensor             # (K+1, 1) k_y of each row
    inv_k2: torch.Tensor         # (K+1, 2K+1) 1/|k|^2, 0 at k = 0
    exp_half: torch.Tensor       # (K+1, 2K+1) exp(L dt / 2)
    exp_full: torch.Tensor       # (K+1, 2K+1) exp(L dt)
    forced_half: torch.Tensor    # (K+1, 2K+1) forcing integrated exactly over dt / 2
    forced_full: torch.Tensor    # (K+1, 2K+1) forcing integrated exactly over dt


class Kolmogorov2D:
    """Forced 2-D Navier-Stokes in vorticity form, batched, in torch (see the module docstring).

    ``dealias`` chooses the kept modes |k_x|, |k_y| <= K and the grid of size M on which the
    advection products are formed (an exact Galerkin truncation unless "none"):

    - "two_thirds" (the 2/3 rule, for DNS): K = (n - 1) // 3, M = n;
    - "three_halves" (the 3/2 rule, for coarse runs): K = (n - 1) // 2, i.e. every mode with
      |k_x|, |k_y| < n/2 as kept by :func:`~flowsci_domains.turbulence.statistics.spectral_filter`,
      products on the smallest 2,3,5-smooth even M >= 3K + 1;
    - "none": K = (n - 1) // 2, M = n (aliased products).

    Spectral layout (``to_spectral``/``step``): complex (..., K + 1, 2K + 1), entry [a, b] is
    the Fourier-series coefficient (w = sum_k w_k e^{i k.x}) of k_y = a and
    k_x = b for b <= K, b - (2K + 1) otherwise; modes with k_y < 0 are the conjugates.

    ``forcing`` (a real (n, n) field on the solver's grid) replaces A cos(k_f y) by that
    time-independent vorticity forcing; its kept modes are what the solver integrates, and
    ``forcing_amplitude``/``forcing_wavenumber`` are then ignored.

    Time stepping is integrating-factor RK4: the linear part L = -nu |k|^2 - alpha and the
    constant forcing are integrated exactly (the affine flow w -> e^{Lh} w + h phi1(Lh) f_k
    with phi1(z) = (e^z - 1) / z), the advection term explicitly with classical RK4. Advection
    is evaluated pseudo-spectrally in the form u.grad(w) = d_x d_y (v^2 - u^2) + (d_x^2 - d_y^2)(uv)
    (an identity for divergence-free u; two inverse and two forward transforms per stage).

    ``closure`` (an :class:`~flowsci_domains.turbulence.les.EddyViscosityClosure`) makes the
    solver an LES: the term curl div(2 nu_t S) joins the advection term in every RK4 stage
    (explicit; the integrating factor still holds nu and the drag only). The stress is formed on
    the product grid from the kept modes and truncated like the advection products (not an exact
    Galerkin truncation: nu_t is not a polynomial of w); nu_t uses Delta = dx = 2 pi / n. The
    explicit term limits dt roughly to 2.8 / (max nu_t * max |k|^2).

    ``dt=None`` picks dt = dx / 4 with dx = 2 pi / n: Courant number 1 for the peak speed 4
    of the default flow (largest |u| measured in its statistically steady state is about 5;
    the classical RK4 limit is reached near dt = 0.017 at n = 128).
    Computations follow the input's dtype (float32 or float64) and device.
    """

    def __init__(self, n: int = 128, nu: float = 1e-3, drag: float = 0.1,
                 forcing_amplitude: float = 4.0, forcing_wavenumber: int = 4,
                 dt: float | None = None, dealias: str = "two_thirds",
                 closure: EddyViscosityClosure | None = None,
                 forcing: torch.Tensor | None = None) -> None:
        n = _integer("n", n)
        if n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n!r}")
        if nu < 0:
            raise ValueError(f"nu must be >= 0, got {nu}")
        if drag < 0:
            raise ValueError(f"drag must be >= 0, got {drag}")
        if dealias not in DEALIAS_RULES:
            raise ValueError(f"dealias must be one of {', '.join(DEALIAS_RULES)}, got {dealias!r}")
        self.kmax = (n - 1) // 3 if dealias == "two_thirds" else (n - 1) // 2
        self.product_grid = _fft_friendly_size(3 * self.kmax + 1) if dealias == "three_halves" else n
        forcing_wavenumber = _integer("forcing_wavenumber", forcing_wavenumber)
        if forcing is None and not 1 <= forcing_wavenumber <= self.kmax:
            raise ValueError(f"forcing_wavenumber must be an integer in [1, {self.kmax}] "
                             f"(the largest kept wavenumber at n={n}), got {forcing_wavenumber!r}")
        if dt is not None and not dt > 0:
            raise ValueError(f"dt must be > 0 or None, got {dt}")
        if closure is not None and not isinstance(closure, EddyViscosityClosure):
            raise ValueError(f"closure must be an EddyViscosityClosure (e.g. Smagorinsky(c=0.1)) or None, "
                             f"got {closure!r}")
        if forcing is not None and (not isinstance(forcing, torch.Tensor) or not forcing.is_floating_point()
                                    or tuple(forcing.shape) != (n, n)):
            got = (f"{forcing.dtype} tensor of shape {tuple(forcing.shape)}"
                   if isinstance(forcing, torch.Tensor) else type(forcing).__name__)
            raise ValueError(f"forcing must be a real floating-point tensor of shape ({n}, {n}) (the "
                             f"solver's grid) or None, got a {got}")
        self.n = n
        self.nu = float(nu)
        self.drag = float(drag)
        self.forcing_amplitude = float(forcing_amplitude)
        self.forcing_wavenumber = forcing_wavenumber
        self.dealias = dealias
        self.closure = closure
        self.forcing = None if forcing is None else forcing.detach().to("cpu", torch.float64).clone()
        self.dt = float(dt) if dt is not None else COURANT * (2 * math.pi / n) / VELOCITY_SCALE
        self._cache: dict[tuple[float, torch.dtype, torch.device], _Operators] = {}

    # ----------------------------------------------------------------- transforms and fields
    def to_spectral(self, w: torch.Tensor) -> torch.Tensor:
        """Physical (..., n, n) -> the kept Fourier coefficients (..., K + 1, 2K + 1)."""
        self._check_field(w)
        return self._forward(w)

    def to_physical(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Kept Fourier coefficients (..., K + 1, 2K + 1) -> physical (..., n, n)."""
        k = self.kmax
        if w_hat.dim() < 2 or tuple(w_hat.shape[-2:]) != (k + 1, 2 * k + 1):
            raise ValueError(f"w_hat must have shape (..., {k + 1}, {2 * k + 1}), got {tuple(w_hat.shape)}")
        return self._inverse(w_hat, self.n)

    def velocity(self, w: torch.Tensor) -> torch.Tensor:
        """Velocity (..., 2, n, n) of the vorticity w (..., n, n)."""
        self._check_field(w)
        return velocity_from_vorticity(w)

    def advection(self, w: torch.Tensor) -> torch.Tensor:
        """The advection term u . grad(w) (..., n, n) as the solver evaluates it: w projected
        onto the kept modes, the product dealiased."""
        self._check_field(w)
        ops = self._operators(self.dt, w.dtype, w.device)
        return -self._inverse(self._tendency(self._forward(w), ops, with_closure=False), self.n)

    def eddy_viscosity(self, w: torch.Tensor) -> torch.Tensor:
        """The closure's eddy viscosity nu_t (..., n, n) of w (..., n, n) projected onto the kept
        modes, evaluated on the n x n grid (the time step evaluates it on the product grid)."""
        self._check_closure()
        self._check_field(w)
        ops = self._operators(self.dt, w.dtype, w.device)
        return self._strain_and_eddy_viscosity(self._forward(w), ops, self.n)[1]

    def sgs_tendency(self, w: torch.Tensor) -> torch.Tensor:
        """The closure's term curl div(2 nu_t S) (..., n, n) of w (..., n, n) as the solver
        evaluates it (w projected onto the kept modes, the stress truncated to them)."""
        self._check_closure()
        self._check_field(w)
        ops = self._operators(self.dt, w.dtype, w.device)
        fluxes = self._sgs_fluxes(self._forward(w), ops)
        return self._inverse(self._flux_curl(self._forward(fluxes), ops), self.n)

    # ------------------------------------------------------------------------ time stepping
    def step(self, w_hat: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """One IF-RK4 step of length dt (default: the solver's dt) in spectral space."""
        h = self.dt if dt is None else float(dt)
        real = torch.float32 if w_hat.dtype == torch.complex64 else torch.float64
        ops = self._operators(h, real, w_hat.device)
        e1, e2 = ops.exp_half, ops.exp_full
        a = self._tendency(w_hat, ops)
        b = self._tendency(e1 * (w_hat + 0.5 * h * a) + ops.forced_half, ops)
        c = self._tendency(e1 * w_hat + ops.forced_half + 0.5 * h * b, ops)
        d = self._tendency(e2 * w_hat + ops.forced_full + h * e1 * c, ops)
        return e2 * w_hat + ops.forced_full + (h / 6) * (e2 * a + 2 * e1 * (b + c) + d)

    def advance(self, w: torch.Tensor, duration: float, progress: bool = False,
                check_finite: bool = True) -> torch.Tensor:
        """Integrate w (B, n, n) over ``duration`` in ceil(duration / dt) equal steps.

        When duration is not a multiple of dt the step is shrunk for this call so that the end
        time is hit exactly. The initial field is first projected onto the kept modes.
        Returns (B, n, n) in w's dtype. Pure torch operations: differentiable with respect to w.
        A non-finite result raises FloatingPointError; with ``check_finite=False`` it is returned
        (a surrogate's rollout keeps going so that its statistics report the blow-up).
        """
        self._check_field(w)
        if duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration}")
        n_steps = math.ceil(duration / self.dt - 1e-9)
        h = duration / max(n_steps, 1)
        w_hat = self._forward(w)
        for _ in tqdm(range(n_steps), desc="Kolmogorov2D", unit="step", disable=not progress):
            w_hat = self.step(w_hat, h)
        w_end = self._inverse(w_hat, self.n)
        if check_finite and not torch.isfinite(w_end).all():
            raise FloatingPointError(f"Kolmogorov2D became unstable (non-finite vorticity) with dt={h:.4g}; "
                                     f"pass a smaller dt")
        return w_end

    # ------------------------------------------------------------------------------ helpers
    def _check_field(self, w: torch.Tensor) -> None:
        n = grid_size(w)
        if n != self.n:
            raise ValueError(f"w must have n={self.n} points per side, got shape {tuple(w.shape)}")
        if w.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"w must be float32 or float64, got {w.dtype}")

    def _check_closure(self) -> None:
        if self.closure is None:
            raise ValueError("this Kolmogorov2D has no closure; pass closure=... (e.g. Smagorinsky(c=0.1))")

    def _forward(self, w: torch.Tensor) -> torch.Tensor:
        """(..., s, s) on any grid s >= 2K + 1 -> (..., K + 1, 2K + 1): rfft over y, keep
        k_y <= K, fft over x, keep |k_x| <= K."""
        n, k = w.shape[-1], self.kmax
        rows = torch.fft.rfft(w, dim=-1, norm="forward")[..., :k + 1].transpose(-1, -2)
        full = torch.fft.fft(rows, dim=-1, norm="forward")
        return torch.cat([full[..., :k + 1], full[..., n - k:]], dim=-1)

    def _inverse(self, w_hat: torch.Tensor, n: int) -> torch.Tensor:
        """(..., K + 1, 2K + 1) -> (..., n, n) on the grid n >= 2K + 1: zero-pad k_x, ifft
        over x, irfft over y."""
        k = self.kmax
        padded = w_hat.new_zeros(*w_hat.shape[:-1], n)
        padded[..., :k + 1] = w_hat[..., :k + 1]
        padded[..., n - k:] = w_hat[..., k + 1:]
        rows = torch.fft.ifft(padded, dim=-1, norm="forward").transpose(-1, -2)
        return torch.fft.irfft(rows, n=n, dim=-1, norm="forward")

    def _tendency(self, w_hat: torch.Tensor, ops: _Operators, with_closure: bool = True) -> torch.Tensor:
        """-(u . grad w), plus curl div(2 nu_t S) with a closure, on the kept modes (..., K + 1, 2K + 1)."""
        psi_hat = w_hat * ops.inv_k2
        u, v = self._inverse(torch.stack([1j * ops.ky * psi_hat, -1j * ops.kx * psi_hat]), self.product_grid)
        fluxes = torch.stack([v * v - u * u, u * v])
        if with_closure and self.closure is not None:
            fluxes = fluxes + self._sgs_fluxes(w_hat, ops)
        return self._flux_curl(self._forward(fluxes), ops)

    @staticmethod
    def _flux_curl(products: torch.Tensor, ops: _Operators) -> torch.Tensor:
        """-(d_x d_y P_0 + (d_x^2 - d_y^2) P_1) of the kept modes of the fluxes P (2, ..., K + 1, 2K + 1):
        -(u . grad w) for P = (v^2 - u^2, uv)."""
        return ops.kx * ops.ky * products[0] + (ops.kx ** 2 - ops.ky ** 2) * products[1]

    def _strain_and_eddy_viscosity(self, w_hat: torch.Tensor, ops: _Operators,
                                   grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Strain components (s_n, s_s) = (2 S_11, 2 S_12) (2, ..., grid, grid) and the closure's
        nu_t (..., grid, grid) on the grid x grid points, from the kept modes w_hat."""
        psi_hat = w_hat * ops.inv_k2
        # d_x u = psi_xy and d_y u + d_x v = psi_yy - psi_xx
        spectral = [-2 * ops.kx * ops.ky * psi_hat, (ops.kx ** 2 - ops.ky ** 2) * psi_hat]
        if self.closure.uses_vorticity_gradient:
            spectral += [1j * ops.kx * w_hat, 1j * ops.ky * w_hat]
        fields = self._inverse(torch.stack(spectral), grid)
        strain = fields[:2]
        gradient = fields[2:].square().sum(dim=0).sqrt() if self.closure.uses_vorticity_gradient else None
        nu_t = self.closure.eddy_viscosity(strain.square().sum(dim=0).sqrt(), gradient, 2 * math.pi / self.n)
        return strain, nu_t

    def _sgs_fluxes(self, w_hat: torch.Tensor, ops: _Operators) -> torch.Tensor:
        """(2 nu_t s_n, -nu_t s_s) (2, ..., M, M) on the product grid: added to the fluxes
        (v^2 - u^2, uv), :meth:`_flux_curl` turns them into curl div(2 nu_t S)."""
        strain, nu_t = self._strain_and_eddy_viscosity(w_hat, ops, self.product_grid)
        return torch.stack([2 * nu_t * strain[0], -nu_t * strain[1]])

    def _operators(self, dt: float, dtype: torch.dtype, device: torch.device) -> _Operators:
        key = (dt, dtype, torch.device(device))
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = self._build_operators(dt, dtype, torch.device(device))
        return self._cache[key]

    def _build_operators(self, dt: float, dtype: torch.dtype, device: torch.device) -> _Operators:
        k = self.kmax
        kx = torch.cat([torch.arange(k + 1), torch.arange(-k, 0)]).to(torch.float64).reshape(1, -1)
        ky = torch.arange(k + 1, dtype=torch.float64).reshape(-1, 1)
        k2 = kx ** 2 + ky ** 2
        linear = -self.nu * k2 - self.drag
        if self.forcing is not None:
            forcing_hat = self._forward(self.forcing)
        else:
            # A cos(k_f y) = (A/2) e^{i k_f y} + c.c.: coefficient A/2 at k_y = k_f, k_x = 0
            forcing_hat = torch.zeros(k + 1, 2 * k + 1, dtype=torch.float64)
            forcing_hat[self.forcing_wavenumber, 0] = self.forcing_amplitude / 2

        def integrated_forcing(h: float) -> torch.Tensor:
            """h phi1(L h) f_k: the exact response of dw/dt = L w + f over h from w = 0."""
            z = linear * h
            tiny = z.abs() < 1e-12
            return torch.where(tiny, h, torch.expm1(z) / torch.where(tiny, 1.0, linear)) * forcing_hat

        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128

        def put(t: torch.Tensor, kind: torch.dtype = dtype) -> torch.Tensor:
            return t.to(dtype=kind, device=device)

        return _Operators(
            kx=put(kx), ky=put(ky), inv_k2=put(torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0)),
            exp_half=put(torch.exp(linear * dt / 2)), exp_full=put(torch.exp(linear * dt)),
            forced_half=put(integrated_forcing(dt / 2), complex_dtype),
            forced_full=put(integrated_forcing(dt), complex_dtype))
