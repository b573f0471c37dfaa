"""The ``sparse_flow`` domain: 2-D Navier–Stokes vorticity everywhere in space and time from its
initial state on a sparse set of points (Janny et al., ICLR 2024).

Data: the DINo set-up (Gaussian-random-field initial vorticity, ν = 1e-3, the sin/cos forcing on
the unit torus) from the turbulence domain's pseudo-spectral solver, stored on the full n × n grid
at every frame (:mod:`~flowsci_domains.sparse_flow.navier_stokes`). The observation is chosen
here, not in the file: a fixed random fraction ``space_sub`` of the grid points (``mask_seed``)
and every ``time_sub``-th frame.

Models: ``sparse_observer`` (System 1, a recurrent GNN on the observed points, and System 2, the
attention observer that answers any (x, y, t)), trained with ``objective.kind: observer``; and the
baseline ``sparse_autoregressive`` (the System-1 GNN stepping the observed nodes from one observed
frame to the next), trained with ``objective.kind: rollout`` and read on the full grid through
cubic interpolation in space and linear in time. Evaluation: the four In/Out errors on the test
trajectories (:mod:`~flowsci_domains.sparse_flow.evaluation`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig, SampleConfig
from flowsci.data import BoundaryCondition, DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.errors import ConfigError, DataError
from flowsci.flow_matching import FlowMatching, Sampler
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci.sources import StandardNormal
from flowsci_domains.sparse_flow import figures as plots
from flowsci_domains.sparse_flow.evaluation import (
    field_errors,
    forecast_error,
    observer_fields,
    rollout_fields,
    truth_interpolation,
)
from flowsci_domains.sparse_flow.flow_ensemble import (
    CONDITION_CHANNELS,
    ensemble_fields,
    ensemble_metrics,
    training_pairs,
)
from flowsci_domains.sparse_flow.navier_stokes import generate_navier_stokes
from flowsci_domains.sparse_flow.objectives import (
    Observation,
    ObserverObjective,
    RolloutObjective,
    SparseFlowObjective,
)
from flowsci_domains.sparse_flow.observations import grid_positions, observed_frames, observed_points

log = logging.getLogger(__name__)

FIELD = "vorticity"
MODELS = {"observer": "sparse_observer", "rollout": "sparse_autoregressive", "flow": "concat_conditioned"}


@dataclasses.dataclass
class SparseFlowSettings:
    """YAML ``domain:``: what is observed. ``space_sub``: the fraction of grid points observed
    (a fixed random set drawn with ``mask_seed``); ``time_sub``: every time_sub-th frame is
    observed; ``anchor_every``: System 1's anchors every anchor_every observed frames (δ)."""

    space_sub: float = 0.10
    time_sub: int = 2
    mask_seed: int = 0
    anchor_every: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.space_sub <= 1:
            raise ValueError(f"space_sub must be in (0, 1], got {self.space_sub}")
        if self.time_sub < 1 or self.anchor_every < 1:
            raise ValueError(f"time_sub and anchor_every must be >= 1, got {self.time_sub}, "
                             f"{self.anchor_every}")


@dataclasses.dataclass
class SparseFlowData(DataConfig):
    """YAML ``data:``: the Navier–Stokes generator (unit torus, vorticity form,
    dω/dt + u·∇ω = ν∇²ω + A (sin 2π(x + y) + cos 2π(x + y))) and the split by trajectory."""

    n_trajectories: int = 88
    n_val: int = 8
    n_test: int = 16
    n: int = 64                      # grid points per side
    n_frames: int = 21
    frame_dt: float = 1.0            # physical time between frames
    nu: float = 1e-3
    forcing_amplitude: float = 0.1
    alpha: float = 2.5               # initial Gaussian random field: spectrum (4π²|k|² + τ²)^(-α)
    tau: float = 7.0

    def __post_init__(self) -> None:
        if self.n_val < 1 or self.n_test < 1 or self.n_val + self.n_test >= self.n_trajectories:
            raise ValueError(f"need n_val >= 1, n_test >= 1 and n_val + n_test < n_trajectories, got "
                             f"n_val={self.n_val}, n_test={self.n_test}, "
                             f"n_trajectories={self.n_trajectories}")
        if self.n_frames < 2 or self.n < 8:
            raise ValueError(f"need n_frames >= 2 and n >= 8, got n_frames={self.n_frames}, n={self.n}")


