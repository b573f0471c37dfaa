"""``separation``: FlowSep — a query-conditioned rectified flow in a mel autoencoder's latent space —
and ``separation_mask``, the discriminative mask separator it is compared with.

The flow runs from N(0, I) (t = 0) to the latent of the target voice's log-mel (t = 1), its
velocity network seeing the mixture's latent by channel concatenation and the query (text tokens
through a tiny text encoder trained with it, or a role label) by FiLM, with condition dropout for
classifier-free guidance (FlowSep: Yuan et al., ICASSP 2025; ``docs/design.md``). The estimate is
decoded to a log-mel and resynthesised with the mixture's phase (or by Griffin-Lim). The objective
section is the engine's flow matching, so ``objective.path=vp`` gives the diffusion baseline on
the same network and data.

Queries name a role (soprano, alto, tenor, bass); instruments are drawn per excerpt, so a role is
not a timbre. Test rows are asked in the training phrasings and in held-out ones.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np
import torch

from flowsci.atomic import atomic_open
from flowsci.audio.io import AudioClip
from flowsci.audio.metrics import si_sdr
from flowsci.audio.resynthesis import griffin_lim_resynthesis
from flowsci.config import Config, EvalConfig, SampleConfig
from flowsci.data import DataSplits
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.nn.text_encoder import PAD
from flowsci.plugins import Evaluation, build_model
from flowsci.sources import StandardNormal
from flowsci_domains.separation.autoencoder_cache import ensure_autoencoder
from flowsci_domains.separation.base import SeparationBase, SpectrogramFields
from flowsci_domains.separation.chorales import VOICES
from flowsci_domains.separation.codec import LatentCodec
from flowsci_domains.separation.features import SplitFeatures, log_mel, mel_from_log, mels, query_rng
from flowsci_domains.separation.figures import nfe_figure, spectrogram_figure
from flowsci_domains.separation.mask_separator import MaskObjective, MaskObjectiveConfig
from flowsci_domains.separation.queries import MAX_QUERY_LENGTH, QueryVocabulary, queries
from flowsci_domains.separation.rows import IndexedRows
from flowsci_domains.separation.scoring import resynthesize, score_rows, summarize

VOCABULARY = QueryVocabulary()
QUERIES = ("text", "label")
BATCH = 128


@dataclasses.dataclass
class QuerySettings(SpectrogramFields):
    """YAML ``domain:`` of a separator: how it is asked (``text`` phrasings read by a tiny text
    encoder trained with it, or a role ``label``) and the text encoder's size."""

    query: str = "text"
    text_width: int = 64
    text_depth: int = 1
    text_heads: int = 4

    def __post_init__(self) -> None:
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {', '.join(QUERIES)}, got {self.query!r}")


@dataclasses.dataclass
class FlowSettings(QuerySettings):
    """... and the autoencoder: a run directory of ``separation_autoencoder``, or its config
    (trained on first use, cached beside the data) with ``key=value`` overrides, e.g.
    ``[train.steps=500]``."""

    autoencoder: str = "separation_autoencoder.yaml"
    autoencoder_overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SeparationSample(SampleConfig):
    """YAML ``sample:``: FlowSep samples with 10 Euler steps and guidance 1 (no CFG)."""

    steps: int = 10
    guidance: float = 1.0


@dataclasses.dataclass
class SeparationEval(EvalConfig):
    """YAML ``eval:``: the first ``n_samples`` rows (mixture, voice) of the test split; the flow
    also at each step count of ``steps``; ``griffin_lim`` iterations for the phase-free
    resynthesis (0: skip); BSS Eval's SDR when ``sdr``; ``examples`` listening examples."""

    n_samples: int = 400
    steps: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 10])
    griffin_lim: int = 32
    sdr: bool = True
    examples: int = 3


