"""Solver-in-the-loop hybrid: the coarse pseudo-spectral solver plus a learned correction.

One surrogate step on the LES grid, as in the "learned correction" of Um et al. (NeurIPS 2020,
"Solver-in-the-loop") and Kochkov et al. (PNAS 2021, "Machine learning-accelerated
computational fluid dynamics"):

    w* = S_Δ(w(t)),    w(t + Δ) = w* + σ C((w* - μ) / σ),

with S_Δ the coarse :class:`~flowsci_domains.turbulence.spectral.Kolmogorov2D` (no closure,
the data's ν, drag and forcing) advanced over the snapshot interval Δ, μ and σ the training
split's vorticity mean and std, and C an IFactFormer-m whose output layer starts at zero: the
untrained model is exactly the coarse solver. The correction is applied once per Δ (the solver
takes several internal steps), and the solver step is plain torch, so gradients reach u(t) too
(e.g. for losses through several hybrid steps).

Like every operator of the turbulence domain the hybrid maps normalised fields to normalised
fields inside :class:`~flowsci_domains.turbulence.surrogate.OneStepSurrogate`; it denormalises
with the same statistics to run the solver in physical units. The domain passes the data's
settings as plain constructor arguments (:data:`DATA_ARGUMENTS`), so a checkpoint rebuilds it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci_domains.turbulence.ifactformer import IFactFormerM
from flowsci_domains.turbulence.spectral import Kolmogorov2D
from flowsci_domains.turbulence.surrogate import ChannelNormalizer

# Constructor arguments that the turbulence domain sets from the data (an error in a config).
DATA_ARGUMENTS = ("n", "snapshot_dt", "nu", "drag", "forcing_amplitude", "forcing_wavenumber", "mean", "std")


class HybridSolver(nn.Module):
    """Coarse solver step plus learned correction: normalised vorticity (B, 1, n, n) -> (B, 1, n, n).

    Set by the domain from the data: ``n`` (grid points per side), ``snapshot_dt`` (Δ), ``nu``,
    ``drag``, ``forcing_amplitude``, ``forcing_wavenumber``, ``mean`` and ``std`` (one entry,
    the vorticity). The coarse solver's numerics: ``solver_dt`` (None: Kolmogorov2D's default at
    n) and ``dealias`` ("three_halves" keeps exactly the modes of the data's filter). The other
    arguments are the corrector's (:class:`~flowsci_domains.turbulence.ifactformer.IFactFormerM`).
    """

    def __init__(self, in_channels: int, out_channels: int, n: int, snapshot_dt: float, nu: float,
                 drag: float, forcing_amplitude: float, forcing_wavenumber: int, mean: list[float],
                 std: list[float], solver_dt: float | None = None, dealias: str = "three_halves",
                 dim: int = 48, heads: int = 4, dim_head: int = 32, kernel_multiplier: int = 3,
                 n_layer: int = 6, length: float = 2 * math.pi, fourier_scale: float = 8.0):
        super().__init__()
        if in_channels != 1 or out_channels != 1 or len(mean) != 1:
            raise ValueError("the hybrid solver advances the vorticity: it needs in_channels = "
                             "out_channels = 1 and one mean / std entry (a one-step surrogate of 2-D "
                             "vorticity), got "
                             f"in_channels={in_channels}, out_channels={out_channels}, mean={mean}")
        if not (isinstance(snapshot_dt, int | float) and math.isfinite(snapshot_dt) and snapshot_dt > 0):
            raise ValueError(f"snapshot_dt must be a finite number > 0, got {snapshot_dt!r}")
        self.snapshot_dt = float(snapshot_dt)
        self.solver = Kolmogorov2D(n, nu=nu, drag=drag, forcing_amplitude=forcing_amplitude,
                                   forcing_wavenumber=forcing_wavenumber, dt=solver_dt, dealias=dealias)
        self.normalizer = ChannelNormalizer(mean, std)
        self.corrector = IFactFormerM(1, 1, 2, dim, heads, dim_head, kernel_multiplier, n_layer, length,
                                      fourier_scale)
        output_layer = self.corrector.project[-1]
        nn.init.zeros_(output_layer.weight)
        nn.init.zeros_(output_layer.bias)

    def coarse_step(self, z: torch.Tensor) -> torch.Tensor:
        """The solver alone over Δ: normalised z(t) (B, 1, n, n) -> normalised S_Δ (B, 1, n, n)."""
        n = self.solver.n
        if z.dim() != 4 or tuple(z.shape[1:]) != (1, n, n):
            raise ValueError(f"expected normalised vorticity of shape (B, 1, {n}, {n}), got {tuple(z.shape)}")
        w = self.normalizer.denormalize(z)[:, 0]
        advanced = self.solver.advance(w, self.snapshot_dt, check_finite=False)
        return self.normalizer.normalize(advanced.unsqueeze(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised z(t) (B, 1, n, n) -> normalised z(t + Δ) = S_Δ + C(S_Δ) (B, 1, n, n)."""
        coarse = self.coarse_step(z)
        return coarse + self.corrector(coarse)
