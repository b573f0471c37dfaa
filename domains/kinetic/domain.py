"""The ``kinetic`` domain: a-priori learning of closures of the second-moment equation of rods.

The data are homogeneous orientation dynamics (the a-priori setting of Maddu, Weady and
Shelley, "Learning fast, accurate and stable closures of a kinetic theory of an active fluid",
2023): per trajectory a random
initial Ψ(p), an alignment strength ζ ~ U(0, zeta_max) and piecewise-constant random linear
flows, solved in harmonics (:mod:`orientation`); each snapshot gives D, E and the exact closure
terms S:E and S:D. The model is a registered learned closure (``closure(D, E) -> (S:E, S:D)``,
e.g. :class:`learned.LearnedClosure2D`), fit to the snapshots of the first ``data.n_train``
trajectories with the relative-error loss of :func:`a_priori.closure_loss`; the others are the
test set (val = test). Evaluation gives the aggregate relative Frobenius errors of S:E and S:D
on the test trajectories for the learned closure and for the analytic quadratic and Bingham
closures of the same d, and figures the parity plot.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.data.lifecycle import LOADER_KEYS
from flowsci.errors import ConfigError, DataError
from flowsci.plugins import DomainBase, Evaluation
from flowsci_domains.kinetic.a_priori import (
    FIELDS,
    closure_errors,
    closure_loss,
    closure_term_scales,
    parity_figure,
)
from flowsci_domains.kinetic.closures import Closure, make_closure
from flowsci_domains.kinetic.orientation import generate_dataset

log = logging.getLogger(__name__)


@dataclasses.dataclass
class KineticSettings:
    """YAML ``domain:`` section: the dimension of the orientation space (circle or sphere)."""

    d: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.d, bool) or self.d not in (2, 3):
            raise ValueError(f"d must be 2 (rods in a plane) or 3, got {self.d!r}")


def _require(name: str, ok: bool, valid: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {valid}, got {value!r}")


@dataclasses.dataclass
class KineticData(DataConfig):
    """YAML ``data:``: the generator (:func:`orientation.generate_dataset` and its defaults)
    and the split by trajectory; ``seed`` (inherited) seeds the generator."""

    n_trajectories: int = 24
    n_train: int = 18                # the first n_train trajectories train, the rest test
    n_modes: int | None = None       # highest harmonic degree; None: 32 (circle), 10 (sphere)
    n_pieces: int = 24               # flow pieces per trajectory
    n_transient_pieces: int = 4      # dropped from the start of each trajectory
    n_snapshots_per_piece: int = 5
    piece_duration: float = 0.5
    d_rotation: float = 0.25         # rotational diffusivity d_R
    zeta_max: float = 1.2            # ζ ~ U(0, zeta_max) per trajectory
    strain_max: float = 2.0          # ‖E‖_F ~ U(0, strain_max) per piece
    rotation_max: float = 1.0        # |Ω| ~ U(0, rotation_max) per piece

    def __post_init__(self) -> None:
        _require("seed", self.seed >= 0, "an integer >= 0", self.seed)
        _require("n_trajectories", self.n_trajectories >= 2, "an integer >= 2 (train and test)",
                 self.n_trajectories)
        _require("n_train", 1 <= self.n_train < self.n_trajectories,
                 f"an integer in [1, n_trajectories - 1 = {self.n_trajectories - 1}]", self.n_train)
        _require("n_modes", self.n_modes is None or (self.n_modes >= 4 and self.n_modes % 2 == 0),
                 "null or an even integer >= 4", self.n_modes)
        _require("n_pieces", self.n_pieces >= 1, "an integer >= 1", self.n_pieces)
        _require("n_transient_pieces", 0 <= self.n_transient_pieces < self.n_pieces,
                 f"an integer in [0, n_pieces - 1 = {self.n_pieces - 1}]", self.n_transient_pieces)
        _require("n_snapshots_per_piece", self.n_snapshots_per_piece >= 1, "an integer >= 1",
                 self.n_snapshots_per_piece)
        _require("piece_duration", math.isfinite(self.piece_duration) and self.piece_duration > 0,
                 "a finite number > 0", self.piece_duration)
        for name in ("d_rotation", "zeta_max", "strain_max", "rotation_max"):
            value = getattr(self, name)
            _require(name, math.isfinite(value) and value >= 0, "a finite number >= 0", value)

    def generator_parameters(self) -> dict[str, Any]:
        """The keyword arguments of :func:`orientation.generate_dataset` besides d."""
        skip = {*LOADER_KEYS, "n_train"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


class ClosureObjective:
    """:func:`a_priori.closure_loss` with fixed scales (the training set's mean squared norms of
    S:E and S:D). batch: D, E, SE, SD (B, d, d); logs the two squared relative errors."""

    def __init__(self, scales: dict[str, torch.Tensor]):
        self.scales = scales

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, terms = closure_loss(model, batch, self.scales)
        return loss, {f"loss_{name}": float(term.detach()) for name, term in terms.items()}


class Kinetic(DomainBase):
    """Learned closures S(D, E) of the moment equation of rods, judged a priori."""

    name = "kinetic"
    Settings = KineticSettings
    DataSettings = KineticData

    # --- data ----------------------------------------------------------------------------

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The generator parameters, the split (``n_train``) and the dimension ``d``."""
        return {**super().data_settings(cfg), "d": cfg.settings.d}

    def data_name(self, cfg: Config) -> str:
        d, data = cfg.settings.d, cfg.data
        snapshots = (data.n_pieces - data.n_transient_pieces) * data.n_snapshots_per_piece
        return f"homogeneous_d{d}_{data.n_trajectories}x{snapshots}_train{data.n_train}_seed{data.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Generate the trajectories and write them to ``path``, split by trajectory into
        ``train`` and ``test``: t2 fields D, E, SE, SD (symmetric) and A, t1 field ``coeffs``
        (Ψ's harmonic coefficients), t0 field ``mass``, all with dims [time]; per trajectory ζ
        (``zeta``); every generator parameter as attributes."""
        d, data = cfg.settings.d, cfg.data
        log.info("kinetic: %d trajectories (d = %d)", data.n_trajectories, d)
        arrays, attrs = generate_dataset(d, **data.generator_parameters(), progress=progress)
        time = arrays["t"][0]
        if not np.array_equal(arrays["t"], np.broadcast_to(time, arrays["t"].shape)):
            raise DataError(f"{path}: the trajectories do not share one time grid")
        fields = {"D": 2, "E": 2, "SE": 2, "SD": 2, "A": 2, "coeffs": 1, "mass": 0}
        bounds = {"train": slice(0, data.n_train), "test": slice(data.n_train, None)}
        splits = {split: {**{name: arrays[name][rows] for name in fields}, "zeta": arrays["zeta"][rows]}
                  for split, rows in bounds.items()}
        write_dataset(
            path, name=f"homogeneous rod orientation dynamics, d = {d}", splits=splits, orders=fields,
            dims={name: ["time"] for name in fields}, symmetric=FIELDS, sample_scalars=["zeta"],
            dimensions={"time": time},
            scalars={"d_rotation": attrs["d_rotation"], "piece_duration": attrs["piece_duration"]},
            attrs={"domain": "kinetic", "n_train": data.n_train, **attrs})

    def snapshots(self, path: Path, split: str, d: int) -> dict[str, torch.Tensor]:
        """D, E, SE, SD of every snapshot of ``split`` ('train' or 'test') of the file ``path``:
        (N·T, d, d) float64."""
        meta = read_meta(path)
        wrong = [name for name in FIELDS
                 if name not in meta.fields or meta.fields[name].order != 2
                 or meta.fields[name].shape[-1] != d]
        if wrong:
            raise DataError(f"{path}: the kinetic domain (d = {d}) needs t2 fields {list(FIELDS)} of shape "
                            f"(N, T, {d}, {d}); wrong or missing: {wrong}")
        arrays = load_split(path, split, list(FIELDS))
        return {name: value.to(torch.float64).reshape(-1, d, d) for name, value in arrays.items()}

    def build_data(self, cfg: Config) -> DataSplits:
        """train: the snapshots of the training trajectories; val = test: those of the others."""
        path, d = self.data_file(cfg), cfg.settings.d
        test = InMemoryDataset(self.snapshots(path, "test", d))
        return DataSplits(InMemoryDataset(self.snapshots(path, "train", d)), test, test, meta=read_meta(path))

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered closure; it must be a trainable :class:`closures.Closure` for d."""
        model = super().build_model(cfg)
        d, name = cfg.settings.d, cfg.model.name
        if not isinstance(model, Closure):
            raise ConfigError(f"model.name={name!r} is not a closure (closure(D, E) -> (S:E, S:D)); "
                              "use a learned closure, e.g. learned_closure_2d or learned_closure_3d")
        if d not in model.dims:
            raise ConfigError(f"model.name={name!r} works in d = {model.dims}, but domain.d = {d}")
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"model.name={name!r} has no trainable parameters")
        return model

    def build_objective(self, cfg: Config) -> ClosureObjective:
        """The closure loss scaled by the training split's mean squares."""
        path = self.data_file(cfg)
        return ClosureObjective(closure_term_scales(self.snapshots(path, "train", cfg.settings.d)))

    # --- evaluation ----------------------------------------------------------------------

    def analytic_closures(self, cfg: Config) -> dict[str, Closure]:
        """{"bingham": the Bingham closure of d, "quadratic": the quadratic closure}."""
        return {"bingham": make_closure(f"bingham{cfg.settings.d}d"), "quadratic": make_closure("quadratic")}

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        """test_{SE,SD}_{learned,bingham,quadratic}: aggregate relative Frobenius errors on the
        test trajectories; test_{SE,SD}_learned_over_bingham: their ratios."""
        closures = {"learned": model, **self.analytic_closures(cfg)}
        errors = {label: closure_errors(closure, data.test.tensors) for label, closure in closures.items()}
        metrics = {f"test_{term}_{label}": value
                   for label, terms in errors.items() for term, value in terms.items()}
        for term in ("SE", "SD"):
            metrics[f"test_{term}_learned_over_bingham"] = errors["learned"][term] / errors["bingham"][term]
        return metrics

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        """parity: closure against true components of S:E and S:D on at most ``eval.n_samples``
        test snapshots, for the learned and the analytic closures."""
        closures = {f"learned ({cfg.model.name})": model, **self.analytic_closures(cfg)}
        figure = parity_figure(closures, data.test.tensors, max_points=cfg.eval.n_samples, seed=cfg.seed)
        figure.suptitle(f"a-priori closure terms on the test trajectories, d = {cfg.settings.d}")
        return {"parity": figure}
