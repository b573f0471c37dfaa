"""The turbulence domain: one-step surrogates of filtered 2-D Kolmogorov-flow DNS.

Data: a pseudo-spectral DNS at ``n_dns``² filtered to ``n_les``² (the "fDNS"), N trajectories
× T snapshots of vorticity, split by trajectory. Models: any registered operator
(``ifactformer_m``, ``ifactformer_o``, ``fno``, ``ifno``, the solver-in-the-loop
``hybrid_solver``) wrapped with the training split's per-channel normalisation. Objectives:
``one_step`` (relative L2, deterministic) or ``flow_matching`` (the engine's conditional flow
matching, a probabilistic surrogate).
Evaluation rolls the surrogate out autoregressively from test initial states and compares
its statistics with the filtered DNS.

Everything specific to the flow goes through a few methods that a subclass overrides (see
:class:`~flowsci_domains.turbulence.isotropic_domain.IsotropicTurbulence`, 3-D velocity):
:meth:`Turbulence.generate`, :meth:`Turbulence.write_data`, :meth:`Turbulence.trajectories`,
:meth:`Turbulence.spectrum`, :meth:`Turbulence.enstrophy`, :meth:`Turbulence.energy`,
:meth:`Turbulence.view` and :meth:`Turbulence.dns_seconds_per_step`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig, ModelConfig, SampleConfig
from flowsci.data import (
    BoundaryCondition,
    DataSplits,
    InMemoryDataset,
    load_split,
    read_meta,
    write_dataset,
)
from flowsci.data.lifecycle import LOADER_KEYS
from flowsci.ensemble_scores import crps, spread_skill_ratio
from flowsci.errors import ConfigError, DataError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci.registry import model_parameters
from flowsci_domains.turbulence import figures as plots
from flowsci_domains.turbulence.classical import DATA_ARGUMENTS
from flowsci_domains.turbulence.flow_metrics import correlation_time, velocity_profiles, vorticity_correlation
from flowsci_domains.turbulence.generate import dns_seconds_per_time_unit, generate_kolmogorov
from flowsci_domains.turbulence.objectives import FlowOneStepObjective, OneStepObjective, relative_l2
from flowsci_domains.turbulence.rollout import ensemble_rollout, flow_step, rollout, seconds_per_step
from flowsci_domains.turbulence.spectral import velocity_from_vorticity
from flowsci_domains.turbulence.statistics import energy_spectrum, enstrophy, kinetic_energy
from flowsci_domains.turbulence.surrogate import channel_statistics

log = logging.getLogger(__name__)

FIELD = "vorticity"
AttrValue = int | float | str | bool


@dataclasses.dataclass
class TurbulenceData(DataConfig):
    """YAML ``data:``: the generator of 2-D forced (Kolmogorov) turbulence and the split.

    Vorticity equation on [0, 2π)²: ∂ω/∂t + u·∇ω = ν∇²ω − drag·ω + A cos(k_f y); the DNS
    runs at ``n_dns``² and is filtered to ``n_les``² with a sharp spectral cut-off.
    """

    n_trajectories: int = 16
    n_val: int = 2                   # trajectories held out for validation
    n_test: int = 2                  # trajectories held out for testing (rollout initial states)
    n_snapshots: int = 201
    snapshot_dt: float = 0.2         # physical time between snapshots (the surrogate's step Δ)
    spinup_time: float = 30.0        # discarded before the first snapshot (3 drag times)
    n_dns: int = 128
    n_les: int = 32
    nu: float = 1e-3
    drag: float = 0.1
    forcing_amplitude: float = 4.0
    forcing_wavenumber: int = 4
    dt: float | None = None          # DNS time step; None: the solver's default
    spinup_n_dns: int | None = None  # a coarser grid for the spin-up but its last spinup_fine_time
    spinup_fine_time: float = 5.0    # physical time at n_dns before the first snapshot

    def __post_init__(self) -> None:
        if self.n_val < 1 or self.n_test < 1 or self.n_val + self.n_test >= self.n_trajectories:
            raise ValueError(f"need n_val >= 1, n_test >= 1 and n_val + n_test < n_trajectories, got "
                             f"n_val={self.n_val}, n_test={self.n_test}, "
                             f"n_trajectories={self.n_trajectories}")
        if self.n_snapshots < 2:
            raise ValueError("n_snapshots must be >= 2 (pairs of consecutive snapshots), "
                             f"got {self.n_snapshots}")
        if self.n_les % 2 or self.n_dns % 2 or self.n_les > self.n_dns:
            raise ValueError("n_les and n_dns must be even with n_les <= n_dns, "
                             f"got {self.n_les}, {self.n_dns}")

    def generator_parameters(self) -> dict[str, Any]:
        """Everything that determines the generated file (its name hashes these)."""
        skip = {*LOADER_KEYS, "n_val", "n_test"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclasses.dataclass
class TurbulenceObjective(FlowMatchingConfig):
    """YAML ``objective:``. ``kind: one_step`` regresses u(t + Δ) with a relative-L2 loss;
    ``kind: flow_matching`` learns p(u(t + Δ) | u(t)) with the engine (the other keys)."""

    kind: Literal["one_step", "flow_matching"] = "one_step"
    unroll: int = 1                  # one_step: train on K-step rollouts (1: plain one-step training)
    unroll_gradient: Literal["pushforward", "full"] = "pushforward"  # how the K steps are trained
    loss_on: Literal["field", "velocity"] = "field"  # one_step: the data's field, or its velocity
    input_noise: float = 0.0         # one_step: std of Gaussian noise on the input state (normalised units)

    def __post_init__(self) -> None:
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {self.unroll}")
        if self.unroll > 1 and self.kind != "one_step":
            raise ValueError("unroll > 1 (rollout training) needs kind: one_step")
        if self.input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {self.input_noise}")
        if self.input_noise > 0 and self.kind != "one_step":
            raise ValueError("input_noise needs kind: one_step")
        if self.loss_on != "field" and self.kind != "one_step":
            raise ValueError(f"loss_on={self.loss_on!r} needs kind: one_step (flow matching regresses "
                             "the velocity of its own path)")


@dataclasses.dataclass
class TurbulenceSample(SampleConfig):
    """YAML ``sample:``: the solver of the flow-matching surrogate (few steps per Δ)."""

    solver: str | dict[str, Any] = "midpoint"
    steps: int = 2


@dataclasses.dataclass
class TurbulenceEval(EvalConfig):
    """YAML ``eval:``. One-step errors on up to ``n_samples`` test pairs (evenly spread); rollouts of
    ``rollout_steps`` from the first snapshot of each test trajectory, errors at
    ``error_steps`` (where the test trajectory is long enough), spectra for k <= k_max
    (None: n_les / 4, half the filter cut-off), ``members`` per rollout for flow matching."""

    n_samples: int = 400
    rollout_steps: int = 300
    error_steps: list[int] = dataclasses.field(default_factory=lambda: [1, 10, 50, 200])
    short_statistics_steps: int = 50  # statistics also over the first steps of the rollout (_short)
    correlation_every: int = 5       # a rollout from every 5th test snapshot for the correlation time
    correlation_horizon: int = 20    # its length in steps (at most the remaining test trajectory)
    correlation_threshold: float = 0.95
    # classical baselines evaluated beside the model ({label: model spec}, e.g.
    # {smagorinsky_32: {name: classical_solver, closure: smagorinsky, c: 0.15}}): a comparison table
    # in the log, their metrics as baseline_<label>_<metric>, and the figure "comparison"
    baselines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    k_max: int | None = None
    members: int = 8
    timing_repeats: int = 10
    timing_batch: int = 16           # the batched speed measurement (trajectories at once)
    dns_timing_time: float = 1.0     # physical time of the DNS timing run at n_dns²


class Turbulence(DomainBase):
    """Filtered 2-D Kolmogorov turbulence: deterministic and flow-matching one-step surrogates.

    Fields are (..., C, *S) with C = 1 (vorticity) and S = (n, n)."""

    name = "turbulence"
    n_dims = 2                       # spatial dimensions of the fields
    file_prefix = "kolmogorov"       # generated data: <data dir>/turbulence/<prefix>_...h5
    view_name = "vorticity"          # the figure of 2-D snapshots (and the fields' name)
    view_label = "vorticity"         # what :meth:`view` draws (the colour bar)
    enstrophy_label = "enstrophy ½⟨ω²⟩"
    DataSettings = TurbulenceData
    ObjectiveSettings = TurbulenceObjective
    SampleSettings = TurbulenceSample
    EvalSettings = TurbulenceEval

    def __init__(self) -> None:
        super().__init__()
        self._dns_seconds: dict[tuple, float] = {}  # measured DNS timings, by batch and data

    # --- data ----------------------------------------------------------------------------

    def data_name(self, cfg: Config) -> str:
        d = cfg.data
        return f"{self.file_prefix}_{d.n_dns}to{d.n_les}_{d.n_trajectories}x{d.n_snapshots}_seed{d.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Run the DNS, filter it and write every trajectory to ``path`` (split by trajectory:
        train, val, test)."""
        d = cfg.data
        power = "²" if self.n_dims == 2 else "³"
        log.info("%s: %d trajectories x %d snapshots (%d%s DNS -> %d%s)", self.name, d.n_trajectories,
                 d.n_snapshots, d.n_dns, power, d.n_les, power)
        fields, times, attrs = self.generate(cfg, progress)
        n_train = d.n_trajectories - d.n_val - d.n_test
        bounds = {"train": (0, n_train), "val": (n_train, n_train + d.n_val),
                  "test": (n_train + d.n_val, d.n_trajectories)}
        self.write_data(cfg, path, {split: fields[a:b] for split, (a, b) in bounds.items()}, times, attrs)

    def generate(self, cfg: Config, progress: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, AttrValue]]:
        """The filtered DNS: fields (N, T, C, *S) float32, times (T,), generation attributes."""
        generated = generate_kolmogorov(**cfg.data.generator_parameters(), progress=progress)
        return generated.vorticity.unsqueeze(2), generated.times, generated.attrs

    def write_data(self, cfg: Config, path: Path, splits: dict[str, torch.Tensor], times: torch.Tensor,
                   attrs: dict[str, AttrValue]) -> None:
        """Write ``splits`` {split: (N, T, C, *S)} to ``path`` in flowsci's data schema: a t0
        field ``vorticity`` with dims [time, x, y]."""
        params = cfg.data.generator_parameters()
        n = cfg.data.n_les
        coords = np.arange(n) * (2 * np.pi / n)
        physics = ("nu", "drag", "forcing_amplitude", "forcing_wavenumber", "snapshot_dt")
        write_dataset(
            path, name="filtered 2-D Kolmogorov turbulence",
            splits={split: {FIELD: fields[:, :, 0]} for split, fields in splits.items()},
            orders={FIELD: 0}, dims={FIELD: ["time", "x", "y"]},
            dimensions={"time": times, "x": coords, "y": coords},
            boundary_conditions={"periodic": BoundaryCondition("periodic", ("x", "y"))},
            scalars={k: float(params[k]) for k in physics},
            attrs={"domain": "turbulence", **attrs}, n_spatial_dims=2, grid_type="cartesian")

    def trajectories(self, path: Path, split: str) -> torch.Tensor:
        """The ``split``'s trajectories as (N, T, C, *spatial) float32 (C = 1: vorticity)."""
        meta = read_meta(path)
        if FIELD not in meta.fields:
            raise DataError(f"{path}: the turbulence domain needs a t0 field '{FIELD}' with dims "
                            f"[time, x, y]; the file has {sorted(meta.fields) or 'no fields'}")
        return load_split(path, split, [FIELD])[FIELD].float().unsqueeze(2)

    # --- flow statistics (fields (..., C, *S); subclasses override) -------------------

    def spectrum(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shell-summed kinetic-energy spectrum: k = 1..n // 2 (K,) and E (..., K)."""
        return energy_spectrum(fields[..., 0, :, :])

    def enstrophy(self, fields: torch.Tensor) -> torch.Tensor:
        """1/2 <|curl u|^2> (...): here 1/2 <w^2> of the vorticity."""
        return enstrophy(fields[..., 0, :, :])

    def energy(self, fields: torch.Tensor) -> torch.Tensor:
        """Kinetic energy 1/2 <|u|^2> (...) of the velocity (here: implied by the vorticity)."""
        return kinetic_energy(fields[..., 0, :, :])

    def view(self, fields: torch.Tensor) -> torch.Tensor:
        """The 2-D picture (..., n, n) drawn in the snapshot figure: here the vorticity."""
        return fields[..., 0, :, :]

    def velocity(self, fields: torch.Tensor) -> torch.Tensor:
        """The velocity (..., 2, n, n) implied by the vorticity fields (..., 1, n, n)."""
        return velocity_from_vorticity(fields[..., 0, :, :])

    def dns_seconds_per_step(self, cfg: Config, attrs: dict[str, Any], batch: int) -> float:
        """Measured DNS wall-clock per trajectory for one surrogate step (``snapshot_dt`` of
        physical time) on a batch of ``batch`` trajectories at the data's n_dns."""
        physics = {k: attrs.get(k, getattr(cfg.data, k)) for k in
                   ("nu", "drag", "forcing_amplitude", "forcing_wavenumber", "dt")}
        seconds = dns_seconds_per_time_unit(n=int(attrs.get("n_dns", cfg.data.n_dns)), batch=batch,
                                            duration=cfg.eval.dns_timing_time, **physics)
        return seconds * float(attrs.get("snapshot_dt", cfg.data.snapshot_dt)) / batch

    def build_data(self, cfg: Config) -> DataSplits:
        """train: consecutive pairs {state, next} (P, C, *spatial) (plus ``future`` (P, K, C, *spatial),
        the next K snapshots, for pushforward training); val/test: whole trajectories
        {trajectory: (N, T, C, *spatial)} for rollouts."""
        path = self.data_file(cfg)
        train = self.trajectories(path, "train")
        k = cfg.objective.unroll
        if k >= train.shape[1]:
            raise ConfigError(f"objective.unroll={k} needs trajectories longer than {k} snapshots "
                              f"(data.n_snapshots={train.shape[1]})")
        starts = train.shape[1] - k  # windows u(t), u(t + Δ), ..., u(t + kΔ)
        pairs = {"state": train[:, :starts].flatten(0, 1), "next": train[:, 1:starts + 1].flatten(0, 1)}
        if k > 1:
            pairs["future"] = torch.stack([train[:, j:starts + j] for j in range(1, k + 1)],
                                          dim=2).flatten(0, 1)
        return DataSplits(train=InMemoryDataset(pairs),
                          val=InMemoryDataset({"trajectory": self.trajectories(path, "val")}),
                          test=InMemoryDataset({"trajectory": self.trajectories(path, "test")}),
                          meta=read_meta(path))

    def statistics(self, cfg: Config) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training trajectories (all snapshots)."""
        return channel_statistics(self.trajectories(self.data_file(cfg), "train").flatten(0, 1))

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered operator inside the surrogate wrapper with the training split's
        normalisation. A model coupled to the coarse solver (its constructor takes every one of
        :data:`~flowsci_domains.turbulence.hybrid.DATA_ARGUMENTS`, e.g. ``hybrid_solver``) also
        gets the data's grid, physics and normalisation from :meth:`solver_arguments`."""
        coupled = set(DATA_ARGUMENTS) <= set(model_parameters(cfg.model.name))
        for reserved in ("in_channels", "out_channels", *(DATA_ARGUMENTS if coupled else ())):
            if reserved in cfg.model.params:
                raise ConfigError(f"model.{reserved} is set by the turbulence domain from the data "
                                  "(and the objective); remove it from the config")
        operator = {"name": cfg.model.name, **cfg.model.params}
        if coupled:
            operator.update(self.solver_arguments(cfg))
        mean, std = self.statistics(cfg)
        wrapper = "one_step_surrogate" if cfg.objective.kind == "one_step" else "flow_surrogate"
        return build_model(wrapper, {"operator": operator, "mean": mean, "std": std})

    def solver_arguments(self, cfg: Config) -> dict[str, Any]:
        """Plain constructor arguments of a solver-coupled model: the data's grid size ``n``, Δ,
        ν, drag and forcing (the data file's generation attributes; ``data:`` where the file has
        none) and the normalisation ``mean``, ``std`` of :meth:`statistics`."""
        model = cfg.model.name
        if not isinstance(cfg.data, TurbulenceData):
            raise ConfigError(f"model.name={model!r} runs the 2-D Kolmogorov solver; the {self.name} domain "
                              "has other physics")
        if cfg.objective.kind != "one_step":
            raise ConfigError(f"model.name={model!r} is a deterministic one-step model; it needs "
                              f"objective.kind=one_step, got {cfg.objective.kind!r}")
        meta = read_meta(self.data_file(cfg))
        mean, std = self.statistics(cfg)

        def setting(key: str) -> Any:
            return meta.attrs.get(key, getattr(cfg.data, key))

        return {"n": int(meta.fields[FIELD].shape[-1]), "snapshot_dt": float(setting("snapshot_dt")),
                "nu": float(setting("nu")), "drag": float(setting("drag")),
                "forcing_amplitude": float(setting("forcing_amplitude")),
                "forcing_wavenumber": int(setting("forcing_wavenumber")), "mean": mean, "std": std}

    def build_objective(self, cfg: Config) -> OneStepObjective | FlowOneStepObjective:
        o = cfg.objective
        if o.kind == "one_step":
            return OneStepObjective(o.unroll, o.unroll_gradient,
                                    self.velocity if o.loss_on == "velocity" else None, o.input_noise)
        return FlowOneStepObjective(FlowMatching.from_config(cfg.objective))

    def is_flow(self, cfg: Config) -> bool:
        return cfg.objective.kind == "flow_matching"

    # --- evaluation ----------------------------------------------------------------------

    def step_function(self, model: torch.nn.Module, cfg: Config, generator: torch.Generator | None = None):
        """u(t) -> u(t + Δ): the model itself, or one flow-matching sample per state."""
        if self.is_flow(cfg):
            return flow_step(model, Sampler.from_config(cfg.sample), generator)
        return model

    def rollouts(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, torch.Tensor]:
        """Rollouts from the first snapshot of every test trajectory.

        Returns ``reference`` (N, T, C, *S) and ``rollout`` (M, N, rollout_steps + 1, C, *S)
        with M = 1 for deterministic surrogates and ``eval.members`` for flow matching.
        """
        reference = data.test.tensors["trajectory"]
        u0 = reference[:, 0]
        generator = torch.Generator().manual_seed(cfg.seed)
        step = self.step_function(model, cfg, generator)
        if self.is_flow(cfg):
            paths = ensemble_rollout(step, u0, cfg.eval.rollout_steps, cfg.eval.members)
        else:
            paths = rollout(step, u0, cfg.eval.rollout_steps).unsqueeze(0)
        return {"reference": reference, "rollout": paths}

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """One-step errors, rollout errors and statistics, and speed against the DNS, of the model
        and of every ``eval.baselines`` entry; the rollouts are kept for :meth:`figures`."""
        evaluation = self.evaluate_model(model, data, cfg)
        if not cfg.eval.baselines:
            return evaluation
        rows = {cfg.model.name: evaluation.metrics}
        for label, spec in cfg.eval.baselines.items():
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"{cfg.source}: eval.baselines.{label} must be a model mapping "
                                  f"{{name: ..., <arguments>}}, got {spec!r}")
            spec = dict(spec)
            baseline_cfg = dataclasses.replace(cfg, model=ModelConfig(spec.pop("name"), spec),
                                               eval=dataclasses.replace(cfg.eval, baselines={}))
            baseline = self.build_model(baseline_cfg).eval()
            rows[label] = self.evaluate_model(baseline, data, baseline_cfg).metrics
            evaluation.metrics.update({f"baseline_{label}_{key}": rows[label][key] for key in COMPARED
                                       if key in rows[label]})
        log.info("comparison on the test split (cost: seconds per unit physical time):\n%s",
                 comparison_table(rows, cfg.eval.timing_batch))
        evaluation.artifacts["comparison"] = rows
        return evaluation

    def evaluate_model(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """:meth:`evaluate` for the model alone."""
        e = cfg.eval
        reference = data.test.tensors["trajectory"]
        pairs = reference.shape[0] * (reference.shape[1] - 1)
        chosen = torch.linspace(0, pairs - 1, min(e.n_samples, pairs)).long()  # spread over all test pairs
        state = reference[:, :-1].flatten(0, 1)[chosen]
        target = reference[:, 1:].flatten(0, 1)[chosen]
        metrics: dict[str, float] = {}
        generator = torch.Generator().manual_seed(cfg.seed)
        step = self.step_function(model, cfg, generator)
        with torch.no_grad():
            if self.is_flow(cfg):
                ensemble = torch.stack([_chunked(step, state) for _ in range(e.members)])
                metrics["one_step_rel_l2"] = float(relative_l2(ensemble[0], target).mean())
                metrics["one_step_mean_rel_l2"] = float(relative_l2(ensemble.mean(0), target).mean())
                metrics["one_step_crps"] = float(crps(ensemble, target))
                metrics["one_step_spread_skill"] = float(spread_skill_ratio(ensemble, target))
            else:
                metrics["one_step_rel_l2"] = float(relative_l2(_chunked(step, state), target).mean())
        metrics["persistence_rel_l2"] = float(relative_l2(state, target).mean())

        runs = self.rollouts(model, data, cfg)
        paths = runs["rollout"]
        available = reference.shape[1] - 1
        for s in sorted(set(e.error_steps)):
            if 1 <= s <= min(available, e.rollout_steps):
                truth = reference[:, s].expand_as(paths[:, :, s])
                metrics[f"rollout_rel_l2_step{s}"] = float(relative_l2(paths[:, :, s].flatten(0, 1),
                                                                       truth.flatten(0, 1)).mean())
                if self.is_flow(cfg):
                    metrics[f"rollout_crps_step{s}"] = float(crps(paths[:, :, s], reference[:, s]))
                    metrics[f"rollout_spread_skill_step{s}"] = float(
                        spread_skill_ratio(paths[:, :, s], reference[:, s]))
        k_max = self.k_max(cfg, data)
        metrics.update(rollout_statistics(paths[:, :, 1:], reference, k_max, self))
        short = rollout_statistics(paths[:, :, 1:e.short_statistics_steps + 1], reference, k_max, self)
        metrics.update({f"{key}_short": value for key, value in short.items()})
        decorrelation = self.decorrelation(step, reference, cfg, data)
        metrics.update(decorrelation.pop("metrics"))
        if self.n_dims == 2:
            metrics.update(profile_errors(paths[:, :, 1:], reference))
        metrics.update(self.speed(model, reference[:, 0], cfg, data))
        return Evaluation(metrics, {"rollouts": runs, "decorrelation": decorrelation})

    def decorrelation(self, step, reference: torch.Tensor, cfg: Config, data: DataSplits) -> dict[str, Any]:
        """Rollouts of ``eval.correlation_horizon`` steps from every ``eval.correlation_every``-th
        test snapshot: the correlation time (Kochkov et al. 2021; the first time the correlation of
        the view (vorticity, u_x plane in 3-D) with the filtered DNS falls below the threshold),
        and the mean relative L2 error and correlation against time.

        Returns ``metrics`` and, for the figure, ``times`` (H + 1,), ``error`` and ``correlation``
        (H + 1,) averaged over the initial conditions."""
        e = cfg.eval
        dt = float(data.meta.attrs.get("snapshot_dt", cfg.data.snapshot_dt))
        horizon = min(e.correlation_horizon, reference.shape[1] - 1)
        starts = range(0, reference.shape[1] - horizon, e.correlation_every)
        truth = torch.cat([reference[:, s:s + horizon + 1] for s in starts])      # (I, H + 1, C, *S)
        with torch.no_grad():
            paths = rollout(step, truth[:, 0], horizon)
        view_pred, view_ref = self.view(paths), self.view(truth)
        times = dt * torch.arange(horizon + 1, dtype=torch.float64)
        correlation = vorticity_correlation(view_pred, view_ref)                  # (I, H + 1)
        decorrelated = correlation_time(view_pred, view_ref, times, e.correlation_threshold)
        error = relative_l2(paths.flatten(0, 1)[:, None], truth.flatten(0, 1)[:, None])
        metrics = {"correlation_time": float(decorrelated.mean()),
                   "correlation_time_min": float(decorrelated.min()),
                   "correlation_initial_conditions": float(len(decorrelated)),
                   "correlation_time_horizon": float(times[-1])}
        return {"metrics": metrics, "times": times, "correlation": correlation.nanmean(0),
                "error": error.reshape(correlation.shape).mean(0)}

    @staticmethod
    def k_max(cfg: Config, data: DataSplits) -> int:
        n = data.test.tensors["trajectory"].shape[-1]
        return cfg.eval.k_max or n // 4

    def speed(self, model: torch.nn.Module, u0: torch.Tensor, cfg: Config, data: DataSplits
              ) -> dict[str, float]:
        """Wall-clock per trajectory of one surrogate step vs the DNS for the same physical time,
        one trajectory at a time and ``eval.timing_batch`` trajectories at once."""
        step = self.step_function(model, cfg)
        metrics = {"threads": float(torch.get_num_threads())}
        dt = float(data.meta.attrs.get("snapshot_dt", cfg.data.snapshot_dt))
        for batch, suffix in ((1, ""), (cfg.eval.timing_batch, f"_batch{cfg.eval.timing_batch}")):
            states = u0[:1].expand(batch, *u0.shape[1:]).contiguous()
            surrogate = seconds_per_step(step, states, cfg.eval.timing_repeats) / batch
            key = (batch, tuple(sorted(data.meta.attrs.items())))
            if key not in self._dns_seconds:  # measured once per domain instance and data
                self._dns_seconds[key] = self.dns_seconds_per_step(cfg, data.meta.attrs, batch)
            dns = self._dns_seconds[key]
            metrics.update({f"seconds_per_step{suffix}": surrogate, f"dns_seconds_per_step{suffix}": dns,
                            f"seconds_per_time_unit{suffix}": surrogate / dt,
                            f"speedup{suffix}": dns / surrogate})
        return metrics

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        """Snapshots, spectra and statistics of the rollouts (those of ``evaluation`` when given),
        the ensemble's skill (flow matching) or the attention kernels (IFactFormer)."""
        runs = evaluation.artifacts["rollouts"] if evaluation is not None else self.rollouts(model, data, cfg)
        paths, reference = runs["rollout"], runs["reference"]
        dt = float(data.meta.attrs.get("snapshot_dt", cfg.data.snapshot_dt))
        label = cfg.model.name + (" + flow matching" if self.is_flow(cfg) else "")
        statistics = [(self.enstrophy, self.enstrophy_label), (self.energy, "kinetic energy ½⟨|u|²⟩")]
        figures = {
            self.view_name: plots.field_snapshots(self.view(reference[0]), self.view(paths[0, 0]), label,
                                                  self.view_label),
            "spectrum": plots.spectra(reference, paths[:, :, 1:], self.k_max(cfg, data), label,
                                      self.spectrum),
            "statistics": plots.time_series(reference, paths, dt, label, statistics),
        }
        decorrelation = (evaluation.artifacts.get("decorrelation") if evaluation is not None
                         else self.decorrelation(self.step_function(model, cfg), reference, cfg, data))
        figures["decorrelation"] = plots.decorrelation(decorrelation, label, cfg.eval.correlation_threshold)
        if self.n_dims == 2:
            truth, rolled = (velocity_profiles(self.view(fields)) for fields in (reference, paths[:, :, 1:]))
            figures["profiles"] = plots.velocity_profiles(truth, rolled, label)
        if evaluation is not None and "comparison" in evaluation.artifacts:
            figures["comparison"] = plots.cost_accuracy(evaluation.artifacts["comparison"],
                                                        cfg.eval.timing_batch)
        if self.is_flow(cfg):
            figures["ensemble"] = plots.ensemble_skill(reference, paths, dt, label, self.view_name)
        elif hasattr(model.operator, "attention_kernels"):
            kernels = model.operator.attention_kernels(model.normalizer.normalize(reference[:1, 0]))
            figures["attention_kernels"] = plots.attention_kernels(kernels, label)
        return figures

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        """``n`` rollouts of ``eval.rollout_steps`` from test initial states (cycled)."""
        reference = data.test.tensors["trajectory"]
        u0 = reference[torch.arange(n) % reference.shape[0], 0]
        step = self.step_function(model, cfg, torch.Generator().manual_seed(cfg.seed))
        return {"initial": u0,
                "rollout": rollout(step, u0, cfg.eval.rollout_steps, progress=sys.stderr.isatty())}


def rollout_statistics(paths: torch.Tensor, reference: torch.Tensor, k_max: int,
                       flow: Turbulence | None = None) -> dict[str, float]:
    """Long-run statistics of rollouts (M, N, S, C, *S) against the reference trajectories
    (N, T, C, *S): time-averaged spectrum for 1 <= k <= k_max, mean enstrophy and energy
    ratios, finiteness and the peak enstrophy. ``flow`` (a domain) measures the fields; None:
    2-D vorticity (:class:`Turbulence`)."""
    flow = flow or Turbulence()
    u_model = paths.flatten(0, 2).double()
    u_ref = reference.flatten(0, 1).double()
    finite = bool(torch.isfinite(u_model).all())
    k, e_ref = flow.spectrum(u_ref)
    _, e_model = flow.spectrum(u_model)
    shells = (k >= 1) & (k <= k_max)
    ratio = e_model.mean(0)[shells] / e_ref.mean(0)[shells]
    z_ref, z_model = flow.enstrophy(u_ref), flow.enstrophy(u_model)
    return {
        "rollout_finite": float(finite),
        "spectrum_max_rel_error": float((ratio - 1).abs().max()) if finite else float("inf"),
        "spectrum_ratio_min": float(ratio.min()),
        "spectrum_ratio_max": float(ratio.max()),
        "enstrophy_ratio": float(z_model.mean() / z_ref.mean()),
        "energy_ratio": float(flow.energy(u_model).mean() / flow.energy(u_ref).mean()),
        "peak_enstrophy_ratio": float(z_model.max() / z_ref.max()),
    }


# The metrics of a baseline kept in the model's evaluation (as baseline_<label>_<metric>)
COMPARED = ("one_step_rel_l2", "correlation_time", "spectrum_max_rel_error_short", "enstrophy_ratio_short",
            "spectrum_max_rel_error", "enstrophy_ratio", "energy_ratio", "seconds_per_time_unit")


def comparison_table(rows: dict[str, dict[str, float]], batch: int) -> str:
    """A plain-text table of the model and its baselines ({label: metrics})."""
    columns = [("one_step_rel_l2", "one-step", "{:.3f}"), ("correlation_time", "corr. time", "{:.2f}"),
               ("spectrum_max_rel_error_short", "spectrum err (short)", "{:.2f}"),
               ("enstrophy_ratio", "enstrophy ratio", "{:.2f}"),
               ("seconds_per_time_unit", "s/time unit", "{:.4f}"),
               (f"seconds_per_time_unit_batch{batch}", f"s/time unit, batch {batch}", "{:.4f}")]
    width = max(len(label) for label in rows) + 2
    lines = ["".ljust(width) + "".join(title.rjust(22) for _, title, _ in columns)]
    for label, metrics in rows.items():
        cells = (fmt.format(metrics[key]) if key in metrics else "-" for key, _, fmt in columns)
        lines.append(label.ljust(width) + "".join(cell.rjust(22) for cell in cells))
    return "\n".join(lines)


def profile_errors(paths: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Relative L2 errors over y of the x- and time-averaged velocity profiles (mean U(y), rms
    u'(y), v'(y) and <u'v'>(y)) of rollouts (M, N, S, 1, n, n) against the reference vorticity
    (N, T, 1, n, n)."""
    model = velocity_profiles(paths[..., 0, :, :].flatten(0, 1).double())
    truth = velocity_profiles(reference[..., 0, :, :].double())
    return {f"profile_rel_error_{name}": float((getattr(model, name) - getattr(truth, name)).norm()
                                               / getattr(truth, name).norm())
            for name in ("mean_u", "rms_u", "rms_v", "reynolds_stress")}


def _chunked(step, states: torch.Tensor, size: int = 64) -> torch.Tensor:
    """``step`` over ``states`` in chunks of ``size`` (bounded memory)."""
    return torch.cat([step(chunk) for chunk in states.split(size)])
