"""What the separation domains share: the data set of rendered chorales and its features.

``separation`` (the flow separator), ``separation_mask`` (the discriminative baseline) and
``separation_autoencoder`` (the mel autoencoder of the flow's latent space) read one data file:
they share the data group ``separation`` (same default file) and the settings below.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flowsci.audio.spectral import SpectrogramSettings
from flowsci.config import Config, DataConfig
from flowsci.data import default_data_dir
from flowsci.plugins import DomainBase
from flowsci_domains.separation.features import (
    MelNormalization,
    SplitFeatures,
    normalization,
    split_features,
)
from flowsci_domains.separation.mixtures import MixtureSettings, make_separation_data


@dataclasses.dataclass
class SpectrogramFields:
    """YAML ``domain:`` of every separation domain: the STFT and mel bands (the sample rate is
    the data's)."""

    n_fft: int = 512
    hop: int = 256                   # 50 % overlap (COLA for the Hann window): 16 ms frames
    n_mels: int = 64


@dataclasses.dataclass
class SeparationData(DataConfig):
    """YAML ``data:``: excerpts of Bach chorales rendered per voice and mixed (see
    :class:`~flowsci_domains.separation.mixtures.MixtureSettings` for each field)."""

    sample_rate: int = 16000
    clip_samples: int = 32512        # 2.03 s: 128 STFT frames at hop 256
    bpm: float = 100.0
    n_chorales: int | None = None    # None: all 365 four-part chorales of music21's corpus
    n_train: int = 500               # excerpts of the training chorales
    n_val: int = 50
    n_test: int = 120                # excerpts of held-out chorales: the fixed test set
    mixtures_per_excerpt: int = 4    # training mixtures per excerpt (val and test: one)
    min_voices: int = 2
    max_voices: int = 4
    gain_db: float = 6.0             # each voice's gain is uniform in [-gain_db, 0] dB
    instruments: list[str] | None = None
    heldout_chorales: float = 0.2    # fraction of the chorales for val and test


class SeparationBase(DomainBase):
    """The shared data set, its spectrogram settings and its features (cached per run)."""

    data_group = "separation"
    DataSettings = SeparationData

    def __init__(self) -> None:
        self._features: dict[tuple[str, str], SplitFeatures] = {}
        self._normalization: dict[str, MelNormalization] = {}

    # --- data ----------------------------------------------------------------------------

    @staticmethod
    def mixture_settings(cfg: Config) -> MixtureSettings:
        return MixtureSettings(**{f.name: getattr(cfg.data, f.name)
                                  for f in dataclasses.fields(MixtureSettings)})

    def data_name(self, cfg: Config) -> str:
        d = cfg.data
        return f"chorales_{d.sample_rate // 1000}khz_train{d.n_train}x{d.mixtures_per_excerpt}_test{d.n_test}"

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        settings = super().data_settings(cfg)
        self.mixture_settings(cfg)  # validates every field with a clear error
        return settings

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Render the chorale excerpts and draw the mixtures (the parsed chorales are cached in the
        data folder as ``separation/chorales.json``)."""
        cache = default_data_dir() / self.data_group / "chorales.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        make_separation_data(self.mixture_settings(cfg), path, cfg.data.seed, cache=cache, progress=progress)

    def spectrogram(self, cfg: Config) -> SpectrogramSettings:
        s = cfg.settings
        return SpectrogramSettings(sample_rate=cfg.data.sample_rate, n_fft=s.n_fft, hop=s.hop,
                                   n_mels=s.n_mels)

    def features(self, cfg: Config, split: str) -> SplitFeatures:
        """The mels and rows of a split of this run's data file (computed once per run)."""
        path = self.data_file(cfg)
        key = (str(path), split)
        if key not in self._features:
            self._features[key] = split_features(path, split, self.spectrogram(cfg))
        return self._features[key]

    def normalization(self, cfg: Config) -> MelNormalization:
        """The log-mel normalisation of this run's data file (computed once per run: the data,
        the objective, the codec and every evaluation use it)."""
        key = str(self.data_file(cfg))
        if key not in self._normalization:
            self._normalization[key] = normalization(self.features(cfg, "train"), self.spectrogram(cfg))
        return self._normalization[key]
