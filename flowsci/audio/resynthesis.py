"""Waves from a separator's estimated (magnitude) mel spectrogram.

FlowSep's reference turns the estimated mel into a wave with a vocoder (Griffin-Lim or a neural
one), which has to invent the phase: :func:`griffin_lim_resynthesis` does that. A separator also
has the mixture, so :func:`mel_mask_resynthesis` instead uses the estimate as a soft mask on the
mixture's STFT and keeps the mixture's phase; it gives the best SI-SDR of the two.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from flowsci.audio.spectral import (
    SpectrogramSettings,
    bin_frequencies,
    griffin_lim,
    istft,
    mel_band_edges,
    mel_filterbank,
    mel_spectrogram,
    mel_to_linear,
    stft,
)


@lru_cache(maxsize=16)
def _mel_to_bin_average(settings: SpectrogramSettings) -> torch.Tensor:
    """(n_freqs, n_mels) rows summing to 1: each bin's filterbank weights over the bands, or a one-hot
    on the band whose centre is nearest for a bin that no band covers."""
    weights = mel_filterbank(settings).to(torch.float64)
    coverage = weights.sum(dim=1, keepdim=True)
    centres = mel_band_edges(settings)[1:-1]
    nearest = (bin_frequencies(settings)[:, None] - centres[None, :]).abs().argmin(dim=1)
    one_hot = torch.nn.functional.one_hot(nearest, settings.n_mels).to(torch.float64)
    return torch.where(coverage > 0, weights / coverage.clamp_min(torch.finfo(torch.float64).tiny), one_hot)


def mel_mask_resynthesis(estimate_mel: torch.Tensor, mixture_wave: torch.Tensor,
                         settings: SpectrogramSettings) -> torch.Tensor:
    """The "mixture-phase" vocoder: a wave (..., T) from a source's estimated magnitude mel
    spectrogram estimate_mel (..., n_mels, frames) and the mixture mixture_wave (..., T).

    The ratio mask estimate_mel / mixture_mel, clipped to [0, 1] (where the mixture is silent: 1, or 0
    if the estimate is silent too), is carried to the linear-frequency bins (each bin takes the
    filterbank-weighted average of the band masks; a bin no band covers takes the nearest band's),
    multiplies the mixture's complex STFT, and the iSTFT gives the wave. A mask of ones returns the
    mixture.
    """
    frames = settings.frames(mixture_wave.shape[-1])
    if estimate_mel.shape[-2:] != (settings.n_mels, frames):
        raise ValueError(f"estimate_mel must be (..., n_mels={settings.n_mels}, frames={frames}) for a "
                         f"mixture of {mixture_wave.shape[-1]} samples, got {tuple(estimate_mel.shape)}")
    mixture_spec = stft(mixture_wave, settings)
    mixture_mel = mel_spectrogram(mixture_wave, settings)
    tiny = torch.finfo(mixture_mel.dtype).tiny
    band_mask = (estimate_mel.to(mixture_mel.dtype) / mixture_mel.clamp_min(tiny)).clamp(0.0, 1.0)
    average = _mel_to_bin_average(settings).to(device=band_mask.device, dtype=band_mask.dtype)
    bin_mask = torch.einsum("fm,...mt->...ft", average, band_mask)
    return istft(bin_mask * mixture_spec, settings, mixture_wave.shape[-1])


def griffin_lim_resynthesis(estimate_mel: torch.Tensor, settings: SpectrogramSettings, length: int,
                            iterations: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """A wave (..., length) from a magnitude mel spectrogram (..., n_mels, frames) alone:
    :func:`mel_to_linear` then (fast) :func:`griffin_lim` with a random initial phase."""
    magnitude = mel_to_linear(estimate_mel, settings)
    return griffin_lim(magnitude, settings, length, iterations=iterations, generator=generator)
