"""``separation_autoencoder``: the KL-regularised mel autoencoder whose latent the flow separator
works in (FlowSep's VAE, AudioLDM-style, much smaller).

It learns the normalised log-mels of the training voices and mixtures. Evaluation reports its
reconstruction on the held-out targets: the mel-L1 (natural-log units) and the SI-SDR of the
mixture-phase resynthesis from the reconstructed mel next to that from the true mel (the ceiling
any mel-domain separator can reach with this vocoder).
"""

from __future__ import annotations

import dataclasses

import torch
from matplotlib.figure import Figure

from flowsci.audio.autoencoder_objective import AutoencoderConfig, AutoencoderObjective
from flowsci.audio.metrics import mel_l1, si_sdr
from flowsci.audio.resynthesis import mel_mask_resynthesis
from flowsci.config import Config, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset
from flowsci.errors import ConfigError
from flowsci.plugins import build_model
from flowsci_domains.separation.base import SeparationBase, SpectrogramFields
from flowsci_domains.separation.features import SplitFeatures, log_mel, mel_from_log
from flowsci_domains.separation.figures import reconstruction_figure

BATCH = 64


@dataclasses.dataclass
class AutoencoderSettings(SpectrogramFields):
    """YAML ``domain:``: the spectrogram, and the training tiles: the network is convolutional, so
    it trains on ``crop_frames``-frame tiles of the log-mels (0: whole excerpts), cheaper per step
    and more varied per batch; it is evaluated on whole excerpts."""

    crop_frames: int = 32

    def __post_init__(self) -> None:
        if self.crop_frames < 0:
            raise ValueError(f"crop_frames must be >= 0 (0: whole excerpts), got {self.crop_frames}")


@dataclasses.dataclass
class AutoencoderEval(EvalConfig):
    """YAML ``eval:``: at most ``n_samples`` held-out targets are reconstructed."""

    n_samples: int = 200


class SeparationAutoencoder(SeparationBase):
    """The mel autoencoder of the separation data."""

    name = "separation_autoencoder"
    Settings = AutoencoderSettings
    ObjectiveSettings = AutoencoderConfig
    EvalSettings = AutoencoderEval

    def fields(self, cfg: Config, split: str) -> torch.Tensor:
        """(N·4 + N·K, 1, M, F) normalised log-mels of a split's voices (at their rendered level)
        and its mixtures."""
        features, spectrogram = self.features(cfg, split), self.spectrogram(cfg)
        mels = torch.cat([features.voice_mels.flatten(0, 1), features.mixture_mels.flatten(0, 1)])
        return self.normalization(cfg).normalize(log_mel(mels, spectrogram))[:, None]

    def build_data(self, cfg: Config) -> DataSplits:
        """Training tiles (non-overlapping, ``domain.crop_frames`` wide) and whole validation and
        test log-mels, as ``x1``."""
        train, crop = self.fields(cfg, "train"), cfg.settings.crop_frames
        if crop:
            if crop > train.shape[-1] or crop % 4:
                raise ConfigError(f"domain.crop_frames={crop} must be a multiple of 4 (the autoencoder's "
                                  f"downsampling) and at most the {train.shape[-1]} frames of an excerpt")
            train = torch.cat(train.split(crop, dim=-1)[: train.shape[-1] // crop])
        return DataSplits(InMemoryDataset({"x1": train}),
                          *(InMemoryDataset({"x1": self.fields(cfg, split)}) for split in ("val", "test")))

    def build_model(self, cfg: Config) -> torch.nn.Module:
        if "channels" in cfg.model.params:
            raise ConfigError("model.channels is set by the separation_autoencoder domain (1: a log-mel); "
                              "remove it")
        return build_model(cfg.model.name, {**cfg.model.params, "channels": 1})

    def build_objective(self, cfg: Config) -> AutoencoderObjective:
        return AutoencoderObjective.from_config(cfg.objective)

    def reconstruct(self, model: torch.nn.Module, cfg: Config, features: SplitFeatures
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(true, reconstructed) log-mels (R, M, F) of the first ``eval.n_samples`` held-out targets."""
        spectrogram, norm = self.spectrogram(cfg), self.normalization(cfg)
        rows = features.rows[: cfg.eval.n_samples]
        true = log_mel(features.target_mels(rows), spectrogram)
        x = norm.normalize(true)[:, None]
        with torch.no_grad():
            out = torch.cat([model(x[i:i + BATCH], sample=False)[0] for i in range(0, len(x), BATCH)])
        return true, norm.denormalize(out[:, 0])

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> dict[str, float]:
        """The parameter count; ``mel_l1`` of the reconstructed test targets; ``si_sdr_reconstructed`` and
        ``si_sdr_true_mel``: the mixture-phase resynthesis from the reconstructed and the true mel,
        against the target wave; ``si_sdr_mixture``: the mixture itself."""
        features, spectrogram = self.features(cfg, "test"), self.spectrogram(cfg)
        true, reconstructed = self.reconstruct(model, cfg, features)
        rows = features.rows[: len(true)]
        target, mixture = features.target_waves(rows), features.mixture_waves(rows)
        from_true = mel_mask_resynthesis(mel_from_log(true, spectrogram), mixture, spectrogram)
        from_reconstructed = mel_mask_resynthesis(mel_from_log(reconstructed, spectrogram), mixture,
                                                  spectrogram)
        return {"parameters": float(sum(p.numel() for p in model.parameters())),
                "mel_l1": float(mel_l1(reconstructed, true).mean()),
                "si_sdr_reconstructed": float(si_sdr(from_reconstructed, target).mean()),
                "si_sdr_true_mel": float(si_sdr(from_true, target).mean()),
                "si_sdr_mixture": float(si_sdr(mixture, target).mean())}

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config, evaluation=None
                ) -> dict[str, Figure]:
        features = self.features(cfg, "test")
        true, reconstructed = self.reconstruct(model, cfg, features)
        return {"reconstructions": reconstruction_figure(true[:4], reconstructed[:4], features.roles()[:4],
                                                         self.spectrogram(cfg))}
