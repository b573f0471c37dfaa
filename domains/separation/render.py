"""One voice's notes rendered to audio with the General-MIDI soundfont in pretty_midi's wheel.

A fresh tinysoundfont synthesizer renders each call, so the same notes give the same samples
bit for bit. Notes that began before the window still sound in it: rendering starts at the
earliest of them (and at least ``RELEASE_SECONDS`` early, for the release tails of notes that
ended just before the window), and the window is cropped out.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from flowsci.errors import DataError

SOUNDFONT = "TimGM6mb.sf2"
# General-MIDI programs (0-based) of sustained instruments; each sounds at every MIDI key 36-87
# in TimGM6mb (checked; its alto sax, for one, is silent at key 64), so any can play any voice.
INSTRUMENTS: dict[str, int] = {"flute": 73, "oboe": 68, "clarinet": 71, "bassoon": 70, "french horn": 60,
                               "violin": 40, "viola": 41, "cello": 42}
RELEASE_SECONDS = 1.0


def soundfont_path() -> Path:
    """The General-MIDI soundfont TimGM6mb.sf2 shipped inside the pretty_midi wheel."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise DataError(f"the separation domain renders audio with {SOUNDFONT} from the pretty_midi wheel, "
                        "which is not installed: pip install 'flowsci[separation]'")
    path = Path(spec.origin).parent / SOUNDFONT
    if not path.is_file():
        raise DataError(f"{path}: the soundfont is missing from the installed pretty_midi")
    return path


@functools.cache
def _soundfont_bytes() -> bytes:
    return soundfont_path().read_bytes()


def _synth(program: int, sample_rate: int) -> Any:
    """A fresh tinysoundfont synthesizer playing ``program`` on channel 0."""
    try:
        import tinysoundfont
    except ImportError:
        raise DataError("the separation domain renders audio with tinysoundfont, which is not installed: "
                        "pip install --no-deps tinysoundfont (`make install` does it)") from None
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    synth.program_select(0, synth.sfload(_soundfont_bytes()), 0, program)
    return synth


def _check(notes: np.ndarray, program: int, sample_rate: int, length: int, velocity: int) -> np.ndarray:
    notes = np.asarray(notes, dtype=np.float64)
    if notes.ndim != 2 or notes.shape[1] != 3 or not np.isfinite(notes).all():
        raise ValueError(f"notes must be a finite array (n, 3) of (onset s, duration s, MIDI pitch), "
                         f"got shape {notes.shape}")
    if (notes[:, 1] < 0).any() or ((notes[:, 2] < 0) | (notes[:, 2] > 127)).any():
        raise ValueError("notes need durations >= 0 and MIDI pitches in 0..127")
    for name, value, low, high in (("program", program, 0, 127), ("sample_rate", sample_rate, 1, None),
                                   ("length", length, 0, None), ("velocity", velocity, 1, 127)):
        if not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
            raise ValueError(f"{name} must be an integer in [{low}, {high if high is not None else 'inf'}], "
                             f"got {value!r}")
    return notes


def render_voice(notes: np.ndarray, program: int, sample_rate: int, start: float, length: int,
                 velocity: int = 90) -> np.ndarray:
    """Mono float32 audio (length,) of ``notes`` (n, 3) rows (onset s, duration s, MIDI pitch) played
    by General-MIDI ``program`` in the window [start, start + length / sample_rate) seconds."""
    notes = _check(notes, program, sample_rate, length, velocity)
    first = round(start * sample_rate)  # the window's first sample, on the chorale's sample clock
    on = np.round(notes[:, 0] * sample_rate).astype(np.int64)
    off = np.maximum(np.round(notes[:, :2].sum(1) * sample_rate).astype(np.int64), on + 1)
    begin = first - round(RELEASE_SECONDS * sample_rate)
    keep = (on < first + length) & (off > begin)
    begin = min([begin, *on[keep].tolist()])
    # note-offs sort before note-ons at the same sample, so a repeated key is struck again
    events = sorted([(int(t), 0, int(k)) for t, k in zip(off[keep], notes[keep, 2])]
                    + [(int(t), 1, int(k)) for t, k in zip(on[keep], notes[keep, 2])])
    synth = _synth(int(program), int(sample_rate))
    chunks, now = [], begin
    for time, is_on, key in events:
        if time >= first + length:
            break
        if time > now:
            chunks.append(np.frombuffer(synth.generate(time - now), np.float32))
            now = time
        if is_on:
            synth.noteon(0, key, int(velocity))
        else:
            synth.noteoff(0, key)
    if first + length > now:
        chunks.append(np.frombuffer(synth.generate(first + length - now), np.float32))
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo[first - begin:].mean(1, dtype=np.float32)
