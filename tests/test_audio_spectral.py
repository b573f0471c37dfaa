"""Oracle tests of flowsci.audio's spectral features and resynthesis: closed forms of the Slaney
mel scale, the triangles' area and the Hann main lobe, exact STFT inversion, the monotone
convergence of Griffin-Lim, the KKT conditions of the non-negative mel inverse, and separation
of tones in disjoint bands."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.audio import (
    MelSpectrogram,
    SpectrogramSettings,
    griffin_lim,
    griffin_lim_resynthesis,
    hz_to_mel,
    istft,
    log_mel,
    mel_filterbank,
    mel_mask_resynthesis,
    mel_spectrogram,
    mel_to_hz,
    mel_to_linear,
    si_sdr,
    spectral_convergence,
    stft,
)

F64 = torch.float64
SETTINGS = SpectrogramSettings()


def _tone(frequency: float, length: int, sample_rate: int = 16000, amplitude: float = 1.0,
          phase: float = 0.0) -> torch.Tensor:
    n = torch.arange(length, dtype=F64)
    return amplitude * torch.cos(2 * math.pi * frequency * n / sample_rate + phase)


def _chirp(length: int, sample_rate: int = 16000) -> torch.Tensor:
    """A linear chirp from 200 Hz to 3200 Hz."""
    t = torch.arange(length, dtype=F64) / sample_rate
    return torch.sin(2 * math.pi * (200 * t + 1500 * t**2 / t[-1]))


def _band_edges(settings: SpectrogramSettings) -> torch.Tensor:
    """(n_mels + 2,) Hz: evenly spaced on the mel scale from f_min to f_max (the definition)."""
    low, high = float(hz_to_mel(settings.f_min)), float(hz_to_mel(settings.top_frequency))
    return mel_to_hz(torch.linspace(low, high, settings.n_mels + 2, dtype=F64))


def test_slaney_mel_scale_closed_forms():
    linear = torch.tensor([0.0, 50.0, 200.0, 440.0, 999.0], dtype=F64)
    torch.testing.assert_close(hz_to_mel(linear), 3 * linear / 200, rtol=0, atol=1e-12)
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0, abs=1e-12)
    # above 1 kHz: 27 mel per factor 6.4
    assert float(hz_to_mel(6400.0)) == pytest.approx(42.0, abs=1e-10)
    assert float(hz_to_mel(1000 * 6.4**2)) == pytest.approx(69.0, abs=1e-10)
    hz = torch.tensor([0.0, 123.0, 999.9, 1000.0, 1000.1, 4321.0, 8000.0, 22050.0], dtype=F64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_filterbank_triangles_have_unit_area_and_slaney_height():
    # fine bins (about 1 Hz) so that the Riemann sum of each triangle is close to its integral
    settings = SpectrogramSettings(n_fft=16384, n_mels=40, f_min=50.0, f_max=7000.0)
    fb = mel_filterbank(settings).to(F64)
    assert fb.shape == (settings.n_freqs, settings.n_mels) and mel_filterbank(settings).dtype == torch.float32
    freqs = torch.arange(settings.n_freqs, dtype=F64) * settings.sample_rate / settings.n_fft
    bin_hz = settings.sample_rate / settings.n_fft
    edges = _band_edges(settings)
    for m in range(settings.n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        weights = fb[:, m]
        assert float((weights * bin_hz).sum()) == pytest.approx(1.0, abs=2e-3)
        peak = 2.0 / float(right - left)
        assert float(weights.max()) <= peak * (1 + 1e-6)
        assert float(weights.max()) >= peak * (1 - bin_hz / float(centre - left))
        outside = (freqs <= left) | (freqs >= right)
        assert float(weights[outside].abs().max()) == 0.0
        assert bool((weights[~outside] > 0).all())
        # linear on each side: zero second differences away from the peak
        rising = weights[(freqs > left) & (freqs < centre)]
        falling = weights[(freqs > centre) & (freqs < right)]
        for side in (rising, falling):
            assert float(side.diff().diff().abs().max()) < 1e-6 * peak


@pytest.mark.parametrize("band", [3, 10, 21, 35, 50, 62])
@pytest.mark.parametrize("offset", [-0.25, 0.0, 0.25])
def test_pure_tone_puts_most_mel_energy_in_the_nearest_band(band: int, offset: float):
    edges = _band_edges(SETTINGS)
    centres = edges[1:-1]
    gap = (centres[band + 1] - centres[band]) if offset > 0 else (centres[band] - centres[band - 1])
    frequency = float(centres[band] + offset * gap)
    assert int((centres - frequency).abs().argmin()) == band
    mel = mel_spectrogram(_tone(frequency, 8000), SETTINGS)
    assert int(mel.mean(dim=-1).argmax()) == band


@pytest.mark.parametrize("length", [4000, 4001, 4097])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_istft_inverts_stft(length: int, dtype: torch.dtype):
    wave = torch.randn(2, 3, length, generator=torch.Generator().manual_seed(length), dtype=dtype)
    spec = stft(wave, SETTINGS)
    assert spec.shape == (2, 3, SETTINGS.n_freqs, SETTINGS.frames(length)) and spec.is_complex()
    torch.testing.assert_close(istft(spec, SETTINGS, length), wave, rtol=0, atol=1e-5)


def test_frames_counts_the_stft_frames():
    for length in [257, 300, 511, 512, 513, 1000, 16000]:
        assert stft(torch.zeros(length), SETTINGS).shape[-1] == SETTINGS.frames(length)


def test_stft_of_a_bin_centred_tone_is_the_hann_main_lobe():
    n_fft, k0, amplitude, length = SETTINGS.n_fft, 37, 0.7, 6000
    magnitude = stft(_tone(k0 * SETTINGS.sample_rate / n_fft, length, amplitude=amplitude, phase=0.3),
                     SETTINGS).abs()
    # frames whose window lies inside the signal (no reflect padding)
    first, last = math.ceil(n_fft / 2 / SETTINGS.hop), (length - n_fft // 2) // SETTINGS.hop
    interior = magnitude[:, first:last + 1]
    peak = amplitude * n_fft / 4  # A/2 * sum of the periodic Hann window (n_fft / 2)
    torch.testing.assert_close(interior[k0], torch.full_like(interior[k0], peak), rtol=1e-9, atol=0)
    for neighbour in (k0 - 1, k0 + 1):  # the periodic Hann's DFT has -n_fft/4 at +-1 bin
        torch.testing.assert_close(interior[neighbour], torch.full_like(interior[k0], peak / 2), rtol=1e-9,
                                   atol=0)
    others = torch.ones(SETTINGS.n_freqs, dtype=torch.bool)
    others[k0 - 1:k0 + 2] = False
    assert float(interior[others].max()) < 1e-9 * peak


def test_griffin_lim_classic_converges_monotonically_and_momentum_ends_lower():
    length = 8000
    target = stft(_chirp(length), SETTINGS).abs()
    convergence = {}
    for momentum in (0.0, 0.99):
        wave, convergence[momentum] = griffin_lim(target, SETTINGS, length, iterations=48, momentum=momentum,
                                                  generator=torch.Generator().manual_seed(0),
                                                  return_convergence=True)
        assert wave.shape == (length,) and convergence[momentum].shape == (48,)
        # the reported value is that of the returned wave
        final = spectral_convergence(stft(wave, SETTINGS).abs(), target)
        assert float(final) == pytest.approx(float(convergence[momentum][-1]), rel=1e-9)
    assert float(convergence[0.0].diff().max()) <= 1e-12  # Griffin and Lim 1984: never increases
    assert float(convergence[0.0][-1]) < 0.5 * float(convergence[0.0][0])
    assert float(convergence[0.99][-1]) < 0.8 * float(convergence[0.0][-1])


def test_griffin_lim_is_reproducible_with_a_generator_and_batches():
    length = 3000
    target = stft(torch.stack([_chirp(length), _tone(700.0, length)]), SETTINGS).abs()
    first = griffin_lim(target, SETTINGS, length, iterations=4, generator=torch.Generator().manual_seed(1))
    again = griffin_lim(target, SETTINGS, length, iterations=4, generator=torch.Generator().manual_seed(1))
    assert first.shape == (2, length)
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_mel_to_linear_recovers_a_preimage_in_the_filterbank_range():
    magnitude = stft(_chirp(4000) + 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0),
                                                     dtype=F64), SETTINGS).abs()
    fb = mel_filterbank(SETTINGS).to(F64)
    mel = fb.T @ magnitude
    linear = mel_to_linear(mel, SETTINGS)
    assert linear.shape == magnitude.shape and linear.dtype == F64
    assert float(linear.min()) >= 0.0
    torch.testing.assert_close(fb.T @ linear, mel, rtol=0, atol=1e-9 * float(mel.abs().max()))


def test_mel_to_linear_meets_the_nonnegative_least_squares_kkt_conditions():
    """For a target outside the non-negative range: the gradient of ||fb.T s - mel||^2 vanishes where
    s > 0 and is >= 0 where s = 0."""
    mel = torch.randn(SETTINGS.n_mels, 12, generator=torch.Generator().manual_seed(3), dtype=F64)
    fb = mel_filterbank(SETTINGS).to(F64)
    linear = mel_to_linear(mel, SETTINGS, iterations=3000)
    gradient = fb @ (fb.T @ linear - mel)
    scale = float((fb @ mel).abs().max())
    assert float(linear.min()) >= 0.0 and bool((linear > 0).any()) and bool((linear == 0).any())
    assert float(gradient[linear > 0].abs().max()) < 1e-4 * scale
    assert float(gradient[linear == 0].min()) > -1e-4 * scale
    assert float((fb.T @ linear - mel).norm()) > 0.1 * float(mel.norm())  # not in the range: a real test


def test_mel_mask_resynthesis_of_the_mixture_mel_returns_the_mixture():
    mixture = torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    out = mel_mask_resynthesis(mel_spectrogram(mixture, SETTINGS), mixture, SETTINGS)
    torch.testing.assert_close(out, mixture, rtol=0, atol=1e-4)


def test_mel_mask_resynthesis_separates_tones_in_disjoint_bands():
    length = 16000
    low, high = _tone(330.0, length, amplitude=0.5), _tone(3100.0, length, amplitude=0.4, phase=1.0)
    mixture = low + high
    assert float(si_sdr(mixture, low)) < 3.0
    for source in (low, high):
        out = mel_mask_resynthesis(mel_spectrogram(source, SETTINGS), mixture, SETTINGS)
        assert float(si_sdr(out, source)) > 15.0


def test_mel_mask_resynthesis_is_safe_on_silence():
    silent = torch.zeros(3000)
    out = mel_mask_resynthesis(torch.rand(SETTINGS.n_mels, SETTINGS.frames(3000)), silent, SETTINGS)
    assert bool(torch.isfinite(out).all()) and float(out.abs().max()) == 0.0


def test_griffin_lim_resynthesis_matches_the_mel():
    length = 8000
    target = mel_spectrogram(_chirp(length), SETTINGS)
    wave = griffin_lim_resynthesis(target, SETTINGS, length, iterations=32,
                                   generator=torch.Generator().manual_seed(0))
    assert wave.shape == (length,)
    random_phase_error = (mel_spectrogram(torch.randn(length, dtype=F64), SETTINGS) - target).norm()
    error = float((mel_spectrogram(wave, SETTINGS) - target).norm() / target.norm())
    assert error < 0.2 and error < 0.1 * float(random_phase_error / target.norm())


def test_log_mel_and_the_module_agree_with_the_magnitude_mel():
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    mel = MelSpectrogram(SETTINGS)(wave)
    assert mel.shape == (2, SETTINGS.n_mels, SETTINGS.frames(4000))
    torch.testing.assert_close(log_mel(wave, SETTINGS), torch.log(mel + SETTINGS.log_floor), rtol=1e-5,
                               atol=1e-5)
    # power 1: scaling the wave scales the mel
    torch.testing.assert_close(MelSpectrogram(SETTINGS)(3 * wave), 3 * mel, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(sample_rate=0), dict(n_fft=1), dict(hop=0), dict(hop=1024),
                                    dict(n_mels=0), dict(f_max=9000.0), dict(f_min=-1.0),
                                    dict(f_min=5000.0, f_max=4000.0), dict(log_floor=0.0)])
def test_settings_reject_bad_values(kwargs: dict):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SpectrogramSettings(**kwargs)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="wave"):
        stft(torch.zeros(100), SETTINGS)  # not longer than n_fft // 2 = 256
    with pytest.raises(ValueError, match="n_mels"):
        mel_to_linear(torch.zeros(10, 5), SETTINGS)
    with pytest.raises(ValueError, match="frames"):
        griffin_lim(torch.zeros(SETTINGS.n_freqs, 7), SETTINGS, length=4000)
    with pytest.raises(ValueError, match="estimate_mel"):
        mel_mask_resynthesis(torch.zeros(SETTINGS.n_mels, 3), torch.zeros(4000), SETTINGS)
