"""The toy2d domain: transport between 2-D distributions with the flow-matching engine.

Evaluation: exact W2 (POT) between generated and held-out target samples at several Euler
step counts, the straightness of the learned paths, and the finite-sample floor (W2 between
two independent target sets of the same size).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.likelihood import log_likelihood
from flowsci.metrics import straightness, transport_cost, wasserstein
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci_domains.toy2d.distributions import DISTRIBUTIONS, LABELLED, LOG_PROBS, DistributionSource

DistributionName = Literal["gaussian", "8gaussians", "moons", "checkerboard"]


@dataclasses.dataclass
class Toy2DSettings:
    """YAML ``domain:`` section: source (t=0) and target (t=1) distributions."""

    source: DistributionName = "8gaussians"
    target: DistributionName = "moons"
    conditional: bool = False        # condition on the target's component label (CFG demo)

    def __post_init__(self) -> None:
        for key in ("source", "target"):
            if getattr(self, key) not in DISTRIBUTIONS:
                raise ValueError(f"{key} '{getattr(self, key)}' is not one of {', '.join(DISTRIBUTIONS)}")
        if self.conditional and LABELLED[self.target][1] < 2:
            raise ValueError(f"conditional needs a target with components, not '{self.target}'")
        if self.source == self.target:
            raise ValueError(f"source and target are both '{self.source}'; pick two different "
                             f"distributions from {', '.join(DISTRIBUTIONS)}")


@dataclasses.dataclass
class Toy2DData(DataConfig):
    """Sizes of the generated splits."""

    n_train: int = 20_000
    n_val: int = 1_000
    n_test: int = 1_000
    pairs: str | None = None         # a reflow pair store (flowsci reflow): train on its (x0, x1)


@dataclasses.dataclass
class Toy2DEval(EvalConfig):
    """W2 after each step count in ``steps`` of the ``sample:`` solver; the main metrics
    (w2, straightness, figures) use ``sample.steps``. ``likelihood``: the test negative
    log-likelihood (needs a source with a density: gaussian or 8gaussians)."""

    n_samples: int = 1_000
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 4, 16])
    n_trajectories: int = 256
    likelihood: bool = False
    likelihood_steps: int = 50       # RK4 steps of the divergence integral


class Toy2D(DomainBase):
    """2-D distribution transport (8 Gaussians -> moons, N(0,I) -> ring, N(0,I) -> checkerboard)."""

    name = "toy2d"
    Settings = Toy2DSettings
    DataSettings = Toy2DData
    ObjectiveSettings = FlowMatchingConfig
    EvalSettings = Toy2DEval

    # --- data ----------------------------------------------------------------------------

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The split sizes and seed, and the two distributions (``data.pairs`` is a separate
        store, not part of the file)."""
        settings = super().data_settings(cfg)
        del settings["pairs"]
        return {**settings, "source": cfg.settings.source, "target": cfg.settings.target}

    def data_name(self, cfg: Config) -> str:
        return f"{cfg.settings.source}-to-{cfg.settings.target}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Sample every split from the two distributions and write the HDF5 file."""
        s, d = cfg.settings, cfg.data
        g = torch.Generator().manual_seed(d.seed)
        source, target = DISTRIBUTIONS[s.source], LABELLED[s.target][0]
        splits = {}
        for name, n in (("train", d.n_train), ("val", d.n_val), ("test", d.n_test)):
            x0 = source(n, g)
            x1, y = target(n, g)
            splits[name] = {"x0": x0, "x1": x1, "y": y}
        write_dataset(
            path, name=f"toy2d {s.source} -> {s.target}", splits=splits,
            orders={"x0": 1, "x1": 1}, dims={"x0": [], "x1": []}, sample_scalars=["y"],
            attrs={"domain": "toy2d", "source": s.source, "target": s.target, "seed": d.seed})

    def build_data(self, cfg: Config) -> DataSplits:
        path = self.data_file(cfg)
        # Training pairs fresh source samples with stored targets (independent coupling over an
        # infinite source), or the stored pairs of a reflow pair store; val/test keep their fixed
        # source samples for evaluation.
        labels = ["y"] if cfg.settings.conditional else []
        if cfg.data.pairs:
            train = load_split(cfg.data.pairs, "train", ["x0", "x1", *labels])
        else:
            train = load_split(path, "train", ["x1", *labels])
        return DataSplits(train=InMemoryDataset(train),
                          val=InMemoryDataset(load_split(path, "val", ["x0", "x1", "y"])),
                          test=InMemoryDataset(load_split(path, "test", ["x0", "x1", "y"])),
                          meta=read_meta(path))

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        inputs = {"dim": 2}
        if cfg.settings.conditional:
            inputs["num_classes"] = LABELLED[cfg.settings.target][1]
        return build_model(cfg.model.name, {**inputs, **cfg.model.params})

    def build_objective(self, cfg: Config) -> FlowMatching:
        return FlowMatching.from_config(cfg.objective, source=self.source(cfg), null=self.null(cfg))

    @staticmethod
    def null(cfg: Config) -> dict[str, int] | None:
        """The null label of classifier-free guidance (conditional runs only)."""
        return {"y": -1} if cfg.settings.conditional else None

    def sampler(self, cfg: Config) -> Sampler:
        return Sampler.from_config(cfg.sample, null=self.null(cfg))

    def conditions(self, data: DataSplits, cfg: Config, n: int) -> dict[str, torch.Tensor]:
        """The test labels to generate for (conditional runs), else nothing."""
        return {"y": _tensor(data.test, "y")[:n]} if cfg.settings.conditional else {}

    # --- evaluation ----------------------------------------------------------------------

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        sampler = self.sampler(cfg)
        x0, x1 = self._test_pairs(data, cfg.eval.n_samples)
        cond = self.conditions(data, cfg, len(x0))
        metrics = {}
        for steps in sorted(set(cfg.eval.steps)):
            result = sampler.sample(model, x0, steps=steps, **cond)
            metrics[f"w2_nfe{result.nfe}"] = wasserstein(result.x, x1)
        result = sampler.sample(model, x0, trajectory=True, **cond)
        metrics["w2"] = wasserstein(result.x, x1)
        metrics["straightness"] = straightness(result.trajectory)
        metrics["transport_cost"] = transport_cost(x0, result.x)
        metrics["w2_floor"] = wasserstein(_tensor(data.val, "x1")[: len(x1)], x1)
        if cond:
            metrics["label_accuracy"] = label_accuracy(result.x, cond["y"], data)
        if cfg.eval.likelihood:
            metrics["nll"] = self.negative_log_likelihood(model, x1, cfg, **cond)
        return metrics

    def negative_log_likelihood(self, model: torch.nn.Module, x1: torch.Tensor, cfg: Config,
                                **cond: torch.Tensor) -> float:
        """Mean -log p(x1) of test targets under the flow (exact divergence, RK4)."""
        if cfg.settings.source not in LOG_PROBS:
            raise ConfigError(f"eval.likelihood needs a source with a density ({', '.join(LOG_PROBS)}), "
                              f"not '{cfg.settings.source}'")
        result = log_likelihood(lambda x, t: model(x, t, **cond), x1, LOG_PROBS[cfg.settings.source],
                                solver="rk4", steps=cfg.eval.likelihood_steps)
        return float(-result.log_p.mean())

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        x0, x1 = self._test_pairs(data, cfg.eval.n_samples)
        result = self.sampler(cfg).sample(model, x0, trajectory=True, **self.conditions(data, cfg, len(x0)))
        return {"samples": samples_figure(x0, result.x, x1, cfg),
                "trajectories": trajectories_figure(result.trajectory[:, : cfg.eval.n_trajectories], x1, cfg)}

    def source(self, cfg: Config) -> DistributionSource:
        """The source distribution (t = 0)."""
        return DistributionSource(cfg.settings.source)

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        x0 = self.source(cfg).sample(n)
        if not cfg.settings.conditional:
            return {"x0": x0, "x1": self.sampler(cfg).sample(model, x0).x}
        y = torch.randint(0, LABELLED[cfg.settings.target][1], (n,))
        return {"x0": x0, "y": y, "x1": self.sampler(cfg).sample(model, x0, y=y).x}

    @staticmethod
    def _test_pairs(data: DataSplits, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensor(data.test, "x0")[:n], _tensor(data.test, "x1")[:n]


def _tensor(dataset: InMemoryDataset, key: str) -> torch.Tensor:
    return dataset.tensors[key]


def label_accuracy(points: torch.Tensor, labels: torch.Tensor, data: DataSplits, k: int = 10) -> float:
    """Fraction of generated points (n, 2) whose k nearest validation targets mostly carry
    the label they were generated for (a kNN classifier of the target's components)."""
    reference, reference_labels = _tensor(data.val, "x1"), _tensor(data.val, "y")
    nearest = torch.cdist(points, reference).topk(k, largest=False).indices
    predicted = torch.mode(reference_labels[nearest], dim=1).values
    return float((predicted == labels).float().mean())


def _name(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else spec["name"]


def samples_figure(x0: torch.Tensor, generated: torch.Tensor, target: torch.Tensor, cfg: Config) -> Figure:
    """Source, generated and target point clouds side by side."""
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    panels = [(x0, f"source: {cfg.settings.source}", "tab:gray"),
              (generated, f"generated ({cfg.sample.steps} {_name(cfg.sample.solver)} steps)", "tab:blue"),
              (target, f"target: {cfg.settings.target}", "tab:orange")]
    for ax, (points, title, colour) in zip(axes, panels):
        ax.scatter(*points.T.numpy(), s=2, alpha=0.5, color=colour)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def trajectories_figure(trajectory: torch.Tensor, target: torch.Tensor, cfg: Config) -> Figure:
    """Learned ODE paths (K+1, B, 2) from source (grey) to the end points (blue)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(*target.T.numpy(), s=2, alpha=0.2, color="tab:orange", label="target")
    ax.plot(trajectory[:, :, 0].numpy(), trajectory[:, :, 1].numpy(), color="olive", alpha=0.25, lw=0.6)
    ax.scatter(*trajectory[0].T.numpy(), s=4, color="black", label="t = 0")
    ax.scatter(*trajectory[-1].T.numpy(), s=4, color="tab:blue", label="t = 1")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{cfg.settings.source} -> {cfg.settings.target}: learned paths")
    fig.tight_layout()
    return fig
