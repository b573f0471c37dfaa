"""Reading and (atomically) writing audio files with soundfile (libsndfile)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import soundfile
import torch

from flowsci.atomic import atomic_path

logger = logging.getLogger("flowsci.audio")


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """The wave (channels, T) as float32 in [-1, 1] (for PCM files) and the sample rate of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    return torch.from_numpy(data.T.copy()), int(sample_rate)


def write_audio(path: str | os.PathLike, wave: torch.Tensor, sample_rate: int,
                subtype: str = "PCM_16") -> None:
    """Write wave (T,) or (C, T) to ``path`` atomically; the container format comes from the extension
    (.wav, .flac, ...). PCM subtypes clip the wave to [-1, 1], with a warning when that changes it."""
    path = Path(path)
    file_format = path.suffix.lstrip(".").upper()
    if file_format not in soundfile.available_formats():
        raise ValueError(f"unknown audio extension {path.suffix!r} of {path}; soundfile writes "
                         f"{sorted(soundfile.available_formats())}")
    if not soundfile.check_format(file_format, subtype):
        raise ValueError(f"subtype {subtype!r} is not valid for {file_format} files; valid: "
                         f"{sorted(soundfile.available_subtypes(file_format))}")
    if wave.dim() not in (1, 2) or wave.shape[-1] == 0:
        raise ValueError(f"wave must be (T,) or (channels, T) with T > 0, got {tuple(wave.shape)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    data = wave.detach().to("cpu", torch.float32)
    if subtype.startswith("PCM") and bool((data.abs() > 1.0).any()):
        logger.warning("write_audio: clipping %s to [-1, 1] for %s (peak %.3f)", path, subtype,
                       float(data.abs().max()))
        data = data.clamp(-1.0, 1.0)
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format is given, not guessed from the name.
        frames = (data.T if data.dim() == 2 else data).numpy()  # soundfile wants (T,) or (T, C)
        soundfile.write(tmp, frames, int(sample_rate), subtype=subtype, format=file_format)


@dataclasses.dataclass
class AudioClip:
    """A listening example a domain returns with its figures: saved as ``<name>.wav`` beside them
    (:func:`flowsci.figures.save_figures`). wave: (T,) or (C, T)."""

    wave: torch.Tensor
    sample_rate: int

    def save_to(self, directory: Path, name: str) -> Path:
        path = Path(directory) / f"{name}.wav"
        write_audio(path, self.wave, self.sample_rate)
        return path
