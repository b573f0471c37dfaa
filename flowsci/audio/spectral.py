"""Spectrograms of waveforms and their inverses: STFT/iSTFT, the Slaney mel filterbank, the
(log-)mel spectrogram, a non-negative inverse of the filterbank and (fast) Griffin-Lim.

Everything is written on ``torch.stft`` / ``torch.istft``: torchaudio's wheels on the registry are
CUDA builds that fail to load next to the CPU torch of this project (``import torchaudio`` raises
OSError). Where a matching torchaudio imports, :class:`MelSpectrogram` uses its transform instead
(the two agree to float32 rounding; tests/test_audio_librosa.py checks both against librosa).

Shapes: a wave is (..., T); a spectrogram (..., n_freqs, frames) with n_freqs = n_fft // 2 + 1
and frames = 1 + T // hop (centred frames, reflect padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

try:
    from torchaudio.transforms import MelSpectrogram as TorchaudioMelSpectrogram
except (ImportError, OSError):  # not installed, or a CUDA build that cannot load next to CPU torch
    TorchaudioMelSpectrogram = None

# The Slaney (Auditory Toolbox) mel scale: linear below 1 kHz (200/3 Hz per mel, so 1 kHz is 15 mel),
# logarithmic above with 27 mel per factor 6.4 in frequency.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_MEL_PER_LOG_HZ = 27.0 / math.log(6.4)


@dataclass(frozen=True)
class SpectrogramSettings:
    """STFT and mel settings; ``f_max=None`` means the Nyquist frequency sample_rate / 2."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 128
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {self.sample_rate}")
        if self.n_fft < 2:
            raise ValueError(f"n_fft must be at least 2, got {self.n_fft}")
        if not 0 < self.hop <= self.n_fft:
            raise ValueError(f"hop must be in [1, n_fft={self.n_fft}], got {self.hop}")
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be at least 1, got {self.n_mels}")
        nyquist = self.sample_rate / 2
        if self.f_max is not None and not 0 < self.f_max <= nyquist:
            raise ValueError(f"f_max must be None or in (0, sample_rate / 2 = {nyquist}] Hz, "
                             f"got {self.f_max}")
        if not 0 <= self.f_min < self.top_frequency:
            raise ValueError(f"f_min must be in [0, f_max = {self.top_frequency}) Hz, got {self.f_min}")
        if not self.log_floor > 0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")

    @property
    def top_frequency(self) -> float:
        """The upper edge of the mel bands in Hz: f_max, or sample_rate / 2 when f_max is None."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    @property
    def n_freqs(self) -> int:
        """Number of one-sided STFT bins, n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def frames(self, length: int) -> int:
        """Number of centred STFT frames of a wave of ``length`` samples, 1 + length // hop."""
        return 1 + length // self.hop


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """The Slaney mel scale of frequencies ``hz`` (any shape): 3 f / 200 below 1 kHz, then log."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    log_part = _BREAK_MEL + torch.log(hz.clamp_min(_BREAK_HZ) / _BREAK_HZ) * _MEL_PER_LOG_HZ
    return torch.where(hz < _BREAK_HZ, hz / _LINEAR_HZ_PER_MEL, log_part)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`hz_to_mel` (any shape)."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    log_part = _BREAK_HZ * torch.exp((mel.clamp_min(_BREAK_MEL) - _BREAK_MEL) / _MEL_PER_LOG_HZ)
    return torch.where(mel < _BREAK_MEL, mel * _LINEAR_HZ_PER_MEL, log_part)


def bin_frequencies(settings: SpectrogramSettings) -> torch.Tensor:
    """(n_freqs,) float64 centre frequencies in Hz of the one-sided STFT bins."""
    return torch.linspace(0.0, settings.sample_rate / 2, settings.n_freqs, dtype=torch.float64)


def mel_band_edges(settings: SpectrogramSettings) -> torch.Tensor:
    """(n_mels + 2,) float64 frequencies in Hz, evenly spaced in mel from f_min to f_max: band m
    rises from edge m to its centre, edge m + 1, and falls to edge m + 2."""
    low, high = hz_to_mel(torch.tensor(settings.f_min)), hz_to_mel(torch.tensor(settings.top_frequency))
    return mel_to_hz(torch.linspace(float(low), float(high), settings.n_mels + 2, dtype=torch.float64))


@lru_cache(maxsize=16)
def _cached_filterbank(settings: SpectrogramSettings) -> torch.Tensor:
    edges = mel_band_edges(settings)
    freqs = bin_frequencies(settings)[:, None]
    left, centre, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    triangles = torch.minimum(rising, falling).clamp_min(0.0)
    # Slaney normalisation: height 2 / (right - left), so each triangle has unit area in Hz.
    return (triangles * 2.0 / (right - left)).to(torch.float32)


def mel_filterbank(settings: SpectrogramSettings) -> torch.Tensor:
    """(n_freqs, n_mels) float32 Slaney mel filterbank: triangles on the Slaney mel scale with unit
    area in Hz (librosa's ``htk=False, norm="slaney"``, torchaudio's ``mel_scale="slaney",
    norm="slaney"``). The mel spectrogram of a magnitude S (..., n_freqs, frames) is fb.T @ S."""
    return _cached_filterbank(settings).clone()


def _filterbank_like(settings: SpectrogramSettings, like: torch.Tensor) -> torch.Tensor:
    return _cached_filterbank(settings).to(device=like.device, dtype=like.real.dtype)


def _window(settings: SpectrogramSettings, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(settings.n_fft, periodic=True, dtype=like.real.dtype, device=like.device)


def stft(wave: torch.Tensor, settings: SpectrogramSettings) -> torch.Tensor:
    """Complex STFT (..., n_freqs, frames) of a real wave (..., T): periodic Hann window of n_fft,
    centred frames with reflect padding, not normalised."""
    if wave.dim() < 1 or wave.is_complex():
        raise ValueError(f"wave must be a real tensor (..., T), got shape {tuple(wave.shape)} {wave.dtype}")
    if wave.shape[-1] <= settings.n_fft // 2:
        raise ValueError(f"wave must be longer than n_fft // 2 = {settings.n_fft // 2} samples for "
                         f"reflect padding, got {wave.shape[-1]}")
    flat = wave.reshape(-1, wave.shape[-1])
    spec = torch.stft(flat, settings.n_fft, hop_length=settings.hop, window=_window(settings, wave),
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return spec.reshape(*wave.shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, settings: SpectrogramSettings, length: int) -> torch.Tensor:
    """Wave (..., length) whose :func:`stft` is closest to the complex ``spec`` (..., n_freqs, frames)
    in least squares (windowed overlap-add; exact inverse of a consistent spectrogram)."""
    if not spec.is_complex() or spec.dim() < 2 or spec.shape[-2] != settings.n_freqs:
        raise ValueError(f"spec must be complex (..., n_freqs={settings.n_freqs}, frames), got shape "
                         f"{tuple(spec.shape)} {spec.dtype}")
    if length < 1:
        raise ValueError(f"length must be a positive number of samples, got {length}")
    flat = spec.reshape(-1, *spec.shape[-2:])
    wave = torch.istft(flat, settings.n_fft, hop_length=settings.hop, window=_window(settings, spec),
                       center=True, normalized=False, onesided=True, length=length)
    return wave.reshape(*spec.shape[:-2], length)


def mel_spectrogram(wave: torch.Tensor, settings: SpectrogramSettings) -> torch.Tensor:
    """Magnitude mel spectrogram (..., n_mels, frames) of a wave (..., T): fb.T @ |STFT|."""
    magnitude = stft(wave, settings).abs()
    return torch.einsum("fm,...ft->...mt", _filterbank_like(settings, magnitude), magnitude)


def log_mel(wave: torch.Tensor, settings: SpectrogramSettings) -> torch.Tensor:
    """log(mel + log_floor), (..., n_mels, frames), of a wave (..., T)."""
    return torch.log(mel_spectrogram(wave, settings) + settings.log_floor)


class MelSpectrogram(torch.nn.Module):
    """wave (..., T) -> magnitude mel spectrogram (..., n_mels, frames) (power 1: |STFT| then the
    Slaney filterbank). Uses torchaudio's transform when torchaudio imports, else :func:`stft`."""

    def __init__(self, settings: SpectrogramSettings):
        super().__init__()
        self.settings = settings
        self.torchaudio = None if TorchaudioMelSpectrogram is None else TorchaudioMelSpectrogram(
            sample_rate=settings.sample_rate, n_fft=settings.n_fft, hop_length=settings.hop,
            f_min=settings.f_min, f_max=settings.f_max, n_mels=settings.n_mels, window_fn=torch.hann_window,
            power=1.0, normalized=False, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        self.register_buffer("filterbank", mel_filterbank(settings), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.torchaudio is not None:
            return self.torchaudio(wave)
        magnitude = stft(wave, self.settings).abs()
        return torch.einsum("fm,...ft->...mt", self.filterbank.to(magnitude.dtype), magnitude)


def mel_to_linear(mel: torch.Tensor, settings: SpectrogramSettings, iterations: int = 200) -> torch.Tensor:
    """A non-negative linear-frequency magnitude (..., n_freqs, frames) whose mel spectrogram is
    closest to ``mel`` (..., n_mels, frames).

    Minimises ||fb.T @ S - mel||_F^2 over S >= 0 (a convex non-negative least-squares problem, one
    per frame) by accelerated projected gradient (FISTA, step 1 / ||fb||_2^2), started from the
    minimum-norm least-squares solution pinv(fb.T) @ mel clamped at 0. The minimiser is not unique
    (n_freqs > n_mels); bins that no band covers stay 0.
    """
    if mel.dim() < 2 or mel.shape[-2] != settings.n_mels:
        raise ValueError(f"mel must be (..., n_mels={settings.n_mels}, frames), got {tuple(mel.shape)}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    fb = _cached_filterbank(settings).to(device=mel.device, dtype=torch.float64)
    # every frame of every leading index is one column: two large matrix products per iteration
    target = mel.to(torch.float64).movedim(-2, 0).reshape(settings.n_mels, -1)
    step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2)) ** 2

    def gradient(s: torch.Tensor) -> torch.Tensor:
        return fb @ (fb.T @ s - target)

    estimate = (torch.linalg.pinv(fb.T) @ target).clamp_min(0.0)
    previous, momentum_point, momentum = estimate, estimate, 1.0
    for _ in range(iterations):
        estimate = (momentum_point - step * gradient(momentum_point)).clamp_min(0.0)
        next_momentum = (1.0 + math.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
        momentum_point = estimate + (momentum - 1.0) / next_momentum * (estimate - previous)
        previous, momentum = estimate, next_momentum
    shape = (settings.n_freqs, *mel.shape[:-2], mel.shape[-1])
    return estimate.reshape(shape).movedim(0, -2).to(mel.dtype)


def spectral_convergence(magnitude: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||magnitude - target||_F / ||target||_F over the last two dims, (...)."""
    return torch.linalg.matrix_norm(magnitude - target) / torch.linalg.matrix_norm(target)


def griffin_lim(magnitude: torch.Tensor, settings: SpectrogramSettings, length: int, iterations: int = 32,
                momentum: float = 0.99, generator: torch.Generator | None = None,
                return_convergence: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A wave (..., length) whose STFT magnitude approximates ``magnitude`` (..., n_freqs, frames).

    Fast Griffin-Lim (Perraudin, Balazs and Sondergaard 2013): starting from a random phase
    (drawn from ``generator``), alternate projections on the spectrograms with magnitude M
    (c -> M c / |c|) and on the consistent spectrograms (c -> STFT(iSTFT(c))), with the
    extrapolation c_n = t_n + momentum (t_n - t_{n-1}) of the consistent iterates t_n.
    ``momentum=0`` is classic Griffin-Lim (Griffin and Lim 1984), whose spectral convergence
    || |STFT(x_n)| - M ||_F / ||M||_F never increases. With ``return_convergence`` also returns
    that convergence (..., iterations) of the wave after each iteration; the wave returned is the last.
    """
    if magnitude.is_complex() or magnitude.dim() < 2 or magnitude.shape[-2] != settings.n_freqs:
        raise ValueError(f"magnitude must be real (..., n_freqs={settings.n_freqs}, frames), got "
                         f"{tuple(magnitude.shape)} {magnitude.dtype}")
    if magnitude.shape[-1] != settings.frames(length):
        raise ValueError(f"magnitude has {magnitude.shape[-1]} frames but a wave of length {length} has "
                         f"{settings.frames(length)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    draw_on = magnitude.device if generator is None else generator.device
    phase = torch.rand(magnitude.shape, generator=generator, dtype=magnitude.dtype, device=draw_on)
    phase = phase.to(magnitude.device)
    extrapolated = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase)
    consistent_prev = torch.zeros_like(extrapolated)
    convergence = []
    for _ in range(iterations):
        unit = extrapolated / extrapolated.abs().clamp_min(torch.finfo(magnitude.dtype).tiny)
        wave = istft(magnitude * unit, settings, length)
        consistent = stft(wave, settings)
        convergence.append(spectral_convergence(consistent.abs(), magnitude))
        extrapolated = consistent + momentum * (consistent - consistent_prev)
        consistent_prev = consistent
    if return_convergence:
        return wave, torch.stack(convergence, dim=-1)
    return wave
