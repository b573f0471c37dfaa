"""Classical solvers of the filtered flow as one-step models: the coarse solver with or without an
eddy-viscosity closure (LES), a finer solver filtered back, and the DNS restarted from the
filtered state.

Each maps the normalised filtered vorticity at t to the one at t + Δ like any learned operator
of the turbulence domain, so that training runs (with ``train.steps=0``: nothing to learn),
``flowsci eval``, the rollouts, statistics and the benchmark treat it as one more model:

    w(t + Δ) = F_n ( S_Δ^{(N)} ( I_N w(t) ) ),

with I_N the trigonometric interpolation from the data's n x n grid to the solver's N x N grid
(:func:`~flowsci_domains.turbulence.statistics.spectral_interpolate`), S_Δ^{(N)} the
pseudo-spectral :class:`~flowsci_domains.turbulence.spectral.Kolmogorov2D` at N with the data's
ν, drag and forcing and the chosen closure, and F_n the data's sharp spectral filter. N = n is
the classical no-model or LES baseline; N = 2n is "a finer classical solver"; N = n_dns with
the DNS's numerics is the DNS restarted from the filtered state, the floor of what any closure
on the filtered state can reach (the unresolved scales are lost at t).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci_domains.turbulence.les import EddyViscosityClosure, Leith, Smagorinsky
from flowsci_domains.turbulence.spectral import COURANT, VELOCITY_SCALE, Kolmogorov2D
from flowsci_domains.turbulence.statistics import spectral_filter, spectral_interpolate
from flowsci_domains.turbulence.surrogate import ChannelNormalizer

# Constructor arguments that the turbulence domain sets from the data (an error in a config).
DATA_ARGUMENTS = ("n", "snapshot_dt", "nu", "drag", "forcing_amplitude", "forcing_wavenumber", "mean", "std")
CLOSURES: dict[str, type[EddyViscosityClosure]] = {"smagorinsky": Smagorinsky, "leith": Leith}


def make_closure(closure: str, c: float | None) -> EddyViscosityClosure | None:
    """The eddy-viscosity closure named ``closure`` ("none", "smagorinsky", "leith") with
    coefficient ``c`` (required for a closure, not allowed without one)."""
    if closure == "none":
        if c is not None:
            raise ValueError(f"c={c} is the coefficient of a closure; set closure to one of "
                             f"{', '.join(CLOSURES)} or leave c out")
        return None
    if closure not in CLOSURES:
        raise ValueError(f"closure must be 'none' or one of {', '.join(CLOSURES)}, got {closure!r}")
    if c is None:
        raise ValueError(f"closure={closure!r} needs its coefficient c (e.g. c: 0.1)")
    return CLOSURES[closure](c)


class ClassicalSolver(nn.Module):
    """Normalised filtered vorticity (B, 1, n, n) at t -> (B, 1, n, n) at t + Δ by a solver.

    Set by the domain from the data: ``n``, ``snapshot_dt`` (Δ), ``nu``, ``drag``,
    ``forcing_amplitude``, ``forcing_wavenumber``, ``mean`` and ``std``. Choices: ``closure``
    ("none", "smagorinsky", "leith") with coefficient ``c``; ``resolution`` N >= n, even (None:
    n); the solver's numerics ``dealias`` ("three_halves" keeps every mode of the N-grid;
    "two_thirds" is the DNS's rule) and ``solver_dt`` (None: the DNS's time step per largest kept
    wavenumber, i.e. Kolmogorov2D's default at N, times 2/3 under the 3/2 rule, whose largest
    kept wavenumber is 3/2 as high; the plain default at N = 64 blows up on this regime's peaks).
    """

    def __init__(self, in_channels: int, out_channels: int, n: int, snapshot_dt: float, nu: float,
                 drag: float, forcing_amplitude: float, forcing_wavenumber: int, mean: list[float],
                 std: list[float], closure: str = "none", c: float | None = None,
                 resolution: int | None = None, solver_dt: float | None = None,
                 dealias: str = "three_halves"):
        super().__init__()
        if in_channels != 1 or out_channels != 1 or len(mean) != 1:
            raise ValueError("a classical solver advances the vorticity: it needs in_channels = "
                             "out_channels = 1 and one mean / std entry (a one-step model of 2-D "
                             "vorticity), got "
                             f"in_channels={in_channels}, out_channels={out_channels}, mean={mean}")
        if not (isinstance(snapshot_dt, int | float) and math.isfinite(snapshot_dt) and snapshot_dt > 0):
            raise ValueError(f"snapshot_dt must be a finite number > 0, got {snapshot_dt!r}")
        resolution = n if resolution is None else resolution
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < n \
                or resolution % 2:
            raise ValueError(f"resolution must be an even integer >= the data's n={n} (or None), "
                             f"got {resolution!r}")
        self.n, self.snapshot_dt = n, float(snapshot_dt)
        if solver_dt is None:
            solver_dt = COURANT * (2 * math.pi / resolution) / VELOCITY_SCALE
            solver_dt *= 2 / 3 if dealias == "three_halves" else 1
        self.solver = Kolmogorov2D(resolution, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                                   forcing_wavenumber=forcing_wavenumber, dt=solver_dt, dealias=dealias,
                                   closure=make_closure(closure, c))
        self.normalizer = ChannelNormalizer(mean, std)

    def coarse_step(self, z: torch.Tensor) -> torch.Tensor:
        """The solver over Δ: normalised z(t) (B, 1, n, n) -> normalised z(t + Δ) (B, 1, n, n)."""
        n = self.n
        if z.dim() != 4 or tuple(z.shape[1:]) != (1, n, n):
            raise ValueError(f"expected normalised vorticity of shape (B, 1, {n}, {n}), got {tuple(z.shape)}")
        w = self.normalizer.denormalize(z)[:, 0]
        fine = self.solver.n > n
        if fine:
            w = spectral_interpolate(w, self.solver.n)
        w = self.solver.advance(w, self.snapshot_dt, check_finite=False)
        if fine:
            w = spectral_filter(w, n)
        return self.normalizer.normalize(w.unsqueeze(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised z(t) (B, 1, n, n) -> normalised z(t + Δ) (B, 1, n, n)."""
        return self.coarse_step(z)
