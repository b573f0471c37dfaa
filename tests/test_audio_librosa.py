"""flowsci.audio's filterbank, STFT and mel spectrogram against librosa's (and torchaudio's, where it
imports). librosa is a test-only dependency (the ``audio-test`` extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowsci.audio import MelSpectrogram, SpectrogramSettings, mel_filterbank, mel_spectrogram, stft
from flowsci.audio.spectral import TorchaudioMelSpectrogram

librosa = pytest.importorskip("librosa")

CASES = [
    SpectrogramSettings(),
    SpectrogramSettings(sample_rate=22050, n_fft=1024, hop=256, n_mels=80, f_min=30.0, f_max=8000.0),
    SpectrogramSettings(sample_rate=44100, n_fft=2048, hop=512, n_mels=128, f_min=0.0, f_max=None),
]


def _wave(length: int, seed: int) -> np.ndarray:
    """Noise plus a tone, float32."""
    rng = np.random.default_rng(seed)
    n = np.arange(length)
    return (0.3 * rng.standard_normal(length) + 0.5 * np.sin(2 * np.pi * 0.0371 * n)).astype(np.float32)


@pytest.mark.parametrize("settings", CASES, ids=["default", "22k", "44k"])
def test_mel_filterbank_matches_librosa(settings: SpectrogramSettings):
    # both build the triangles in float64 and round to float32: they agree to a float32 rounding step
    reference = librosa.filters.mel(sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
                                    fmin=settings.f_min, fmax=settings.f_max, htk=False, norm="slaney")
    ours = mel_filterbank(settings).numpy()
    assert ours.shape == reference.T.shape  # ours is (n_freqs, n_mels), librosa's (n_mels, n_freqs)
    np.testing.assert_allclose(ours, reference.T, rtol=0, atol=1e-7)


@pytest.mark.parametrize("settings", CASES, ids=["default", "22k", "44k"])
def test_mel_spectrogram_matches_librosa(settings: SpectrogramSettings):
    wave = _wave(3 * settings.n_fft + 17, seed=settings.n_fft)
    reference = librosa.feature.melspectrogram(
        y=wave.astype(np.float64), sr=settings.sample_rate, n_fft=settings.n_fft, hop_length=settings.hop,
        power=1.0, center=True, pad_mode="reflect", window="hann", n_mels=settings.n_mels,
        fmin=settings.f_min, fmax=settings.f_max, htk=False, norm="slaney")
    ours = MelSpectrogram(settings)(torch.from_numpy(wave)).numpy()
    assert ours.shape == reference.shape
    # float32 against float64: relative to the largest value
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6 * np.abs(reference).max())


@pytest.mark.parametrize("settings", CASES, ids=["default", "22k", "44k"])
def test_stft_matches_librosa(settings: SpectrogramSettings):
    wave = _wave(5 * settings.hop + 3, seed=1)
    reference = librosa.stft(wave.astype(np.float64), n_fft=settings.n_fft, hop_length=settings.hop,
                             window="hann", center=True, pad_mode="reflect")
    ours = stft(torch.from_numpy(wave), settings).numpy()
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


@pytest.mark.skipif(TorchaudioMelSpectrogram is None,
                    reason="torchaudio does not import here (not installed, or a CUDA build that fails to "
                           "load next to CPU torch); MelSpectrogram uses flowsci's own STFT path")
@pytest.mark.parametrize("settings", CASES, ids=["default", "22k", "44k"])
def test_torchaudio_mel_spectrogram_matches_ours(settings: SpectrogramSettings):
    wave = _wave(3 * settings.n_fft + 17, seed=2)
    module = MelSpectrogram(settings)
    assert module.torchaudio is not None
    from_torchaudio = module(torch.from_numpy(wave)).numpy()
    ours = mel_spectrogram(torch.from_numpy(wave), settings).numpy()
    np.testing.assert_allclose(from_torchaudio, ours, rtol=0, atol=1e-5 * np.abs(ours).max())
