"""Solver-in-the-loop hybrid: the coarse pseudo-spectral solver plus a learned correction.

One surrogate step on the LES grid, as in the "learned correction" of Um et al. (NeurIPS 2020,
"Solver-in-the-loop") and Kochkov et al. (PNAS 2021, "Machine learning-accelerated
computational fluid dynamics"): the snapshot interval Δ is split into ``corrections`` = m equal
parts h = Δ / m, and each is

    w* = S_h(w),    w <- w* + σ C((w* - μ) / σ),

with S_h the coarse :class:`~flowsci_domains.turbulence.classical.ClassicalSolver` (by default
no closure; the data's ν, drag and forcing) advanced over h (several internal solver steps),
μ and σ the training split's vorticity mean and std, and C one operator (an IFactFormer-m or an
FNO, ``corrector``) shared by the m parts whose output layer starts at zero: the untrained model
is exactly the coarse solver. Kochkov et al. correct every solver step; m trades the
corrector's cost against how small and systematic each correction is. The solver step is plain
torch, so gradients reach w(t) too (losses through several hybrid steps,
``objective.unroll_gradient: full``).

Like every operator of the turbulence domain the hybrid maps normalised fields to normalised
fields inside :class:`~flowsci_domains.turbulence.surrogate.OneStepSurrogate`; it denormalises
with the same statistics to run the solver in physical units. The domain passes the data's
settings as plain constructor arguments (:data:`DATA_ARGUMENTS`), so a checkpoint rebuilds it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowsci.plugins import build_model
from flowsci_domains.turbulence.classical import DATA_ARGUMENTS, ClassicalSolver

__all__ = ["DATA_ARGUMENTS", "DEFAULT_CORRECTOR", "HybridSolver"]

DEFAULT_CORRECTOR = {"name": "ifactformer_m", "dim": 48, "heads": 4, "dim_head": 32, "kernel_multiplier": 3,
                     "n_layer": 6}


class HybridSolver(ClassicalSolver):
    """Coarse solver step plus learned correction: normalised vorticity (B, 1, n, n) -> (B, 1, n, n).

    The data's settings and the solver's choices (``closure``, ``c``, ``resolution``,
    ``solver_dt``, ``dealias``) are :class:`ClassicalSolver`'s; ``corrections`` m splits Δ into m
    solver-then-correction parts; ``corrector`` is the correction's registered operator and its
    arguments, ``{name: ..., <arguments>}`` (channels set here; None: :data:`DEFAULT_CORRECTOR`),
    any operator whose last layer is ``project[-1]`` (``ifactformer_m``, ``ifactformer_o``,
    ``fno``, ``ifno``): that layer starts at zero.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int, snapshot_dt: float, nu: float,
                 drag: float, forcing_amplitude: float, forcing_wavenumber: int, mean: list[float],
                 std: list[float], closure: str = "none", c: float | None = None,
                 resolution: int | None = None, solver_dt: float | None = None,
                 dealias: str = "three_halves", corrections: int = 1,
                 corrector: dict[str, Any] | None = None):
        if isinstance(corrections, bool) or not isinstance(corrections, int) or corrections < 1:
            raise ValueError(f"corrections must be an integer >= 1, got {corrections!r}")
        super().__init__(in_channels, out_channels, n, snapshot_dt / corrections, nu, drag,
                         forcing_amplitude, forcing_wavenumber, mean, std, closure, c, resolution,
                         solver_dt, dealias)
        self.corrections = corrections
        spec = dict(DEFAULT_CORRECTOR if corrector is None else corrector)
        if "name" not in spec or {"in_channels", "out_channels"} & set(spec):
            raise ValueError("corrector must be a mapping {name: <registered operator>, <arguments>} "
                             f"without in_channels / out_channels (both 1 here), got {corrector!r}")
        self.corrector = build_model(spec.pop("name"), {"in_channels": 1, "out_channels": 1, **spec})
        output_layer = getattr(self.corrector, "project", [None])[-1]
        if not isinstance(output_layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise ValueError(f"corrector {corrector!r}: its last layer must be project[-1] (a Linear or "
                             "convolution, zeroed so that training starts from the plain solver)")
        nn.init.zeros_(output_layer.weight)
        if output_layer.bias is not None:
            nn.init.zeros_(output_layer.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised z(t) (B, 1, n, n) -> normalised z(t + Δ) (B, 1, n, n): ``corrections``
        times z <- S_h(z) + C(S_h(z)) with h = Δ / corrections."""
        for _ in range(self.corrections):
            coarse = self.coarse_step(z)
            z = coarse + self.corrector(coarse)
        return z
