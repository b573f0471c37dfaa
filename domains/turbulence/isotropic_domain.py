"""The turbulence3d domain: one-step surrogates of filtered 3-D forced isotropic turbulence.

The same surrogates, objectives and evaluation as :class:`~flowsci_domains.turbulence.domain.Turbulence`
on a second data set: the velocity u (3 channels) of the forced isotropic DNS of
:mod:`~flowsci_domains.turbulence.isotropic3d` at ``n_dns``³ cut to ``n_les``³. Fields are
(..., 3, n, n, n); the data file holds them as a t1 field ``velocity`` with dims
[time, x, y, z] (components last). The snapshot figure (``velocity.png``) shows u_x on the
plane z = 0.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowsci.config import Config, DataConfig
from flowsci.data import BoundaryCondition, load_split, read_meta, write_dataset
from flowsci.errors import DataError
from flowsci_domains.turbulence.domain import AttrValue, Turbulence, TurbulenceData, TurbulenceEval
from flowsci_domains.turbulence.isotropic3d import (
    Isotropic3D,
    energy_spectrum_3d,
    enstrophy_3d,
    generate_isotropic3d,
    random_solenoidal_velocity,
)

FIELD = "velocity"


@dataclasses.dataclass
class IsotropicTurbulenceData(DataConfig):
    """YAML ``data:``: the generator of 3-D forced isotropic turbulence and the split.

    du/dt = P(u x curl u) + nu lap u + f on [0, 2π)³, constant-power forcing on 0 < |k| <= k_f;
    the DNS runs at ``n_dns``³ and is cut to ``n_les``³ with a sharp spectral filter.
    """

    n_trajectories: int = 8
    n_val: int = 1                   # trajectories held out for validation
    n_test: int = 1                  # trajectories held out for testing (rollout initial states)
    n_snapshots: int = 61
    snapshot_dt: float = 0.5         # physical time between snapshots (the surrogate's step Δ)
    spinup_time: float = 20.0        # discarded before the first snapshot
    n_dns: int = 32
    n_les: int = 16
    nu: float = 0.025
    energy_injection_rate: float = 0.1
    forcing_wavenumber: float = 2.0
    dt: float | None = None          # DNS time step; None: the solver's default

    __post_init__ = TurbulenceData.__post_init__          # the same split and grid checks
    generator_parameters = TurbulenceData.generator_parameters


@dataclasses.dataclass
class IsotropicTurbulenceEval(TurbulenceEval):
    """YAML ``eval:`` (see :class:`TurbulenceEval`), defaults sized for the 61-snapshot data."""

    rollout_steps: int = 60
    error_steps: list[int] = dataclasses.field(default_factory=lambda: [1, 5, 20, 60])


class IsotropicTurbulence(Turbulence):
    """Filtered 3-D forced isotropic turbulence: fields are the velocity (..., 3, n, n, n)."""

    name = "turbulence3d"
    DataSettings = IsotropicTurbulenceData
    EvalSettings = IsotropicTurbulenceEval
    n_dims = 3
    file_prefix = "isotropic3d"
    view_name = "velocity"
    view_label = "u_x at z = 0"
    enstrophy_label = "enstrophy ½⟨|ω|²⟩"

    def generate(self, cfg: Config, progress: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, AttrValue]]:
        """The filtered DNS: velocity (N, T, 3, n, n, n) float32, times (T,), attributes."""
        generated = generate_isotropic3d(**cfg.data.generator_parameters(), progress=progress)
        return generated.velocity, generated.times, generated.attrs

    def write_data(self, cfg: Config, path: Path, splits: dict[str, torch.Tensor], times: torch.Tensor,
                   attrs: dict[str, AttrValue]) -> None:
        """Write ``splits`` {split: (N, T, 3, n, n, n)} as a t1 field ``velocity`` with dims
        [time, x, y, z], stored (N, T, n, n, n, 3)."""
        params = cfg.data.generator_parameters()
        n = cfg.data.n_les
        coords = np.arange(n) * (2 * np.pi / n)
        physics = ("nu", "energy_injection_rate", "forcing_wavenumber", "snapshot_dt")
        write_dataset(
            path, name="filtered 3-D forced isotropic turbulence",
            splits={split: {FIELD: fields.permute(0, 1, 3, 4, 5, 2).contiguous()}
                    for split, fields in splits.items()},
            orders={FIELD: 1}, dims={FIELD: ["time", "x", "y", "z"]},
            dimensions={"time": times, "x": coords, "y": coords, "z": coords},
            boundary_conditions={"periodic": BoundaryCondition("periodic", ("x", "y", "z"))},
            scalars={k: float(params[k]) for k in physics},
            attrs={"domain": self.name, **attrs}, n_spatial_dims=3, grid_type="cartesian")

    def trajectories(self, path: Path, split: str) -> torch.Tensor:
        """The ``split``'s trajectories as (N, T, 3, n, n, n) float32 (channels: u_x, u_y, u_z)."""
        meta = read_meta(path)
        info = meta.fields.get(FIELD)
        if info is None or info.order != 1:
            raise DataError(f"{path}: the turbulence3d domain needs a t1 field '{FIELD}' with dims "
                            f"[time, x, y, z]; the file has {sorted(meta.fields) or 'no fields'}")
        return load_split(path, split, [FIELD])[FIELD].float().permute(0, 1, 5, 2, 3, 4).contiguous()

    def spectrum(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shell-summed kinetic-energy spectrum of the velocity: k = 1..n // 2 (K,), E (..., K)."""
        return energy_spectrum_3d(fields)

    def enstrophy(self, fields: torch.Tensor) -> torch.Tensor:
        """1/2 <|curl u|^2> (...) of the (divergence-free) velocity."""
        return enstrophy_3d(fields)

    def energy(self, fields: torch.Tensor) -> torch.Tensor:
        """Kinetic energy 1/2 <|u|^2> (...)."""
        return 0.5 * fields.square().sum(dim=-4).mean(dim=(-3, -2, -1))

    def velocity(self, fields: torch.Tensor) -> torch.Tensor:
        """The fields are the velocity (..., 3, n, n, n)."""
        return fields

    def view(self, fields: torch.Tensor) -> torch.Tensor:
        """u_x on the plane z = 0: (..., n, n) over (x, y)."""
        return fields[..., 0, :, :, 0]

    def dns_seconds_per_step(self, cfg: Config, attrs: dict[str, Any], batch: int) -> float:
        """Measured DNS wall-clock per trajectory for ``snapshot_dt`` of physical time, on a batch
        of ``batch`` random solenoidal fields at the data's n_dns (``eval.dns_timing_time`` timed)."""
        physics = {k: attrs.get(k, getattr(cfg.data, k)) for k in
                   ("nu", "energy_injection_rate", "forcing_wavenumber", "dt")}
        solver = Isotropic3D(int(attrs.get("n_dns", cfg.data.n_dns)), **physics)
        u = random_solenoidal_velocity(batch, solver.n, torch.Generator().manual_seed(0))
        u = solver.advance(u, solver.dt)                     # warm-up: operators built, FFT plans made
        duration = cfg.eval.dns_timing_time
        start = time.perf_counter()
        solver.advance(u, duration)
        seconds = (time.perf_counter() - start) / duration
        return seconds * float(attrs.get("snapshot_dt", cfg.data.snapshot_dt)) / batch