@dataclasses.dataclass
class SparseFlowSample(SampleConfig):
    """YAML ``sample:``: the solver of the flow ensemble."""

    solver: str | dict[str, Any] = "midpoint"
    steps: int = 4


@dataclasses.dataclass
class SparseFlowEval(EvalConfig):
    """YAML ``eval:``: the test trajectories reconstructed (None: all), the query chunk, the
    baseline's spatial interpolation, the flow ensemble's members and the frames drawn in the
    figure (None: four spread ones)."""

    n_trajectories: int | None = None
    chunk: int = 4096
    members: int = 8
    interpolation: Literal["cubic", "linear"] = "cubic"
    figure_frames: list[int] | None = None


class SparseFlow(DomainBase):
    """Continuous vorticity fields from sparse observations: Janny et al.'s observer and the
    interpolated autoregressive GNN."""

    name = "sparse_flow"
    Settings = SparseFlowSettings
    DataSettings = SparseFlowData
    ObjectiveSettings = SparseFlowObjective
    SampleSettings = SparseFlowSample
    EvalSettings = SparseFlowEval

    def __init__(self) -> None:
        super().__init__()
        self._statistics: dict[tuple, tuple[float, float]] = {}

    # --- data ----------------------------------------------------------------------------

    def data_name(self, cfg: Config) -> str:
        d = cfg.data
        return f"navier_stokes_{d.n}_{d.n_trajectories}x{d.n_frames}_seed{d.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Solve every trajectory and write them split by trajectory (train, val, test)."""
        d = cfg.data
        log.info("sparse_flow: %d Navier-Stokes trajectories x %d frames at %d^2", d.n_trajectories,
                 d.n_frames, d.n)
        fields, times = generate_navier_stokes(
            d.n_trajectories, n=d.n, n_frames=d.n_frames, frame_dt=d.frame_dt, nu=d.nu,
            forcing_amplitude=d.forcing_amplitude, alpha=d.alpha, tau=d.tau, seed=d.seed, progress=progress)
        n_train = d.n_trajectories - d.n_val - d.n_test
        bounds = {"train": (0, n_train), "val": (n_train, n_train + d.n_val),
                  "test": (n_train + d.n_val, d.n_trajectories)}
        coords = np.arange(d.n) / d.n
        physics = ("nu", "forcing_amplitude", "alpha", "tau", "frame_dt")
        write_dataset(
            path, name="2-D Navier-Stokes vorticity (DINo set-up)",
            splits={split: {FIELD: fields[a:b]} for split, (a, b) in bounds.items()},
            orders={FIELD: 0}, dims={FIELD: ["time", "x", "y"]},
            dimensions={"time": times, "x": coords, "y": coords},
            boundary_conditions={"periodic": BoundaryCondition("periodic", ("x", "y"))},
            scalars={k: float(getattr(d, k)) for k in physics},
            attrs={"domain": self.name,
                   "equation": "dw/dt + u.grad w = nu lap w + A (sin 2pi(x+y) + cos 2pi(x+y))"},
            n_spatial_dims=2, grid_type="cartesian")

    def trajectories(self, cfg: Config, split: str) -> torch.Tensor:
        """The ``split``'s trajectories (B, T, n * n) float32."""
        path = self.data_file(cfg)
        meta = read_meta(path)
        field = meta.fields.get(FIELD)
        if field is None or len(field.shape) != 3 or field.shape[-1] != field.shape[-2]:
            raise DataError(f"{path}: the sparse_flow domain needs a t0 field '{FIELD}' with dims "
                            f"[time, x, y] on a square grid; the file has "
                            f"{ {k: tuple(v.shape) for k, v in meta.fields.items()} or 'no fields'}")
        fields = load_split(path, split, [FIELD])[FIELD].float()
        return fields.flatten(2)

    def observation(self, cfg: Config, n: int, n_frames: int) -> Observation:
        """The observed points and frames of ``cfg.settings`` on an n × n grid of n_frames frames."""
        s = cfg.settings
        observed = observed_points(n, s.space_sub, s.mask_seed)
        frames = observed_frames(n_frames, s.time_sub)
        step = s.time_sub * s.anchor_every
        anchors = torch.arange(math.ceil((n_frames - 1) / step) + 1) * step
        return Observation(observed, grid_positions(n)[observed], frames, anchors, n_frames, n)

    def build_data(self, cfg: Config) -> DataSplits:
        """train: {trajectory (B, T, n²), index (B,)}, or for the flow {x1 (B·F, 1, n, n),
        observation (B·F, 3, n, n)} at the observed frames; val, test: {trajectory}."""
        train = self.trajectories(cfg, "train")
        if cfg.objective.kind == "flow":
            n, n_frames = self.shape(cfg)
            mean, std = self.statistics(cfg)
            items = training_pairs(train, self.observation(cfg, n, n_frames), mean, std)
        else:
            items = {"trajectory": train, "index": torch.arange(train.shape[0])}
        return DataSplits(train=InMemoryDataset(items),
                          val=InMemoryDataset({"trajectory": self.trajectories(cfg, "val")}),
                          test=InMemoryDataset({"trajectory": self.trajectories(cfg, "test")}),
                          meta=read_meta(self.data_file(cfg)))

    def shape(self, cfg: Config) -> tuple[int, int]:
        """(n, n_frames) of the data file."""
        field = read_meta(self.data_file(cfg)).fields[FIELD]
        return int(field.shape[-1]), int(field.shape[0])

    # --- model and objective -------------------------------------------------------------

    def statistics(self, cfg: Config) -> tuple[float, float]:
        """Mean and std of the training values on the sparse set (all a model may see); computed
        once per run and observation (the model, the flow's data and every evaluation read it)."""
        s = cfg.settings
        key = (str(self.data_file(cfg)), s.space_sub, s.time_sub, s.mask_seed)
        if key not in self._statistics:
            n, n_frames = self.shape(cfg)
            sparse = self.observation(cfg, n, n_frames).on_sparse_set(self.trajectories(cfg, "train"))
            self._statistics[key] = float(sparse.mean()), float(sparse.std())
        return self._statistics[key]

    def build_model(self, cfg: Config) -> torch.nn.Module:
        for reserved in ("mean", "std"):
            if reserved in cfg.model.params:
                raise ConfigError(f"model.{reserved} is set by the sparse_flow domain from the training "
                                  "data; remove it from the config")
        other = {v: k for k, v in MODELS.items()}.get(cfg.model.name)
        if other is not None and other != cfg.objective.kind:
            raise ConfigError(f"model.name={cfg.model.name!r} is trained with objective.kind={other}, "
                              f"got objective.kind={cfg.objective.kind!r}")
        if cfg.objective.kind == "flow":  # the flow works in normalised units: the domain scales
            given = cfg.model.params.get("observation_channels", CONDITION_CHANNELS)
            if given != CONDITION_CHANNELS:
                raise ConfigError(f"model.observation_channels must be {CONDITION_CHANNELS} (initial state, "
                                  f"mask, time) for the sparse_flow ensemble, got {given!r}")
            return build_model(cfg.model.name, {**cfg.model.params,
                                                "observation_channels": CONDITION_CHANNELS})
        mean, std = self.statistics(cfg)
        return build_model(cfg.model.name, {**cfg.model.params, "mean": mean, "std": std})

    def build_objective(self, cfg: Config) -> ObserverObjective | RolloutObjective | FlowMatching:
        n, n_frames = self.shape(cfg)
        if cfg.objective.kind == "flow":
            return FlowMatching.from_config(cfg.objective, source=StandardNormal((1, n, n)))
        observation = self.observation(cfg, n, n_frames)
        if cfg.objective.kind == "rollout":
            return RolloutObjective(observation)
        n_train = read_meta(self.data_file(cfg)).splits["train"]
        return ObserverObjective(cfg.objective, observation, n_train)

    # --- evaluation ----------------------------------------------------------------------

    def reconstruct(self, model: torch.nn.Module, trajectories: torch.Tensor, cfg: Config
                    ) -> tuple[torch.Tensor, float]:
        """Full-grid fields (B, T, n²) of the model from frame 0 on the sparse set, and the anchor
        forecast MSE on the observed nodes."""
        n = math.isqrt(trajectories.shape[-1])
        obs = self.observation(cfg, n, trajectories.shape[1])
        initial = obs.on_sparse_set(trajectories)[:, 0]
        if cfg.objective.kind == "rollout":
            fields, rolled = rollout_fields(model, initial, obs, n, cfg.eval.interpolation)
            forecast = rolled[:, obs.anchor_slots]
        else:
            fields, forecast = observer_fields(model, initial, obs, n, cfg.eval.chunk)
            forecast = forecast[:, :len(obs.anchor_slots)]
        return fields, forecast_error(forecast, trajectories, obs)

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """The four In/Out MSEs (and their ratios to In/In), the relative L2 error and the anchor
        forecast MSE of the model on the test trajectories; the same errors of the true sparse
        observations interpolated (``truth_interp_*``: interpolation with a perfect forecast);
        seconds per reconstructed trajectory."""
        truth = data.test.tensors["trajectory"][:cfg.eval.n_trajectories]
        n = math.isqrt(truth.shape[-1])
        obs = self.observation(cfg, n, truth.shape[1])
        start = time.perf_counter()
        artifacts = {"truth": truth[:1]}
        if cfg.objective.kind == "flow":
            ensemble = self.ensemble(model, truth, cfg)
            metrics = ensemble_metrics(ensemble, truth, obs)
            artifacts.update(fields=ensemble[:, :1].mean(0), spread=ensemble[:, :1].std(0))
        else:
            fields, forecast_mse = self.reconstruct(model, truth, cfg)
            metrics = field_errors(fields, truth, obs, n)
            metrics["forecast_mse"] = forecast_mse
            artifacts["fields"] = fields[:1]
        seconds = (time.perf_counter() - start) / truth.shape[0]
        interpolated = truth_interpolation(truth, obs, n, cfg.eval.interpolation)
        metrics.update(field_errors(interpolated, truth, obs, n, prefix="truth_interp_"))
        metrics.update({"seconds_per_trajectory": seconds, "observed_points": float(len(obs.observed)),
                        "field_variance": float(truth.var())})
        return Evaluation(metrics, artifacts)

    def ensemble(self, model: torch.nn.Module, trajectories: torch.Tensor, cfg: Config) -> torch.Tensor:
        """``eval.members`` flow samples of every frame of ``trajectories`` (B, T, n²) from their
        initial states on the sparse set: (M, B, T, n²)."""
        obs = self.observation(cfg, math.isqrt(trajectories.shape[-1]), trajectories.shape[1])
        mean, std = self.statistics(cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        return ensemble_fields(model, Sampler.from_config(cfg.sample), obs.on_sparse_set(trajectories)[:, 0],
                               obs, mean, std, cfg.eval.members, generator)

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        """The first test trajectory on the full grid next to the truth (observed points marked;
        the flow: the ensemble mean and spread), and the four errors against those of interpolated
        true observations."""
        if evaluation is None:
            evaluation = self.evaluate(model, data, dataclasses.replace(
                cfg, eval=dataclasses.replace(cfg.eval, n_trajectories=1)))
        truth, fields = evaluation.artifacts["truth"][0], evaluation.artifacts["fields"][0]
        n = math.isqrt(truth.shape[-1])
        obs = self.observation(cfg, n, truth.shape[0])
        frames = cfg.eval.figure_frames or sorted({0, 1, truth.shape[0] // 2, truth.shape[0] - 1})
        label = {"observer": "observer", "rollout": "GNN + interpolation", "flow": "ensemble mean"}[
            cfg.objective.kind]
        title = f"{cfg.model.name}, space_sub {cfg.settings.space_sub:g}: first test trajectory"
        spread = evaluation.artifacts.get("spread")
        if spread is not None:
            spread = spread[0].view(-1, n, n)
        return {"fields": plots.field_panels(truth.view(-1, n, n), fields.view(-1, n, n), obs, frames, label,
                                             title, spread),
                "errors": plots.error_bars(evaluation.metrics, label)}