class Separator(SeparationBase):
    """Queries, evaluation and figures shared by the flow and the mask separator."""

    SampleSettings = SeparationSample
    EvalSettings = SeparationEval

    def query(self, cfg: Config, features: SplitFeatures, split: str, heldout: bool = False
              ) -> dict[str, torch.Tensor]:
        """The query of every row of a split: the role label ``y`` (R,), or ``tokens`` (R, L) of
        one phrasing per row (training or held-out templates), fixed by the data seed."""
        roles = features.roles()
        if cfg.settings.query == "label":
            return {"y": features.rows[:, 2].clone()}
        rng = query_rng(cfg.data.seed + (7919 if heldout else 0), split)
        return {"tokens": VOCABULARY.encode(queries(roles, heldout, rng))}

    def null(self, cfg: Config) -> dict[str, int]:
        """The null query of classifier-free guidance: no tokens, or the label -1."""
        return {"y": -1} if cfg.settings.query == "label" else {"tokens": PAD}

    def query_inputs(self, cfg: Config) -> dict[str, Any]:
        s = cfg.settings
        if s.query == "label":
            return {"num_classes": len(VOICES)}
        return {"vocab_size": len(VOCABULARY), "max_length": MAX_QUERY_LENGTH, "text_width": s.text_width,
                "text_depth": s.text_depth, "text_heads": s.text_heads}

    def estimate(self, model: torch.nn.Module, cfg: Config, features: SplitFeatures, rows: slice,
                 query: dict[str, torch.Tensor], steps: int) -> tuple[torch.Tensor, int]:
        """Estimated log-mels (R, M, F) of the test rows ``rows`` and the network evaluations per row."""
        raise NotImplementedError

    def step_counts(self, cfg: Config) -> list[int]:
        return [cfg.sample.steps]

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """Scores of the first ``eval.n_samples`` test rows at ``sample.steps`` (no suffix): si_sdr,
        si_sdri (against the mixture), mel_l1, sdr, si_sdr_griffin_lim, each also per role
        (``si_sdri_<role>``), ``seconds_per_audio_second`` (separation and resynthesis); then
        ``<score>_nfe<k>`` at every step count of the flow, and ``<score>_heldout`` for the held-out
        phrasings of text queries; ``si_sdr_mixture`` and the parameter count."""
        e, spectrogram = cfg.eval, self.spectrogram(cfg)
        features = self.features(cfg, "test")
        rows = slice(0, min(e.n_samples, len(features.rows)))
        roles = features.roles(features.rows[rows])
        mixture = features.mixture_waves(features.rows[rows])
        target = features.target_waves(features.rows[rows])
        metrics = {"si_sdr_mixture": float(si_sdr(mixture, target).mean()),
                   "parameters": float(sum(p.numel() for p in model.parameters()))}
        query = self.query(cfg, features, "test")
        query = {k: v[rows] for k, v in query.items()}
        names = ("si_sdr", "si_sdri", "mel_l1")
        for steps in self.step_counts(cfg):
            start = time.perf_counter()
            estimate, nfe = self.estimate(model, cfg, features, rows, query, steps)
            main = steps == cfg.sample.steps
            scores = score_rows(estimate, features, features.rows[rows], spectrogram,
                                with_sdr=main and e.sdr, griffin_lim=e.griffin_lim if main else 0)
            seconds = time.perf_counter() - start
            if main:
                clip_seconds = mixture.shape[-1] / cfg.data.sample_rate
                metrics.update(summarize(scores, roles, per_role=("si_sdr", "si_sdri", "mel_l1")))
                metrics["seconds_per_audio_second"] = seconds / (len(roles) * clip_seconds)
                metrics["nfe"] = float(nfe)
            if len(self.step_counts(cfg)) > 1:
                metrics.update(summarize({k: scores[k] for k in names}, roles, suffix=f"_nfe{nfe}"))
        if cfg.settings.query == "text":
            heldout = {k: v[rows] for k, v in self.query(cfg, features, "test", heldout=True).items()}
            estimate, _ = self.estimate(model, cfg, features, rows, heldout, cfg.sample.steps)
            scores = score_rows(estimate, features, features.rows[rows], spectrogram)
            metrics.update(summarize(scores, roles, suffix="_heldout"))
        return Evaluation(metrics)

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Any]:
        """Log-mels of mixture / target / estimate for ``eval.examples`` test rows (one per role
        where possible), their WAVs (mixture, target, estimate with the mixture's phase and by
        Griffin-Lim), and the flow's quality against NFE."""
        spectrogram, features = self.spectrogram(cfg), self.features(cfg, "test")
        picks = example_rows(features, cfg.eval.examples)
        query = {k: v[picks] for k, v in self.query(cfg, features, "test").items()}
        estimate, _ = self.estimate(model, cfg, features, picks, query, cfg.sample.steps)
        rows = features.rows[picks]
        mixture, target = features.mixture_waves(rows), features.target_waves(rows)
        waves = resynthesize(estimate, mixture, spectrogram)
        gl = griffin_lim_resynthesis(mel_from_log(estimate, spectrogram), spectrogram, mixture.shape[-1],
                                     iterations=max(cfg.eval.griffin_lim, 1),
                                     generator=torch.Generator().manual_seed(0))
        roles = features.roles(rows)
        out: dict[str, Any] = {"spectrograms": spectrogram_figure(
            log_mel(features.mixture_mels.flatten(0, 1)[features.mixture_ids[picks]], spectrogram),
            log_mel(features.target_mels(rows), spectrogram), estimate, roles, spectrogram)}
        rate = cfg.data.sample_rate
        for i, role in enumerate(roles):
            out[f"example{i}_{role}_mixture"] = AudioClip(mixture[i], rate)
            out[f"example{i}_{role}_target"] = AudioClip(target[i], rate)
            out[f"example{i}_{role}_estimate"] = AudioClip(waves[i], rate)
            out[f"example{i}_{role}_estimate_griffin_lim"] = AudioClip(gl[i], rate)
        if evaluation is not None and len(self.step_counts(cfg)) > 1:
            out["quality_vs_nfe"] = nfe_figure(evaluation.metrics)
        return out


