"""Audio for flowsci: spectrograms, their inverses, separation metrics and I/O.

- :mod:`flowsci.audio.spectral`: STFT/iSTFT, the Slaney mel filterbank, (log-)mel spectrograms,
  a non-negative inverse of the filterbank and (fast) Griffin-Lim, on ``torch.stft``.
- :mod:`flowsci.audio.resynthesis`: waves from an estimated mel spectrogram (mixture-phase mask
  or Griffin-Lim).
- :mod:`flowsci.audio.metrics`: SI-SDR(i), BSS Eval SDR, log-mel L1, log-spectral distance.
- :mod:`flowsci.audio.io`: read and atomically write audio files (soundfile).
"""

from __future__ import annotations

from flowsci.audio.io import AudioClip, read_audio, write_audio
from flowsci.audio.metrics import log_spectral_distance, mel_l1, sdr, si_sdr, si_sdr_improvement
from flowsci.audio.resynthesis import griffin_lim_resynthesis, mel_mask_resynthesis
from flowsci.audio.spectral import (
    MelSpectrogram,
    SpectrogramSettings,
    bin_frequencies,
    griffin_lim,
    hz_to_mel,
    istft,
    log_mel,
    mel_band_edges,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
    mel_to_linear,
    spectral_convergence,
    stft,
)

__all__ = [
    "AudioClip",
    "MelSpectrogram",
    "SpectrogramSettings",
    "bin_frequencies",
    "griffin_lim",
    "griffin_lim_resynthesis",
    "hz_to_mel",
    "istft",
    "log_mel",
    "log_spectral_distance",
    "mel_band_edges",
    "mel_filterbank",
    "mel_l1",
    "mel_mask_resynthesis",
    "mel_spectrogram",
    "mel_to_hz",
    "mel_to_linear",
    "read_audio",
    "sdr",
    "si_sdr",
    "si_sdr_improvement",
    "spectral_convergence",
    "stft",
    "write_audio",
]
