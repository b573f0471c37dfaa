"""The ``population`` domain: Meta Flow Matching on pairs of populations, against FM and CGFM.

Two data sets, generated offline (``domain.dataset``):

- ``letters``: 2-D points inside capital-letter glyphs; source = a distorted, noisy copy of the
  target letter paired point by point. Splits: the training letters x ``n_rotations`` rotations
  (train), the validation letter(s) (val) and the test letter(s) (test), never seen in training.
- ``patients``: cell populations in R^d whose response to a treatment depends on their own
  composition; pairs (control -> treated) per patient, replicate and treatment, unpaired cells.
  Splits: training patients' replicates (train), their held-out replicate (val), held-out
  patients (test).

The method is the model's ``conditioning``: ``population`` (MFM, with a registered embedder),
``identity`` (CGFM: a vector per training population) or ``none`` (FM). Evaluation integrates
every source point of each population with ``sample:`` and compares the predicted population
with the true one (exact W1, W2, multi-bandwidth RBF MMD, energy distance, and on the patients
the Pearson r of pairwise feature correlations), next to the reference predictors identity,
mean shift and ideal mean shift.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.flow_matching import Sampler
from flowsci.meta_flow_matching import MetaFlowMatching, MetaFlowMatchingConfig
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci_domains.population.evaluation import SPLIT_LABELS, evaluate_split, population_scores, predict
from flowsci_domains.population.figures import populations_figure
from flowsci_domains.population.letters import make_letters, split_letters
from flowsci_domains.population.patients import make_patients, split_patients

DATASETS = ("letters", "patients")


@dataclasses.dataclass
class PopulationSettings:
    """YAML ``domain:`` section: which data set, and its generator's parameters."""

    dataset: Literal["letters", "patients"] = "letters"
    # letters
    val_letters: str = "X"
    test_letters: str = "Y"
    n_rotations: int = 10
    # patients
    n_patients: int = 40            # with 12, MFM did no better than the identity on held-out patients
    n_replicates: int = 3
    n_treatments: int = 6
    dim: int = 10
    held_out_patients: list[int] = dataclasses.field(default_factory=lambda: [10, 11])
    held_out_replicate: int = 2

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        letters = set(self.val_letters + self.test_letters)
        if not letters <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ") or set(self.val_letters) & set(self.test_letters):
            raise ValueError(f"val_letters {self.val_letters!r} and test_letters {self.test_letters!r} "
                             "must be disjoint sets of capital letters A-Z")
        bad = [p for p in self.held_out_patients if not 0 <= p < self.n_patients]
        if bad or len(self.held_out_patients) >= self.n_patients:
            raise ValueError(f"held_out_patients {self.held_out_patients} must be ids in "
                             f"[0, {self.n_patients}) that leave at least one training patient")
        if not 0 <= self.held_out_replicate < self.n_replicates or self.n_replicates < 2:
            raise ValueError(f"held_out_replicate {self.held_out_replicate} must be in [0, n_replicates="
                             f"{self.n_replicates}) and n_replicates >= 2")


@dataclasses.dataclass
class PopulationEval(EvalConfig):
    """How many populations of each split are predicted and scored (all of val and test when
    they are fewer), and the solver step counts of the NFE sweep."""

    n_populations: int = 24
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 10])
    n_figure: int = 4                # populations per split drawn in the figure