def example_rows(features: SplitFeatures, n: int) -> torch.Tensor:
    """Indices of n test rows, cycling over the roles (the first row of each role in turn)."""
    picks: list[int] = []
    voices = features.rows[:, 2].tolist()
    for i in range(n):
        want = i % len(VOICES)
        found = [j for j, v in enumerate(voices) if v == want and j not in picks]
        picks.append(found[0] if found else i)
    return torch.tensor(picks)


class Separation(Separator):
    """FlowSep: the query-conditioned rectified flow in the mel autoencoder's latent space."""

    name = "separation"
    Settings = FlowSettings
    ObjectiveSettings = FlowMatchingConfig

    def __init__(self) -> None:
        super().__init__()
        self._codec: LatentCodec | None = None
        self._unscaled: dict[str, dict[str, torch.Tensor]] = {}
        self._latents: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def codec(self, cfg: Config) -> LatentCodec:
        """The autoencoder (trained on first use) with the latent scale of the training targets."""
        if self._codec is None:
            autoencoder, directory = ensure_autoencoder(cfg, self.data_file(cfg),
                                                        progress=sys.stderr.isatty())
            self._codec = LatentCodec(autoencoder, self.normalization(cfg), directory=directory)
            self._codec.scale = float(self.unscaled_latents(cfg, "train")["targets"].std())
        return self._codec

    def unscaled_latents(self, cfg: Config, split: str) -> dict[str, torch.Tensor]:
        """``mixtures`` (N·K, C, h, w) and ``targets`` (R, C, h, w): the autoencoder's posterior
        means of a split, encoded once per autoencoder and data file and stored in the
        autoencoder's run directory (``latents-<data file>-<split>.pt``)."""
        if split not in self._unscaled:
            codec = self._codec if self._codec is not None else self.codec(cfg)
            stored = codec.directory / f"latents-{self.data_file(cfg).stem}-{split}.pt"
            if stored.is_file():
                self._unscaled[split] = torch.load(stored, weights_only=True)
            else:
                features, spectrogram = self.features(cfg, split), self.spectrogram(cfg)
                mixtures = log_mel(features.mixture_mels.flatten(0, 1), spectrogram)
                self._unscaled[split] = {"mixtures": codec.encode(mixtures, scaled=False),
                                         "targets": codec.encode(log_mel(features.target_mels(), spectrogram),
                                                                 scaled=False)}
                with atomic_open(stored, "wb") as fh:
                    torch.save(self._unscaled[split], fh)
        return self._unscaled[split]

    def latents(self, cfg: Config, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixture latents (N·K, C, h, w), target latents (R, C, h, w)) of a split, scaled."""
        if split not in self._latents:
            scale, unscaled = self.codec(cfg).scale, self.unscaled_latents(cfg, split)
            self._latents[split] = (unscaled["mixtures"] / scale, unscaled["targets"] / scale)
        return self._latents[split]

    def build_data(self, cfg: Config) -> DataSplits:
        """Rows of ``x1`` (the target's latent), ``observation`` (the mixture's latent, shared by
        the rows of a mixture) and the query."""
        def split(name: str) -> IndexedRows:
            features = self.features(cfg, name)
            mixtures, targets = self.latents(cfg, name)
            tables = {"x1": (targets, None), "observation": (mixtures, features.mixture_ids)}
            tables.update({k: (v, None) for k, v in self.query(cfg, features, name).items()})
            return IndexedRows(tables)

        return DataSplits(split("train"), split("val"), split("test"))

    def latent_shape(self, cfg: Config) -> tuple[int, int, int]:
        return tuple(self.latents(cfg, "val")[0].shape[1:])

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered image model (``model:``) on concat(x_t, mixture latent), behind the query's
        text encoder or with the role label."""
        for key in ("channels", "out_channels", "num_classes", "context_dim"):
            if key in cfg.model.params:
                raise ConfigError(f"model.{key} is set by the separation domain; remove it")
        channels = self.latent_shape(cfg)[0]
        inputs = self.query_inputs(cfg)
        concat = {"observation_channels": channels, "channels": channels,
                  "backbone": {"name": cfg.model.name, "params": dict(cfg.model.params)}}
        if cfg.settings.query == "label":
            return build_model("concat_conditioned", {**concat, **inputs})
        return build_model("text_conditioned", {"backbone": {"name": "concat_conditioned", "params": concat},
                                                **inputs})

    def source(self, cfg: Config) -> StandardNormal:
        return StandardNormal(self.latent_shape(cfg))

    def build_objective(self, cfg: Config) -> FlowMatching:
        return FlowMatching.from_config(cfg.objective, source=self.source(cfg), null=self.null(cfg))

    def step_counts(self, cfg: Config) -> list[int]:
        return sorted({*cfg.eval.steps, cfg.sample.steps})

    def estimate(self, model: torch.nn.Module, cfg: Config, features: SplitFeatures, rows: Any,
                 query: dict[str, torch.Tensor], steps: int) -> tuple[torch.Tensor, int]:
        """Sample the target latents from N(0, I) with the configured sampler (the same noise for
        every step count: seed ``cfg.seed``), then decode."""
        mixtures, _ = self.latents(cfg, "test")
        observation = mixtures[features.mixture_ids[rows]]
        generator = torch.Generator().manual_seed(cfg.seed)
        x0 = torch.randn(len(observation), *observation.shape[1:], generator=generator)
        sampler = Sampler.from_config(cfg.sample, null=self.null(cfg))
        out, nfe = [], 0
        with torch.no_grad():
            for i in range(0, len(x0), BATCH):
                batch = slice(i, i + BATCH)
                result = sampler.sample(model, x0[batch], steps=steps, observation=observation[batch],
                                        **{k: v[batch] for k, v in query.items()})
                out.append(result.x)
                nfe = result.nfe
        return self.codec(cfg).decode(torch.cat(out)), nfe

    def separate(self, model: torch.nn.Module, cfg: Config, mixture: torch.Tensor, texts: list[str],
                 steps: int | None = None, seed: int = 0) -> torch.Tensor:
        """Separate a mixture of any length (T,) at the data's sample rate (your own recording, say)
        by text queries: one estimate (Q, T) per query (Griffin-Lim-free: the mixture's phase).
        The wave is padded to a whole number of latent frames and cropped back."""
        if cfg.settings.query != "text":
            raise ConfigError("separate() reads text queries; this run was trained on labels (domain.query)")
        spectrogram, codec = self.spectrogram(cfg), self.codec(cfg)
        if mixture.dim() != 1:
            raise ValueError(f"mixture must be one channel (T,), got shape {tuple(mixture.shape)}")
        factor = 4 * spectrogram.hop  # the autoencoder halves the frames twice
        length = mixture.shape[-1]
        padded = torch.nn.functional.pad(mixture, (0, (-(length + spectrogram.hop)) % factor))
        observation = codec.encode(log_mel(mels(padded[None], spectrogram), spectrogram))
        observation = observation.expand(len(texts), *observation.shape[1:])
        x0 = torch.randn(observation.shape, generator=torch.Generator().manual_seed(seed))
        sampler = Sampler.from_config(cfg.sample, null=self.null(cfg))
        with torch.no_grad():
            latent = sampler.sample(model, x0, steps=steps, observation=observation,
                                    tokens=VOCABULARY.encode(texts)).x
        estimate = codec.decode(latent)
        return resynthesize(estimate, padded.expand(len(texts), -1), spectrogram)[:, :length]

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int) -> dict[str, np.ndarray]:
        """``flowsci sample``: the estimated log-mels (n, M, F) of the first n test rows."""
        features = self.features(cfg, "test")
        rows = slice(0, min(n, len(features.rows)))
        query = {k: v[rows] for k, v in self.query(cfg, features, "test").items()}
        estimate, _ = self.estimate(model, cfg, features, rows, query, cfg.sample.steps)
        return {"log_mel": estimate.numpy(), "rows": features.rows[rows].numpy()}


