"""Log-mel features of the separation data: mixtures, targets and the rows that pair them.

A row is one separation problem (excerpt n, mixture k, voice v): the mixture Σ_u g[n,k,u] s[n,u]
and its target g[n,k,v] s[n,v] (the voice as it sounds in the mixture). The magnitude mel
spectrogram is linear in the amplitude, so the target's mel is g · mel(s[n,v]) and every voice is
transformed once. Log-mels are normalised by one mean and standard deviation of the training
mixtures (:class:`MelNormalization`), the same in every run on a data file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from flowsci.audio.spectral import MelSpectrogram, SpectrogramSettings
from flowsci_domains.separation.chorales import VOICES
from flowsci_domains.separation.mixtures import (
    SeparationSplit,
    examples,
    load_separation_split,
    mixture_waves,
    targets,
)

BATCH = 64  # waves per mel transform


@dataclasses.dataclass(frozen=True)
class MelNormalization:
    """x = (log_mel − mean) / std, and back."""

    mean: float
    std: float

    def normalize(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (log_mel - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


@dataclasses.dataclass
class SplitFeatures:
    """The mels of one split and its rows.

    waves: the split's voices and gains (:class:`SeparationSplit`); ``voice_mels`` (N, 4, M, F)
    magnitude mels of the voices; ``mixture_mels`` (N, K, M, F) of the mixtures; ``rows`` (R, 3)
    int64 (n, k, v) of every voice present in a mixture used by this split (all K mixtures of the
    training split, the first of val and test).
    """

    waves: SeparationSplit
    voice_mels: torch.Tensor
    mixture_mels: torch.Tensor
    rows: torch.Tensor

    @property
    def mixture_ids(self) -> torch.Tensor:
        """(R,) the index of each row's mixture in ``mixture_mels.flatten(0, 1)``."""
        return self.rows[:, 0] * self.mixture_mels.shape[1] + self.rows[:, 1]

    def target_mels(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(R, M, F) magnitude mels of the rows' targets g · mel(s)."""
        n, k, v = (self.rows if rows is None else rows).unbind(1)
        gains = self.waves.gains[n, k, v]
        return gains[:, None, None] * self.voice_mels[n, v]

    def mixture_waves(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(R, T) the rows' mixtures."""
        return examples(self.waves, self.rows if rows is None else rows)[0]

    def target_waves(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(R, T) the rows' targets."""
        return examples(self.waves, self.rows if rows is None else rows)[1]

    def roles(self, rows: torch.Tensor | None = None) -> list[str]:
        return [VOICES[v] for v in (self.rows if rows is None else rows)[:, 2].tolist()]


def mels(waves: torch.Tensor, spectrogram: SpectrogramSettings) -> torch.Tensor:
    """Magnitude mels (..., M, F) of waves (..., T), in batches."""
    transform = MelSpectrogram(spectrogram)
    flat = waves.reshape(-1, waves.shape[-1])
    with torch.no_grad():
        out = torch.cat([transform(flat[i:i + BATCH]) for i in range(0, len(flat), BATCH)])
    return out.reshape(*waves.shape[:-1], *out.shape[-2:])


def split_features(path: Path, split: str, spectrogram: SpectrogramSettings) -> SplitFeatures:
    """The mels and rows of ``split`` of the data file ``path``."""
    waves = load_separation_split(path, split)
    mixtures = waves.gains.shape[1] if split == "train" else 1  # val and test: mixture 0, the rest is 0
    mixture = mixture_waves(waves)[:, :mixtures]
    return SplitFeatures(waves, mels(waves.sources, spectrogram), mels(mixture, spectrogram), targets(waves))


def log_mel(mel: torch.Tensor, spectrogram: SpectrogramSettings) -> torch.Tensor:
    return torch.log(mel + spectrogram.log_floor)


def mel_from_log(log_mel_: torch.Tensor, spectrogram: SpectrogramSettings) -> torch.Tensor:
    return (torch.exp(log_mel_) - spectrogram.log_floor).clamp_min(0.0)


def normalization(train: SplitFeatures, spectrogram: SpectrogramSettings) -> MelNormalization:
    """The mean and standard deviation of the training mixtures' log-mels."""
    values = log_mel(train.mixture_mels, spectrogram).double()
    return MelNormalization(float(values.mean()), float(values.std()))


def query_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of a split's query phrasings (fixed by the data seed and the split)."""
    return np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}[split], 17])
