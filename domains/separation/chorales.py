"""Bach's four-part chorales from music21's corpus as note lists per voice, cached as JSON.

Each voice is a monophonic line of (onset seconds, duration seconds, MIDI pitch) rows at a
fixed tempo: tied notes are merged, rests are gaps, a chord (rare) keeps its top note, and a
note ends no later than the next one of its voice begins. Repeat signs and fermatas are not
performed. Parsing the whole corpus takes about two minutes, so the note lists are cached in
one JSON file, one entry per (format, music21 version, tempo, limit).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from flowsci.atomic import atomic_write_text
from flowsci.errors import DataError

log = logging.getLogger(__name__)

VOICES = ("soprano", "alto", "tenor", "bass")
# part names (lower case, letters only) that name each voice
VOICE_NAMES = {"soprano": "soprano", "sopran": "soprano", "s": "soprano", "alto": "alto", "alt": "alto",
               "a": "alto", "tenor": "tenor", "t": "tenor", "bass": "bass", "basso": "bass", "b": "bass"}
CHORALE_SUFFIXES = (".mxl", ".xml", ".krn")
CACHE_FORMAT = 1  # bump when the cached note lists change meaning


@dataclass
class Chorale:
    """One chorale: ``notes[voice]`` is a float array (n, 3) of (onset s, duration s, MIDI pitch),
    sorted by onset, at ``bpm`` quarter notes a minute; ``seconds`` is the length of the score."""

    name: str
    notes: dict[str, np.ndarray]
    seconds: float
    bpm: float


def _music21() -> Any:
    try:
        import music21
    except ImportError:
        raise DataError("the separation domain reads Bach chorales from music21's corpus, which is not "
                        "installed: pip install 'flowsci[separation]'") from None
    return music21


def _corpus_files(music21: Any) -> list[tuple[str, Path]]:
    """(corpus name, file) of every score in music21's Bach folder, sorted by name."""
    root = Path(music21.common.getCorpusFilePath())
    files = [p for p in (root / "bach").iterdir() if p.suffix in CHORALE_SUFFIXES]
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p) for p in files)


def _voice_of(part: Any) -> str | None:
    """The voice a part's name (or id) names, or None."""
    for label in (part.partName, part.id):
        key = re.sub(r"[^a-z]", "", str(label or "").lower())
        if key in VOICE_NAMES:
            return VOICE_NAMES[key]
    return None


def _voice_notes(part: Any, seconds_per_quarter: float) -> np.ndarray:
    """The part as a monophonic line (n, 3): ties merged, a chord's or a shared onset's top note kept."""
    top: dict[float, tuple[float, int]] = {}
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if length <= 0:  # grace notes
            continue
        pitch = max(p.midi for p in element.pitches)
        onset = float(element.offset)
        if onset not in top or pitch > top[onset][1]:
            top[onset] = (length, pitch)
    onsets = sorted(top)
    rows = []
    for i, onset in enumerate(onsets):
        length, pitch = top[onset]
        if i + 1 < len(onsets):
            length = min(length, onsets[i + 1] - onset)
        rows.append((onset * seconds_per_quarter, length * seconds_per_quarter, float(pitch)))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _parse(music21: Any, name: str, file: Path, bpm: float) -> Chorale | None:
    """The chorale in ``file``, or None unless its parts are exactly soprano, alto, tenor and bass."""
    score = music21.converter.parse(file)
    voices = [_voice_of(part) for part in score.parts]
    if sorted(v for v in voices if v is not None) != sorted(VOICES) or len(voices) != len(VOICES):
        return None
    seconds_per_quarter = 60.0 / bpm
    notes = {voice: _voice_notes(part, seconds_per_quarter) for voice, part in zip(voices, score.parts)}
    return Chorale(name, {v: notes[v] for v in VOICES}, float(score.highestTime) * seconds_per_quarter, bpm)


def _to_json(chorales: list[Chorale]) -> list[dict[str, Any]]:
    return [{"name": c.name, "seconds": c.seconds, "notes": {v: c.notes[v].tolist() for v in VOICES}}
            for c in chorales]


def _from_json(entries: list[dict[str, Any]], bpm: float) -> list[Chorale]:
    return [Chorale(e["name"], {v: np.array(e["notes"][v], dtype=np.float64).reshape(-1, 3) for v in VOICES},
                    float(e["seconds"]), bpm) for e in entries]


def _read_cache(cache: Path) -> dict[str, Any]:
    if not cache.is_file():
        return {}
    try:
        return json.loads(cache.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable chorale cache (%s); parsing again and replacing it", cache, exc)
        return {}


def load_chorales(cache: Path, bpm: float = 100.0, limit: int | None = None,
                  progress: bool = False) -> list[Chorale]:
    """Every chorale of music21's corpus whose parts are exactly S/A/T/B, sorted by corpus name.

    ``limit`` stops after that many chorales (in the same order; for tests and smoke runs).
    The note lists are read from the JSON file ``cache`` when it holds an entry for this
    music21 version, ``bpm`` and ``limit``; otherwise parsed and added to it atomically.
    """
    if not bpm > 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None (all chorales) or an integer >= 1, got {limit!r}")
    music21 = _music21()
    cache = Path(cache)
    key = f"format={CACHE_FORMAT} music21={music21.__version__} bpm={bpm:g} limit={limit or 'all'}"
    entries = _read_cache(cache)
    if key in entries:
        return _from_json(entries[key], bpm)
    chorales: list[Chorale] = []
    files = _corpus_files(music21)
    for name, file in tqdm(files, desc="parsing chorales", unit="score", disable=not progress):
        chorale = _parse(music21, name, file, bpm)
        if chorale is not None:
            chorales.append(chorale)
        if limit is not None and len(chorales) == limit:
            break
    entries = _read_cache(cache)  # re-read: another process may have added an entry meanwhile
    entries[key] = _to_json(chorales)
    atomic_write_text(cache, json.dumps(entries))
    return chorales