class SeparationMask(Separator):
    """The discriminative baseline: a query-conditioned mask on the mixture's mel (LASS-Net style)."""

    name = "separation_mask"
    Settings = QuerySettings
    ObjectiveSettings = MaskObjectiveConfig

    def tables(self, cfg: Config, split: str) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        features, spectrogram = self.features(cfg, split), self.spectrogram(cfg)
        norm = self.normalization(cfg)
        mixtures = norm.normalize(log_mel(features.mixture_mels.flatten(0, 1), spectrogram))[:, None]
        targets = norm.normalize(log_mel(features.target_mels(), spectrogram))[:, None]
        tables = {"mixture": (mixtures, features.mixture_ids), "target": (targets, None)}
        tables.update({k: (v, None) for k, v in self.query(cfg, features, split).items()})
        return tables

    def build_data(self, cfg: Config) -> DataSplits:
        return DataSplits(*(IndexedRows(self.tables(cfg, split)) for split in ("train", "val", "test")))

    def build_model(self, cfg: Config) -> torch.nn.Module:
        for key in ("channels", "out_channels", "num_classes", "context_dim"):
            if key in cfg.model.params:
                raise ConfigError(f"model.{key} is set by the separation_mask domain; remove it")
        backbone = {"name": cfg.model.name, "params": dict(cfg.model.params)}
        return build_model("mask_separator", {"backbone": backbone, "query": cfg.settings.query,
                                              **self.query_inputs(cfg)})

    def build_objective(self, cfg: Config) -> MaskObjective:
        norm = self.normalization(cfg)
        return MaskObjective(norm.mean, norm.std, self.spectrogram(cfg).log_floor, cfg.objective.loss)

    def estimate(self, model: torch.nn.Module, cfg: Config, features: SplitFeatures, rows: Any,
                 query: dict[str, torch.Tensor], steps: int) -> tuple[torch.Tensor, int]:
        spectrogram, norm = self.spectrogram(cfg), self.normalization(cfg)
        mixture = norm.normalize(log_mel(features.mixture_mels.flatten(0, 1)[features.mixture_ids[rows]],
                                         spectrogram))[:, None]
        objective = self.build_objective(cfg)
        out = []
        with torch.no_grad():
            for i in range(0, len(mixture), BATCH):
                batch = slice(i, i + BATCH)
                logits = model(mixture[batch], **{k: v[batch] for k, v in query.items()})
                out.append(objective.masked(logits, mixture[batch]))
        return norm.denormalize(torch.cat(out)[:, 0]), 1
