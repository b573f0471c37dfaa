"""The separation data set: excerpts of chorales rendered per voice, and mixtures of them.

Each excerpt is a window of one chorale that starts on a beat and in which every voice sounds
for at least half the time. Its four voices are played by four distinct instruments drawn at
random (so a query names the role, not the timbre), rendered, and scaled to a common RMS.
A mixture is a subset of 2-4 voices (by default), each with a gain drawn uniformly in
[-gain_db, 0] dB; absent voices have gain 0. Training excerpts carry ``mixtures_per_excerpt``
mixtures; validation and test excerpts carry one, stored in row 0 of the same (K, 4) gains array
whose other rows are all zero (a row without a voice is no mixture). Chorales are split
between train, val and test by hymn tune, so no chorale, nor another harmonisation of its
tune, appears in two splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flowsci.data import load_split, write_dataset
from flowsci_domains.separation.chorales import VOICES, Chorale, load_chorales
from flowsci_domains.separation.render import INSTRUMENTS, SOUNDFONT, render_voice

SPLITS = ("train", "val", "test")
TARGET_RMS = 0.05           # every rendered voice is scaled to this RMS before the gains
MAX_SILENT_FRACTION = 0.5   # an excerpt is redrawn when a voice rests for more of it than this
MAX_DRAWS = 1000            # redraws of one excerpt before giving up
TUNE_NOTES = 12             # soprano notes that identify a hymn tune


@dataclass
class MixtureSettings:
    """How the data set is made; see the module docstring. ``n_train`` / ``n_val`` / ``n_test``
    count excerpts; ``heldout_chorales`` is the fraction of chorales for val + test (halved, by tune);
    ``instruments`` None means all of :data:`INSTRUMENTS`."""

    sample_rate: int = 16000
    clip_samples: int = 32640  # 255 * 128: 256 STFT frames at hop 128
    bpm: float = 100.0
    n_chorales: int | None = None
    n_train: int = 500
    n_val: int = 50
    n_test: int = 120
    mixtures_per_excerpt: int = 4
    min_voices: int = 2
    max_voices: int = 4
    gain_db: float = 6.0
    instruments: list[str] | None = None
    heldout_chorales: float = 0.2

    def __post_init__(self) -> None:
        counts = {"sample_rate": 1, "clip_samples": 1, "n_train": 1, "n_val": 1, "n_test": 1,
                  "mixtures_per_excerpt": 1, "min_voices": 1, "max_voices": self.min_voices}
        for name, low in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_voices > len(VOICES):
            raise ValueError(f"max_voices must be <= {len(VOICES)}, got {self.max_voices}")
        if self.n_chorales is not None and (isinstance(self.n_chorales, bool)
                                            or not isinstance(self.n_chorales, int) or self.n_chorales < 3):
            raise ValueError(f"n_chorales must be None (all) or an integer >= 3 (train, val and test need "
                             f"one each), got {self.n_chorales!r}")
        if not self.bpm > 0:
            raise ValueError(f"bpm must be > 0, got {self.bpm}")
        if not self.gain_db >= 0:
            raise ValueError(f"gain_db must be >= 0, got {self.gain_db}")
        if not 0 < self.heldout_chorales < 1:
            raise ValueError(f"heldout_chorales must be in (0, 1), got {self.heldout_chorales}")
        if self.instruments is not None:
            unknown = [name for name in self.instruments if name not in INSTRUMENTS]
            if unknown or len(set(self.instruments)) != len(self.instruments) or len(self.instruments) < 4:
                raise ValueError(f"instruments must be None or >= {len(VOICES)} distinct names of "
                                 f"{', '.join(INSTRUMENTS)}, got {self.instruments}")

    @property
    def programs(self) -> dict[str, int]:
        """The instruments drawn from: name -> General-MIDI program."""
        return {name: INSTRUMENTS[name] for name in (self.instruments or INSTRUMENTS)}


def tune(chorale: Chorale) -> tuple[int, ...]:
    """The hymn tune of a chorale: the intervals between its first ``TUNE_NOTES`` soprano pitches.
    The corpus harmonises many tunes more than once (365 chorales, about 260 tunes; one tune
    up to 8 times, some harmonisations sharing three voices), so splits keep tunes apart."""
    return tuple(np.diff(chorale.notes["soprano"][:TUNE_NOTES, 2]).astype(int).tolist())


def split_chorales(tunes: Sequence[Hashable], heldout: float, rng: np.random.Generator
                   ) -> dict[str, np.ndarray]:
    """Disjoint sorted index arrays into ``tunes`` (one per chorale) for train, val and test: whole
    tunes, in random order, go to val until it holds half of a fraction ``heldout`` of the chorales
    (at least one), then to test until it holds the other half, the rest to train."""
    n = len(tunes)
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(tunes):
        groups.setdefault(key, []).append(index)
    n_heldout = max(2, round(heldout * n))
    wanted = {"val": n_heldout // 2, "test": n_heldout - n_heldout // 2}
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    members = list(groups.values())
    for g in rng.permutation(len(members)):
        split = next((split for split in wanted if len(parts[split]) < wanted[split]), "train")
        parts[split] += members[g]
    empty = [split for split in SPLITS if not parts[split]]
    if empty:
        raise ValueError(f"{n} chorales of {len(groups)} tunes leave no chorale for {', '.join(empty)} with "
                         f"heldout_chorales={heldout}; raise n_chorales or change heldout_chorales")
    return {split: np.sort(np.array(parts[split], dtype=np.int64)) for split in SPLITS}


def sounding_fraction(notes: np.ndarray, start: float, seconds: float) -> float:
    """The fraction of [start, start + seconds) covered by ``notes`` (n, 3), which do not overlap."""
    ends = notes[:, 0] + notes[:, 1]
    covered = np.clip(np.minimum(ends, start + seconds) - np.maximum(notes[:, 0], start), 0, None)
    return float(covered.sum() / seconds)


def _draw_excerpt(chorales: list[Chorale], pool: np.ndarray, s: MixtureSettings, rng: np.random.Generator
                  ) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(chorale index, start seconds, programs (4,), sources (4, T) at TARGET_RMS) of one excerpt."""
    seconds, beat = s.clip_samples / s.sample_rate, 60.0 / s.bpm
    names = list(s.programs)
    for _ in range(MAX_DRAWS):
        index = int(pool[rng.integers(len(pool))])
        chorale = chorales[index]
        start = beat * int(rng.integers(max(1, int((chorale.seconds - seconds) // beat) + 1)))
        drawn = rng.choice(len(names), len(VOICES), replace=False)
        programs = np.array([s.programs[names[i]] for i in drawn])
        if any(sounding_fraction(chorale.notes[v], start, seconds) < 1 - MAX_SILENT_FRACTION for v in VOICES):
            continue
        sources = np.stack([render_voice(chorale.notes[v], int(p), s.sample_rate, start, s.clip_samples)
                            for v, p in zip(VOICES, programs)])
        rms = np.sqrt(np.mean(sources.astype(np.float64) ** 2, axis=1, keepdims=True))
        if (rms > 0).all():
            return index, start, programs, (sources * (TARGET_RMS / rms)).astype(np.float32)
    raise ValueError(f"no excerpt of {seconds:.2f} s found in {MAX_DRAWS} draws in which every voice sounds "
                     f"for >= {1 - MAX_SILENT_FRACTION:.0%} of the time; lower clip_samples")


def _draw_gains(s: MixtureSettings, k: int, rng: np.random.Generator) -> np.ndarray:
    """(mixtures_per_excerpt, 4) gains: rows < k are mixtures of 2-4 (min..max_voices) voices, the rest 0."""
    gains = np.zeros((s.mixtures_per_excerpt, len(VOICES)), dtype=np.float32)
    for row in gains[:k]:
        present = rng.choice(len(VOICES), int(rng.integers(s.min_voices, s.max_voices + 1)), replace=False)
        row[present] = 10 ** (rng.uniform(-s.gain_db, 0, len(present)) / 20)
    return gains


def make_separation_data(settings: MixtureSettings, path: Path, seed: int, cache: Path,
                         progress: bool = False) -> None:
    """Draw, render and mix the excerpts of every split and write them to the HDF5 file ``path``.

    Per split: ``sources`` (N, 4, T) float32, ``gains`` (N, K, 4) float32, ``programs`` (N, 4)
    int64, and per-sample ``chorale`` (index into attr ``chorale_names``) and ``start_seconds``.
    ``cache`` is the JSON file of parsed chorales (:func:`load_chorales`). Deterministic for ``seed``.
    """
    s = settings
    chorales = load_chorales(cache, bpm=s.bpm, limit=s.n_chorales, progress=progress)
    if s.n_chorales is not None and len(chorales) < s.n_chorales:
        raise ValueError(f"n_chorales={s.n_chorales}, but the corpus has only {len(chorales)} "
                         "S/A/T/B chorales")
    split_seed, *excerpt_seeds = np.random.SeedSequence(seed).spawn(1 + len(SPLITS))
    pools = split_chorales([tune(c) for c in chorales], s.heldout_chorales, np.random.default_rng(split_seed))
    sizes = {"train": s.n_train, "val": s.n_val, "test": s.n_test}
    bar = tqdm(total=sum(sizes.values()), desc="separation excerpts", unit="excerpt", disable=not progress)
    splits = {}
    for split, excerpt_seed in zip(SPLITS, excerpt_seeds):
        rng = np.random.default_rng(excerpt_seed)
        rows = []
        for _ in range(sizes[split]):
            index, start, programs, sources = _draw_excerpt(chorales, pools[split], s, rng)
            gains = _draw_gains(s, s.mixtures_per_excerpt if split == "train" else 1, rng)
            rows.append((index, start, programs, sources, gains))
            bar.update()
        index, start, programs, sources, gains = zip(*rows)
        splits[split] = {"sources": np.stack(sources), "gains": np.stack(gains),
                         "programs": np.stack(programs).astype(np.int64),
                         "chorale": np.array(index, dtype=np.int64), "start_seconds": np.array(start)}
    bar.close()
    setting_attrs = {k: v for k, v in dataclasses.asdict(s).items() if k != "instruments"}
    write_dataset(
        path, name=f"separation (Bach chorales, {len(chorales)} chorales)", splits=splits,
        orders={"sources": 0, "gains": 0, "programs": 0},
        dims={"sources": ["voice", "time"], "gains": ["mixture", "voice"], "programs": ["voice"]},
        sample_scalars=["chorale", "start_seconds"],
        dimensions={"voice": np.arange(len(VOICES)), "time": np.arange(s.clip_samples) / s.sample_rate,
                    "mixture": np.arange(s.mixtures_per_excerpt)},
        # the setting `instruments` is recorded resolved, as the name -> program map drawn from
        attrs={"domain": "separation", **setting_attrs, "voices": list(VOICES), "instruments": s.programs,
               "chorale_names": [c.name for c in chorales], "rms": TARGET_RMS, "soundfont": SOUNDFONT,
               "max_silent_fraction": MAX_SILENT_FRACTION, "tune_notes": TUNE_NOTES, "seed": seed})


@dataclass
class SeparationSplit:
    """One split: ``sources`` (N, 4, T) float32 at TARGET_RMS, ``gains`` (N, K, 4) float32 (0 = absent;
    an all-zero row is no mixture), ``programs`` (N, 4) int64, ``chorale`` (N,) int64,
    ``start_seconds`` (N,) float64."""

    sources: torch.Tensor
    gains: torch.Tensor
    programs: torch.Tensor
    chorale: torch.Tensor
    start_seconds: torch.Tensor


def load_separation_split(path: Path, split: str) -> SeparationSplit:
    """The split ``split`` ("train", "val" or "test") of the data file ``path``."""
    arrays = load_split(path, split)
    return SeparationSplit(**{f.name: arrays[f.name] for f in dataclasses.fields(SeparationSplit)})


def mixture_waves(split: SeparationSplit) -> torch.Tensor:
    """Every mixture (N, K, T): the gain-weighted sum of the sources (all zero for an unused row)."""
    return torch.einsum("nkv,nvt->nkt", split.gains, split.sources)


def targets(split: SeparationSplit) -> torch.Tensor:
    """LongTensor (M, 3) of (excerpt n, mixture k, voice v) for every voice present in a mixture."""
    return torch.nonzero(split.gains > 0)


def examples(split: SeparationSplit, rows: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixture (M, T), target (M, T), voice (M,)) of ``rows`` (M, 3) of :func:`targets` (default all):
    the mixture wave and the target voice as it sounds in it (source times its gain). Pass rows in
    batches on the training split: this gathers (M, 4, T) sources."""
    rows = targets(split) if rows is None else rows
    n, k, v = rows.unbind(1)
    gains = split.gains[n, k]
    sources = split.sources[n]
    mixture = torch.einsum("mv,mvt->mt", gains, sources)
    target = gains.gather(1, v[:, None]) * sources[torch.arange(len(rows)), v]
    return mixture, target, v
