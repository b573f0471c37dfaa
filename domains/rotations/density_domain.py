"""The ``rotations`` domain: flow matching on SO(3) against a known multimodal density.

Data: 50 000 rotations from a fixed mixture of IGSO(3) blobs (:class:`SO3Mixture`), split
40 000 / 5 000 / 5 000. The model is an MLP velocity with a tangent projection; the state is a
rotation matrix or a unit quaternion (``domain.chart``), the path the SO(3) geodesic.
Evaluation: geodesic W1 and W2 (exact OT on the relative-rotation angle, correctly labelled)
between generated and test rotations at each step count of ``eval.steps``, next to the
finite-sample floor (test vs validation) and the ceiling (test vs Haar); the exact mixture
log density of the samples; optionally the likelihood of the test set under the flow.

W2 between two samples of n = 2000 from this mixture is noisy: the blob counts of two draws
differ by ~sqrt(n w), and that mass must cross between blobs ~2 rad apart (the floor varies
by +-0.026 between windows: ``w2_floor_std``). So every W2 here is the mean over
``eval.repeats`` draws, each against its own window of the test (and validation) set, with
its standard deviation over the draws.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.flow_matching import FlowMatchingConfig
from flowsci.likelihood import log_likelihood
from flowsci.metrics import geodesic_wasserstein
from flowsci.plugins import Evaluation, build_model
from flowsci.space_domain import SpaceDomainBase
from flowsci.spaces.rotations import matrix_to_quaternion, quat_to_matrix
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion
from flowsci_domains.rotations.mixture import SO3Mixture
from flowsci_domains.rotations.so3_figures import axes_figure, euler_histograms_figure, nfe_figure


@dataclasses.dataclass
class RotationsSettings:
    """YAML ``domain:`` section: the chart of the state and the mixture."""

    chart: Literal["matrix", "quaternion"] = "quaternion"
    n_components: int = 7
    sigma_min: float = 0.15
    sigma_max: float = 0.35
    mixture_seed: int = 12345

    def __post_init__(self) -> None:
        if self.chart not in ("matrix", "quaternion"):
            raise ValueError(f"chart must be 'matrix' or 'quaternion', got {self.chart!r}")


@dataclasses.dataclass
class RotationsData(DataConfig):
    """Sizes of the generated splits (FoldFlow's 80/10/10 of 50 000)."""

    n_train: int = 40_000
    n_val: int = 5_000
    n_test: int = 5_000
    pairs: str | None = None         # a reflow pair store (flowsci reflow): train on its (x0, x1)


@dataclasses.dataclass
class RotationsEval(EvalConfig):
    """Geodesic W2 after each step count in ``steps`` (``sample.solver``); the main metrics use
    ``sample.steps``. ``reflow_quantile``: flowsci reflow keeps only generated rotations whose
    mixture log density is above this quantile of the test set's (ReQFlow's filtered reflow)."""

    n_samples: int = 2000
    repeats: int = 3                 # W2 is averaged over this many draws (see the module doc)
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    likelihood: bool = False
    likelihood_steps: int = 20       # RK4 steps of the divergence integral
    reflow_quantile: float = 0.01


class Rotations(SpaceDomainBase):
    """Density estimation on SO(3): a mixture of IGSO(3) blobs (FoldFlow's SO(3) benchmark)."""

    name = "rotations"
    Settings = RotationsSettings
    DataSettings = RotationsData
    ObjectiveSettings = FlowMatchingConfig
    EvalSettings = RotationsEval

    # --- data ----------------------------------------------------------------------------

    @staticmethod
    def mixture(cfg: Config) -> SO3Mixture:
        s = cfg.settings
        return SO3Mixture(s.n_components, s.sigma_min, s.sigma_max, seed=s.mixture_seed)

    @staticmethod
    def space(cfg: Config) -> SO3Matrix | SO3Quaternion:
        return SO3Quaternion() if cfg.settings.chart == "quaternion" else SO3Matrix()

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The split sizes and seed, and the mixture (``data.pairs`` is a separate store)."""
        settings, s = super().data_settings(cfg), cfg.settings
        del settings["pairs"]
        return {**settings, "n_components": s.n_components, "sigma_min": s.sigma_min,
                "sigma_max": s.sigma_max, "mixture_seed": s.mixture_seed}

    def data_name(self, cfg: Config) -> str:
        s, d = cfg.settings, cfg.data
        return (f"mixture{s.n_components}_s{s.sigma_min}-{s.sigma_max}_m{s.mixture_seed}"
                f"_n{d.n_train}-{d.n_val}-{d.n_test}_seed{d.seed}")

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Sample the splits from the mixture; rotations are stored as float32 matrices."""
        d, mixture = cfg.data, self.mixture(cfg)
        g = torch.Generator().manual_seed(d.seed)
        splits = {name: {"x1": mixture.sample(n, g).float()}
                  for name, n in (("train", d.n_train), ("val", d.n_val), ("test", d.n_test))}
        write_dataset(
            path, name="SO(3) mixture of IGSO(3) blobs", splits=splits,
            orders={"x1": 2}, dims={"x1": []},
            attrs={"domain": "rotations", "seed": d.seed, "mixture_seed": cfg.settings.mixture_seed,
                   "means": mixture.means.tolist(), "sigmas": mixture.sigmas, "weights": mixture.weights})

    def build_data(self, cfg: Config) -> DataSplits:
        path = self.data_file(cfg)
        if cfg.data.pairs:
            train = load_split(cfg.data.pairs, "train", ["x0", "x1"])
        else:
            train = {k: self.to_chart(v, cfg) for k, v in load_split(path, "train", ["x1"]).items()}
        return DataSplits(train=InMemoryDataset(train),
                          val=InMemoryDataset(
                              {"x1": self.to_chart(load_split(path, "val", ["x1"])["x1"], cfg)}),
                          test=InMemoryDataset(
                              {"x1": self.to_chart(load_split(path, "test", ["x1"])["x1"], cfg)}),
                          meta=read_meta(path))

    @staticmethod
    def to_chart(rotations: torch.Tensor, cfg: Config) -> torch.Tensor:
        """Stored matrices (N, 3, 3) in the configured chart."""
        return matrix_to_quaternion(rotations) if cfg.settings.chart == "quaternion" else rotations

    # --- model, objective, sampler -------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        return build_model(cfg.model.name, {"chart": cfg.settings.chart, **cfg.model.params})

    def reflow_filter(self, cfg: Config, data: DataSplits):
        """accept(x0, x1) for flowsci reflow: x1's mixture log density above the
        ``eval.reflow_quantile`` quantile of the test set's."""
        mixture = self.mixture(cfg)
        reference = mixture.log_prob(self.to_matrix(data.test.tensors["x1"], cfg))
        threshold = torch.quantile(reference, cfg.eval.reflow_quantile)
        return lambda x0, x1: mixture.log_prob(self.to_matrix(x1, cfg)) >= threshold

    @staticmethod
    def to_matrix(x: torch.Tensor, cfg: Config) -> torch.Tensor:
        return quat_to_matrix(x) if cfg.settings.chart == "quaternion" else x

    # --- evaluation ----------------------------------------------------------------------

    def references(self, data: DataSplits, cfg: Config, split: str = "test") -> list[torch.Tensor]:
        """``eval.repeats`` windows of ``eval.n_samples`` rotations of a split (cyclic, offset by
        n / 2 each), the references each draw is compared with."""
        points, n = getattr(data, split).tensors["x1"], cfg.eval.n_samples
        return [points[(r * (n // 2) + torch.arange(n)) % len(points)] for r in range(cfg.eval.repeats)]

    def base_draws(self, cfg: Config) -> list[torch.Tensor]:
        """``eval.repeats`` fixed Haar draws of ``eval.n_samples`` rotations (seeded by the run's seed)."""
        return [self.source(cfg).sample(cfg.eval.n_samples,
                                        generator=torch.Generator().manual_seed(cfg.seed + 1 + r))
                for r in range(cfg.eval.repeats)]

    def w2(self, samples: list[torch.Tensor], references: list[torch.Tensor], cfg: Config, p: int = 2
           ) -> tuple[float, float]:
        """Mean and standard deviation over the draws of the geodesic W_p of samples[r] vs references[r]."""
        values = torch.tensor([geodesic_wasserstein(self.space(cfg), x, ref, p=p)
                               for x, ref in zip(samples, references)])
        return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        space, sampler = self.space(cfg), self.sampler(cfg)
        tests, x0s, mixture = self.references(data, cfg), self.base_draws(cfg), self.mixture(cfg)
        metrics: dict[str, float] = {}
        for steps in sorted(set(cfg.eval.steps)):
            results = [sampler.sample(model, x0, steps=steps) for x0 in x0s]
            metrics[f"w2_nfe{results[0].nfe}"] = self.w2([r.x for r in results], tests, cfg)[0]
        generated = [sampler.sample(model, x0).x for x0 in x0s]
        metrics["w2"], metrics["w2_std"] = self.w2(generated, tests, cfg)
        metrics["w1"] = self.w2(generated, tests, cfg, p=1)[0]
        metrics["w2_floor"], metrics["w2_floor_std"] = self.w2(self.references(data, cfg, "val"), tests, cfg)
        metrics["w2_ceiling"] = self.w2(x0s, tests, cfg)[0]
        metrics["w2_over_floor"] = metrics["w2"] / metrics["w2_floor"]
        samples, test = torch.cat(generated), torch.cat(tests)
        metrics["mixture_log_prob"] = float(mixture.log_prob(self.to_matrix(samples, cfg)).mean())
        metrics["mixture_log_prob_test"] = float(mixture.log_prob(self.to_matrix(test, cfg)).mean())
        metrics["off_manifold"] = float(space.constraint_violation(samples).max())
        if cfg.eval.likelihood:
            metrics["nll"] = self.negative_log_likelihood(model, tests[0][:500], cfg)
            metrics["nll_true"] = float(-mixture.log_prob(self.to_matrix(tests[0][:500], cfg)).mean())
        return metrics

    def negative_log_likelihood(self, model: torch.nn.Module, x1: torch.Tensor, cfg: Config) -> float:
        """Mean -log p(x1) under the flow from the Haar base (exact Riemannian divergence, RK4)."""
        space = self.space(cfg)
        result = log_likelihood(lambda x, t: model(x, t), x1, space.base_log_prob, solver="rk4",
                                steps=cfg.eval.likelihood_steps, space=space)
        return float(-result.log_p.mean())

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        sampler, tests, x0s = self.sampler(cfg), self.references(data, cfg), self.base_draws(cfg)
        curve = {}
        for steps in sorted(set(cfg.eval.steps)):
            results = [sampler.sample(model, x0, steps=steps) for x0 in x0s]
            curve[results[0].nfe] = self.w2([r.x for r in results], tests, cfg)[0]
        floor = self.w2(self.references(data, cfg, "val"), tests, cfg)[0]
        generated = self.to_matrix(sampler.sample(model, x0s[0]).x, cfg)
        return {"axes": axes_figure(generated, self.to_matrix(tests[0], cfg)),
                "euler_angles": euler_histograms_figure(generated, self.to_matrix(tests[0], cfg)),
                "nfe_curve": nfe_figure({f"{_name(cfg.sample.solver)}": curve}, floor=floor)}

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        x0 = self.source(cfg).sample(n)
        return {"x0": x0, "x1": self.sampler(cfg).sample(model, x0).x}


def _name(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else spec["name"]


__all__ = ["Rotations"]