class Population(DomainBase):
    """Meta Flow Matching: generalise a population-to-population flow to unseen populations."""

    name = "population"
    Settings = PopulationSettings
    DataSettings = DataConfig
    ObjectiveSettings = MetaFlowMatchingConfig
    EvalSettings = PopulationEval

    # --- data ----------------------------------------------------------------------------

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The seed and the chosen data set's generator settings."""
        s = cfg.settings
        keys = (("val_letters", "test_letters", "n_rotations") if s.dataset == "letters" else
                ("n_patients", "n_replicates", "n_treatments", "dim", "held_out_patients",
                 "held_out_replicate"))
        return {**super().data_settings(cfg), "dataset": s.dataset, **{k: getattr(s, k) for k in keys}}

    def data_name(self, cfg: Config) -> str:
        s = cfg.settings
        if s.dataset == "letters":
            tag = f"letters_val{s.val_letters}_test{s.test_letters}_r{s.n_rotations}"
        else:
            held = "-".join(map(str, s.held_out_patients))
            tag = (f"patients_p{s.n_patients}_r{s.n_replicates}_t{s.n_treatments}_d{s.dim}"
                   f"_held{held}_rep{s.held_out_replicate}")
        return f"{tag}_seed{cfg.data.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Generate the populations, pad every split to one size and write the HDF5 file."""
        s, seed = cfg.settings, cfg.data.seed
        if s.dataset == "letters":
            train_letters, _ = split_letters(s.val_letters + s.test_letters)
            parts = {name: make_letters(letters, s.n_rotations, seed + offset)
                     for offset, (name, letters) in enumerate((("train", train_letters),
                                                                ("val", s.val_letters),
                                                                ("test", s.test_letters)))}
            groups = {name: [_letter_fields(r) for r in records] for name, records in parts.items()}
        else:
            records = make_patients(n_patients=s.n_patients, n_replicates=s.n_replicates,
                                    n_treatments=s.n_treatments, dim=s.dim, seed=seed)
            index = split_patients(records, held_out_patients=tuple(s.held_out_patients),
                                   held_out_replicate=s.held_out_replicate)
            names = {"train": "train", "val": "test_replicates", "test": "test_patients"}
            groups = {split: [_patient_fields(records[i]) for i in index[key]]
                      for split, key in names.items()}
        _assign_population_ids(groups)
        n_max = max(len(r[key]) for rows in groups.values() for r in rows for key in ("x0", "x1"))
        splits = {name: _pad_split(rows, n_max) for name, rows in groups.items()}
        scalars = [k for k in splits["train"] if splits["train"][k].ndim == 1]
        write_dataset(
            path, name=f"population {s.dataset}", splits=splits,
            orders={"x0": 1, "x1": 1}, dims={"x0": ["point"], "x1": ["point"]}, sample_scalars=scalars,
            attrs={"domain": "population", "dataset": s.dataset, "seed": seed,
                   "settings": dataclasses.asdict(s)})

    def build_data(self, cfg: Config) -> DataSplits:
        path = self.data_file(cfg)
        return DataSplits(*(InMemoryDataset(self._batch_fields(load_split(path, split), cfg))
                            for split in ("train", "val", "test")), meta=read_meta(path))

    def _batch_fields(self, arrays: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
        """Stored arrays -> the batch of MetaFlowMatching: x0, mask0, x1, mask1, population_id
        and, on the patients, the treatment one-hot ``condition``."""
        n_max = arrays["x0"].shape[1]
        positions = torch.arange(n_max)
        fields = {"x0": arrays["x0"].float(), "mask0": positions < arrays["n0"][:, None],
                  "x1": arrays["x1"].float(), "mask1": positions < arrays["n1"][:, None],
                  "population_id": arrays["population_id"].long()}
        if cfg.settings.dataset == "patients":
            fields["condition"] = torch.nn.functional.one_hot(
                arrays["treatment"].long(), cfg.settings.n_treatments).float()
        return fields

    # --- model and objective -------------------------------------------------------------

    def n_training_populations(self, cfg: Config) -> int:
        s = cfg.settings
        if s.dataset == "letters":
            return (26 - len(s.val_letters + s.test_letters)) * s.n_rotations
        return (s.n_patients - len(s.held_out_patients)) * (s.n_replicates - 1)

    def build_model(self, cfg: Config) -> torch.nn.Module:
        s = cfg.settings
        inputs = {"dim": 2 if s.dataset == "letters" else s.dim,
                  "n_conditions": 0 if s.dataset == "letters" else s.n_treatments}
        if cfg.model.params.get("conditioning") == "identity":
            inputs["n_ids"] = self.n_training_populations(cfg)
        return build_model(cfg.model.name, {**inputs, **cfg.model.params})

    def build_objective(self, cfg: Config) -> MetaFlowMatching:
        return MetaFlowMatching.from_config(cfg.objective)

    def sampler(self, cfg: Config) -> Sampler:
        return Sampler.from_config(cfg.sample)

    # --- evaluation ----------------------------------------------------------------------

    def eval_batches(self, data: DataSplits, cfg: Config) -> dict[str, dict[str, torch.Tensor]]:
        """The populations scored per split: the first ``eval.n_populations`` of each (train:
        spread evenly over the training set, so every letter or patient appears)."""
        batches = {}
        for split in ("train", "val", "test"):
            tensors = getattr(data, split).tensors
            n = len(tensors["x0"])
            index = torch.linspace(0, n - 1, min(n, cfg.eval.n_populations)).round().long().unique()
            batches[split] = {k: v[index] for k, v in tensors.items()}
        return batches

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        sampler, labels = self.sampler(cfg), SPLIT_LABELS[cfg.settings.dataset]
        train = data.train.tensors
        metrics: dict[str, float] = {}
        generator = torch.Generator().manual_seed(cfg.seed)
        for split, batch in self.eval_batches(data, cfg).items():
            label = labels[split]
            scores = evaluate_split(model, sampler, batch, train, cfg.objective.base, generator=generator)
            metrics.update({f"{label}_{k}": v for k, v in scores.items()})
            for steps in sorted(set(cfg.eval.steps)):
                predicted, nfe = predict(model, sampler, batch, cfg.objective.base, steps=steps,
                                         generator=generator)
                metrics[f"{label}_w2_nfe{nfe}"] = population_scores(predicted, batch)["w2"]
        return metrics

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        sampler, labels = self.sampler(cfg), SPLIT_LABELS[cfg.settings.dataset]
        generator = torch.Generator().manual_seed(cfg.seed)
        figures = {}
        for split, batch in self.eval_batches(data, cfg).items():
            few = {k: v[: cfg.eval.n_figure] for k, v in batch.items()}
            predicted, _ = predict(model, sampler, few, cfg.objective.base, generator=generator)
            figures[f"populations_{labels[split]}"] = populations_figure(few, predicted, labels[split])
        return figures


def _letter_fields(record: dict) -> dict:
    return {"x0": record["x0"], "x1": record["x1"], "letter": ord(record["letter"]) - ord("A"),
            "rotation": record["rotation"], "group": ord(record["letter"]) - ord("A")}


def _patient_fields(record: dict) -> dict:
    return {"x0": record["x0"], "x1": record["x1"], "patient": record["patient"],
            "replicate": record["replicate"], "treatment": record["treatment"],
            "group": record["patient"] * 1000 + record["replicate"]}


def _assign_population_ids(groups: dict[str, list[dict]]) -> None:
    """population_id: the index of the source population among the training ones (letters: each
    rotated letter; patients: each control population, shared by its treatments); -1 elsewhere."""
    if "rotation" in groups["train"][0]:
        keys = [(r["letter"], r["rotation"]) for r in groups["train"]]
    else:
        keys = [r["group"] for r in groups["train"]]
    ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    for row, key in zip(groups["train"], keys):
        row["population_id"] = ids[key]
    for split in ("val", "test"):
        for row in groups[split]:
            row["population_id"] = -1


def _pad_split(rows: list[dict], n_max: int) -> dict[str, np.ndarray]:
    """Rows of variable-size populations -> padded arrays (P, n_max, d) and sizes n0, n1."""
    out: dict[str, np.ndarray] = {}
    for key in ("x0", "x1"):
        padded = np.zeros((len(rows), n_max, rows[0][key].shape[1]), np.float32)
        for i, row in enumerate(rows):
            padded[i, : len(row[key])] = row[key]
        out[key] = padded
        out[f"n{key[1]}"] = np.array([len(row[key]) for row in rows], np.int64)
    for key in rows[0]:
        if key not in ("x0", "x1", "group"):
            out[key] = np.array([row[key] for row in rows])
    return out
