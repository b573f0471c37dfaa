"""The ``letter_clouds`` domain: a generative flow on population space (Wasserstein flow matching).

A sample is a whole point cloud: ``n_points`` points drawn uniformly inside a capital letter (the
glyphs of :mod:`letters`, upright, normalised to [-3, 3]). The state space is
:class:`~flowsci.spaces.PopulationSpace` (uniform n-point measures with the W2 metric), so the
engine's geodesic path is McCann's displacement interpolation along the exact OT matching of
each noise cloud to its data cloud ("inner OT"), and ``objective.coupling=ot`` with the
geodesic cost re-pairs noise clouds with data clouds by W2 ("outer OT"). The velocity is a
permutation-equivariant transformer conditioned on the letter (one-hot ``cond``).

Evaluation: for each letter, the mean W2 between generated clouds and fresh test clouds of that
letter, next to the floor (two independent data clouds) and the ceiling (a noise cloud).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.flow_matching import FlowMatchingConfig
from flowsci.plugins import Evaluation, build_model
from flowsci.population import population_wasserstein
from flowsci.space_domain import SpaceDomainBase
from flowsci.spaces import PopulationSpace
from flowsci_domains.population.letters import sample_inside

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass
class CloudSettings:
    """YAML ``domain:`` section: the letters and the cloud size."""

    letters: str = "ABCDEFGH"
    n_points: int = 64
    noise: float = 0.05              # N(0, noise^2) added to every point

    def __post_init__(self) -> None:
        if (not self.letters or not set(self.letters) <= set(ALPHABET)
                or len(set(self.letters)) != len(self.letters)):
            raise ValueError(f"letters must be distinct capitals A-Z, got {self.letters!r}")
        if self.n_points < 2:
            raise ValueError(f"n_points must be >= 2, got {self.n_points}")


@dataclasses.dataclass
class CloudData(DataConfig):
    """Clouds per letter in each split."""

    n_train: int = 200
    n_val: int = 20
    n_test: int = 20


@dataclasses.dataclass
class CloudEval(EvalConfig):
    """W2 after each step count in ``steps`` of ``sample.solver``; ``n_per_letter`` generated
    clouds per letter."""

    n_per_letter: int = 10
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 5, 20])


class LetterClouds(SpaceDomainBase):
    """Generate point clouds of letters: noise cloud -> letter cloud on population space."""

    name = "letter_clouds"
    Settings = CloudSettings
    DataSettings = CloudData
    ObjectiveSettings = FlowMatchingConfig
    EvalSettings = CloudEval

    def space(self, cfg: Config) -> PopulationSpace:
        return PopulationSpace(cfg.settings.n_points, 2)

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The split sizes and seed, and the letters, cloud size and noise."""
        return {**super().data_settings(cfg), **dataclasses.asdict(cfg.settings)}

    def data_name(self, cfg: Config) -> str:
        s, d = cfg.settings, cfg.data
        return f"{s.letters}_n{s.n_points}_{d.n_train}-{d.n_val}-{d.n_test}_seed{d.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Sample ``n_*`` noisy clouds per letter and split, labelled by the letter's index."""
        s, d = cfg.settings, cfg.data
        rng = np.random.default_rng(d.seed)
        splits = {}
        for split, n in (("train", d.n_train), ("val", d.n_val), ("test", d.n_test)):
            clouds, labels = [], []
            for k, letter in enumerate(s.letters):
                for _ in range(n):
                    clouds.append(sample_inside(letter, s.n_points, rng)
                                  + s.noise * rng.standard_normal((s.n_points, 2)))
                    labels.append(k)
            splits[split] = {"x1": np.stack(clouds).astype(np.float32), "y": np.array(labels, np.int64)}
        write_dataset(path, name=f"letter clouds {s.letters}", splits=splits,
                      orders={"x1": 1}, dims={"x1": ["point"]}, sample_scalars=["y"],
                      attrs={"domain": "letter_clouds", "letters": s.letters, "seed": d.seed})

    def build_data(self, cfg: Config) -> DataSplits:
        path = self.data_file(cfg)
        n_letters = len(cfg.settings.letters)

        def split(name: str) -> InMemoryDataset:
            arrays = load_split(path, name)
            return InMemoryDataset({"x1": arrays["x1"].float(),
                                    "cond": torch.nn.functional.one_hot(
                                        arrays["y"].long(), n_letters).float()})
        return DataSplits(split("train"), split("val"), split("test"), meta=read_meta(path))

    def build_model(self, cfg: Config) -> torch.nn.Module:
        return build_model(cfg.model.name,
                           {"dim": 2, "cond_dim": len(cfg.settings.letters), **cfg.model.params})

    # --- evaluation ----------------------------------------------------------------------

    def generate(self, model: torch.nn.Module, cfg: Config, steps: int | None = None,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(clouds (L * n, n_points, 2), letter index (L * n,), NFE) from fresh noise clouds."""
        n, n_letters = cfg.eval.n_per_letter, len(cfg.settings.letters)
        labels = torch.arange(n_letters).repeat_interleave(n)
        x0 = self.space(cfg).random_base(len(labels), generator=torch.Generator().manual_seed(seed))
        cond = torch.nn.functional.one_hot(labels, n_letters).float()
        with torch.no_grad():
            result = self.sampler(cfg).sample(model.eval(), x0, steps=steps, cond=cond)
        return result.x, labels, result.nfe

    @staticmethod
    def letter_w2(clouds: torch.Tensor, labels: torch.Tensor, references: torch.Tensor,
                  reference_labels: torch.Tensor) -> float:
        """Mean W2 between each cloud and the reference clouds of its letter (n_ref per letter)."""
        values = []
        for cloud, label in zip(clouds, labels):
            ref = references[reference_labels == label]
            values.append(population_wasserstein(cloud.expand(len(ref), -1, -1), ref).mean())
        return float(torch.stack(values).mean())

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        test, val = data.test.tensors, data.val.tensors
        test_y, val_y = test["cond"].argmax(1), val["cond"].argmax(1)
        metrics = {}
        for steps in sorted(set(cfg.eval.steps)):
            clouds, labels, nfe = self.generate(model, cfg, steps=steps, seed=cfg.seed)
            metrics[f"w2_nfe{nfe}"] = self.letter_w2(clouds, labels, test["x1"], test_y)
        clouds, labels, _ = self.generate(model, cfg, seed=cfg.seed)
        metrics["w2"] = self.letter_w2(clouds, labels, test["x1"], test_y)
        metrics["w2_floor"] = self.letter_w2(val["x1"], val_y, test["x1"], test_y)
        noise = self.space(cfg).random_base(len(val_y), generator=torch.Generator().manual_seed(cfg.seed + 1))
        metrics["w2_ceiling"] = self.letter_w2(noise, val_y, test["x1"], test_y)
        return metrics

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        clouds, labels, _ = self.generate(model, cfg, seed=cfg.seed)
        letters = cfg.settings.letters
        fig = Figure(figsize=(2 * len(letters), 4.2))
        axes = fig.subplots(2, len(letters), squeeze=False)
        test, test_y = data.test.tensors["x1"], data.test.tensors["cond"].argmax(1)
        for k, letter in enumerate(letters):
            generated, real = clouds[labels == k][0], test[test_y == k][0]
            for ax, points, colour, title in ((axes[0, k], generated, "tab:blue", f"{letter}: generated"),
                                              (axes[1, k], real, "tab:orange", f"{letter}: data")):
                ax.scatter(*points.T.numpy(), s=4, color=colour)
                ax.set_title(title, fontsize=9)
                ax.set_aspect("equal")
                ax.set_xlim(-3.5, 3.5)
                ax.set_ylim(-3.5, 3.5)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        return {"clouds": fig}
