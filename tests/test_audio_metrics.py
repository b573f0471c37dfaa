"""Oracle tests of flowsci.audio's metrics and I/O: SI-SDR of constructed orthogonal noise of known
energy, its invariances, BSS Eval SDR at a known SNR, distances of known constant offsets, and
audio file round trips."""

from __future__ import annotations

import logging
import math

import pytest
import soundfile
import torch

from flowsci.audio import (
    log_spectral_distance,
    mel_l1,
    read_audio,
    sdr,
    si_sdr,
    si_sdr_improvement,
    write_audio,
)

F64 = torch.float64


def _signal(length: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(length, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _orthogonal_noise(reference: torch.Tensor, energy_ratio: float, seed: int) -> torch.Tensor:
    """Zero-mean noise exactly orthogonal to the zero-mean ``reference`` with
    ||noise||^2 = energy_ratio ||reference||^2 (Gram-Schmidt against the constant and the reference)."""
    noise = _signal(reference.shape[-1], seed)
    noise = noise - noise.mean()
    noise = noise - (noise @ reference) / (reference @ reference) * reference
    return noise * math.sqrt(energy_ratio * float(reference @ reference) / float(noise @ noise))


def test_si_sdr_of_a_scaled_copy_is_at_least_100_db():
    reference = _signal(8000, 0, torch.float32).reshape(2, 4000)
    for scale in (1.0, 3.7, -0.01):
        value = si_sdr(scale * reference, reference)
        assert value.shape == (2,) and value.dtype == F64
        assert bool(torch.isfinite(value).all()) and float(value.min()) >= 100.0


@pytest.mark.parametrize("energy_ratio", [0.01, 0.5, 3.0])
def test_si_sdr_with_orthogonal_noise_of_known_energy(energy_ratio: float):
    reference = _signal(5000, 1)
    reference = reference - reference.mean()
    estimate = reference + _orthogonal_noise(reference, energy_ratio, seed=2)
    assert float(si_sdr(estimate, reference)) == pytest.approx(10 * math.log10(1 / energy_ratio), abs=1e-6)


def test_si_sdr_is_scale_invariant_and_zero_mean_removes_offsets():
    reference, noise = _signal(3000, 3), _signal(3000, 4)
    estimate = reference + 0.3 * noise
    base = float(si_sdr(estimate, reference))
    for scale in (0.1, 7.0):
        assert float(si_sdr(scale * estimate, reference)) == pytest.approx(base, abs=1e-9)
    assert float(si_sdr(estimate + 5.0, reference)) == pytest.approx(base, abs=1e-9)
    assert float(si_sdr(estimate + 5.0, reference, zero_mean=False)) < base - 10.0


def test_si_sdr_improvement_of_the_mixture_is_zero():
    sources = _signal(8000, 5).reshape(2, 4000)
    mixture = sources.sum(dim=0)
    assert float(si_sdr_improvement(mixture, sources[0], mixture)) == pytest.approx(0.0, abs=1e-12)
    # the mixture of two equal-power independent sources is at about 0 dB, the source itself >= 100 dB
    assert float(si_sdr_improvement(sources[0], sources[0], mixture)) > 95.0


def test_sdr_of_a_scaled_copy_and_of_white_noise_at_10_db():
    reference = _signal(16000, 6)
    assert float(sdr(0.5 * reference, reference)) > 100.0
    noise = _signal(16000, 7)
    noise = noise * math.sqrt(0.1 * float(reference @ reference) / float(noise @ noise))
    # the 512-tap distortion filter absorbs about 512 / 16000 of the noise: a little over 10 dB
    assert float(sdr(reference + noise, reference)) == pytest.approx(10.0, abs=0.5)
    batch = sdr(torch.stack([reference + noise, 0.5 * reference]), torch.stack([reference, reference]))
    assert batch.shape == (2,) and batch.dtype == F64
    assert float(batch[0]) == pytest.approx(float(sdr(reference + noise, reference)), abs=1e-9)


def test_sdr_rejects_a_silent_reference():
    with pytest.raises(ValueError, match="reference item 1 is silent"):
        sdr(torch.ones(2, 1000), torch.stack([torch.ones(1000), torch.zeros(1000)]))


def test_mel_l1_and_log_spectral_distance_of_identical_and_offset_inputs():
    log_mel = torch.randn(2, 3, 16, 20, generator=torch.Generator().manual_seed(8))
    assert mel_l1(log_mel, log_mel).shape == (2, 3)
    assert float(mel_l1(log_mel, log_mel).abs().max()) == 0.0
    torch.testing.assert_close(mel_l1(log_mel - 0.75, log_mel), torch.full((2, 3), 0.75, dtype=F64), rtol=0,
                               atol=1e-6)
    magnitude = torch.rand(2, 33, 10, generator=torch.Generator().manual_seed(9), dtype=F64) + 0.01
    assert float(log_spectral_distance(magnitude, magnitude).abs().max()) == 0.0
    offset_db = 6.0
    lsd = log_spectral_distance(magnitude * 10 ** (offset_db / 20), magnitude)
    torch.testing.assert_close(lsd, torch.full((2,), offset_db, dtype=F64), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="estimate_mag"):
        log_spectral_distance(magnitude, magnitude[..., :5])


def test_write_read_round_trip(tmp_path):
    wave = 1.8 * torch.rand(2, 3001, generator=torch.Generator().manual_seed(10)) - 0.9
    wave[0, 0], wave[1, 0] = 1.0, -1.0
    write_audio(tmp_path / "pcm.wav", wave, 16000)
    back, sample_rate = read_audio(tmp_path / "pcm.wav")
    assert sample_rate == 16000 and back.shape == (2, 3001) and back.dtype == torch.float32
    assert float((back - wave).abs().max()) <= 1 / 32768 + 1e-7
    write_audio(tmp_path / "float.wav", wave[0], 22050, subtype="FLOAT")
    back, sample_rate = read_audio(tmp_path / "float.wav")
    assert sample_rate == 22050 and back.shape == (1, 3001)
    assert torch.equal(back[0], wave[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.wav", "pcm.wav"]  # no temporary files


def test_write_audio_clips_pcm_with_a_warning(tmp_path, caplog):
    wave = torch.tensor([0.0, 1.5, -2.0, 0.25]).repeat(100)
    with caplog.at_level(logging.WARNING, logger="flowsci.audio"):
        write_audio(tmp_path / "loud.flac", wave, 8000)
    assert any("clipping" in record.getMessage() for record in caplog.records)
    back, _ = read_audio(tmp_path / "loud.flac")
    assert float(back.max()) <= 1.0 and float(back.min()) >= -1.0
    assert float(back[0, 2]) == -1.0 and float(back[0, 1]) == pytest.approx(1.0, abs=1 / 32768)
    assert soundfile.info(str(tmp_path / "loud.flac")).format == "FLAC"


def test_audio_io_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.wav"
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        read_audio(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio")
    with pytest.raises(ValueError, match="garbage.wav"):
        read_audio(garbage)
    with pytest.raises(ValueError, match="extension"):
        write_audio(tmp_path / "x.notaformat", torch.zeros(10), 8000)
    with pytest.raises(ValueError, match="subtype"):
        write_audio(tmp_path / "x.wav", torch.zeros(10), 8000, subtype="VORBIS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.wav"]
