"""The separation domain's data: chorales parsed per voice, voices rendered by the soundfont
(pitch against the MIDI formula, onsets, cropping, determinism), text queries and their
vocabulary, and the mixture data set (splits by chorale, gains, determinism for a seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowsci.data import read_meta
from flowsci.errors import DataError
from flowsci_domains.separation import chorales as chorales_module
from flowsci_domains.separation.chorales import VOICES, load_chorales
from flowsci_domains.separation.mixtures import (
    SPLITS,
    TARGET_RMS,
    MixtureSettings,
    examples,
    load_separation_split,
    make_separation_data,
    mixture_waves,
    split_chorales,
    targets,
    tune,
)
from flowsci_domains.separation.queries import (
    HELDOUT_TEMPLATES,
    MAX_QUERY_LENGTH,
    TRAIN_TEMPLATES,
    QueryVocabulary,
    phrase,
    queries,
)
from flowsci_domains.separation.render import INSTRUMENTS, render_voice

SR = 16000
N_CHORALES = 6
TINY = MixtureSettings(clip_samples=8000, n_chorales=N_CHORALES, n_train=3, n_val=2, n_test=2,
                       mixtures_per_excerpt=3)


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def fundamental(x: np.ndarray, sample_rate: int, fmax: float = 2000.0) -> float:
    """The fundamental frequency of a periodic signal by autocorrelation: the first peak within 10 % of
    the highest one after the first zero crossing, refined by a parabola through its neighbours."""
    x = x - x.mean()
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[:len(x) // 2]
    lag = max(int(sample_rate / fmax), int(np.argmax(ac < 0)))
    peak = lag + int(np.argmax(ac[lag:] > 0.9 * ac[lag:].max()))
    while ac[peak + 1] > ac[peak]:
        peak += 1
    a, b, c = ac[peak - 1:peak + 2]
    return sample_rate / (peak + 0.5 * (a - c) / (a - 2 * b + c))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("music21", reason="the chorales come from music21 (the separation extra)")
    return tmp_path_factory.mktemp("chorales") / "chorales.json"


@pytest.fixture(scope="module")
def chorales(cache: Path) -> list:
    return load_chorales(cache, limit=N_CHORALES)


@pytest.fixture(scope="module")
def data(cache: Path, chorales: list, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny data files: seed 0 twice and seed 1."""
    pytest.importorskip("tinysoundfont", reason="voices are rendered by tinysoundfont (the separation extra)")
    folder = tmp_path_factory.mktemp("separation")
    paths = {"a": folder / "a.h5", "b": folder / "b.h5", "c": folder / "c.h5"}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_separation_data(TINY, paths[key], seed=seed, cache=cache)
    return paths


# --- chorales ----------------------------------------------------------------------------------

def test_chorales_are_four_monophonic_voices_ordered_by_pitch(chorales: list) -> None:
    assert len(chorales) == N_CHORALES
    assert len({c.name for c in chorales}) == N_CHORALES
    for chorale in chorales:
        assert list(chorale.notes) == list(VOICES)
        means = [chorale.notes[v][:, 2].mean() for v in VOICES]
        assert means == sorted(means, reverse=True) and len(set(means)) == 4, (chorale.name, means)
        for notes in chorale.notes.values():
            onsets, durations, pitches = notes.T
            assert len(notes) > 10 and (durations > 0).all() and (np.diff(onsets) > 0).all()
            assert (onsets[:-1] + durations[:-1] <= onsets[1:] + 1e-9).all()  # one note at a time
            assert ((pitches >= 30) & (pitches <= 90)).all() and (pitches == np.round(pitches)).all()
            assert onsets[-1] + durations[-1] <= chorale.seconds + 1e-9


def test_tempo_scales_time_and_limit_takes_a_prefix(chorales: list, cache: Path) -> None:
    """At half the tempo every onset and duration doubles; limit=3 gives the first three chorales."""
    slow = load_chorales(cache, bpm=50.0, limit=3)
    assert [c.name for c in slow] == [c.name for c in chorales[:3]]
    for fast, half in zip(chorales, slow):
        assert half.seconds == pytest.approx(2 * fast.seconds)
        for v in VOICES:
            np.testing.assert_allclose(half.notes[v][:, :2], 2 * fast.notes[v][:, :2])
            np.testing.assert_array_equal(half.notes[v][:, 2], fast.notes[v][:, 2])
    beats = chorales[0].notes["soprano"][:, 0] / 0.6  # quarter notes at 100 bpm
    np.testing.assert_allclose(beats * 4, np.round(beats * 4), atol=1e-9)  # on a sixteenth grid


def test_the_cache_is_reused_without_parsing(chorales: list, cache: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    def no_parse(*args: object) -> None:
        raise AssertionError("parsed although the cache holds the chorales")

    monkeypatch.setattr(chorales_module, "_parse", no_parse)
    again = load_chorales(cache, limit=N_CHORALES)
    for a, b in zip(chorales, again):
        assert a.name == b.name and a.seconds == b.seconds
        for v in VOICES:
            np.testing.assert_array_equal(a.notes[v], b.notes[v])
    with pytest.raises(AssertionError, match="parsed"):
        load_chorales(cache, limit=N_CHORALES - 1)


def test_missing_music21_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(DataError, match=r"flowsci\[separation\]"):
        load_chorales(tmp_path / "chorales.json")


# --- rendering ---------------------------------------------------------------------------------

@pytest.fixture
def synth() -> None:
    """Skips a test when tinysoundfont is missing."""
    pytest.importorskip("tinysoundfont", reason="voices are rendered by tinysoundfont (the separation extra)")


@pytest.mark.parametrize("instrument, pitch", [("flute", 72), ("oboe", 67), ("clarinet", 62), ("violin", 69),
                                               ("viola", 55), ("cello", 48), ("bassoon", 43),
                                               ("french horn", 57)])
def test_a_note_sounds_at_the_midi_frequency(synth: None, instrument: str, pitch: int) -> None:
    audio = render_voice(np.array([[0.0, 1.0, pitch]]), INSTRUMENTS[instrument], SR, 0.0, SR)
    f0 = fundamental(audio[SR // 5:4 * SR // 5], SR)
    assert f0 == pytest.approx(midi_hz(pitch), rel=0.03)


def test_every_instrument_sounds_at_every_key_of_the_voices(synth: None) -> None:
    keys = np.arange(36, 85)
    notes = np.stack([0.25 * np.arange(len(keys)), np.full(len(keys), 0.25), keys], axis=1)
    for name, program in INSTRUMENTS.items():
        audio = render_voice(notes, program, SR, 0.0, int(0.25 * SR * len(keys)))
        levels = [rms(audio[int((0.25 * i + 0.05) * SR):int((0.25 * i + 0.2) * SR)])
                  for i in range(len(keys))]
        assert min(levels) > 0.01, (name, keys[int(np.argmin(levels))])


def test_notes_start_at_their_onset_and_stop_after_their_end(synth: None) -> None:
    audio = render_voice(np.array([[0.5, 0.5, 64]]), INSTRUMENTS["clarinet"], SR, 0.0, 2 * SR)
    onset = SR // 2
    assert np.abs(audio[:onset]).max() == 0
    assert rms(audio[onset:onset + SR // 20]) > 0.01
    assert rms(audio[int(1.6 * SR):]) < 0.05 * rms(audio[onset:SR])


def test_a_window_is_a_crop_of_the_whole_rendering(synth: None) -> None:
    """Notes struck before the window sound in it, exactly as in a rendering from the start."""
    notes = np.array([[0.0, 2.0, 60], [2.0, 0.4, 62], [2.4, 0.3, 64], [2.7, 1.0, 64], [3.7, 0.8, 67]])
    program = INSTRUMENTS["viola"]
    whole = render_voice(notes, program, SR, 0.0, 5 * SR)
    window = render_voice(notes, program, SR, 1.5, SR)
    np.testing.assert_allclose(window, whole[int(1.5 * SR):int(2.5 * SR)], atol=1e-6)
    assert rms(window[:SR // 10]) > 0.01  # the first note, struck 1.5 s earlier, still sounds


def test_rendering_is_deterministic(synth: None) -> None:
    notes = np.array([[0.1, 0.3, 60], [0.4, 0.3, 67], [0.7, 0.6, 64]])
    first = render_voice(notes, INSTRUMENTS["flute"], SR, 0.2, SR)
    np.testing.assert_array_equal(first, render_voice(notes, INSTRUMENTS["flute"], SR, 0.2, SR))
    assert first.dtype == np.float32 and first.shape == (SR,)


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="notes"):
        render_voice(np.zeros((3, 2)), 0, SR, 0.0, 100)
    with pytest.raises(ValueError, match="program"):
        render_voice(np.zeros((0, 3)), 128, SR, 0.0, 100)
    with pytest.raises(ValueError, match="length"):
        render_voice(np.zeros((0, 3)), 0, SR, 0.0, -1)


# --- queries -----------------------------------------------------------------------------------

def test_vocabulary_round_trips_every_phrasing() -> None:
    vocabulary = QueryVocabulary()
    texts = [phrase(r, t) for r in VOICES for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES]
    tokens = vocabulary.encode(texts)
    assert tokens.shape == (len(texts), MAX_QUERY_LENGTH) and tokens.dtype == torch.long
    assert vocabulary.decode(tokens) == texts
    assert vocabulary.decode(vocabulary.encode(["The BASS line"])) == ["the bass line"]
    assert vocabulary.words[0] == "<pad>" and int(tokens.max()) == len(vocabulary) - 1
    assert ((tokens > 0).sum(1) == torch.tensor([len(t.split()) for t in texts])).all()


def test_heldout_phrasings_are_new_orders_of_training_words() -> None:
    train = {phrase(r, t) for r in VOICES for t in TRAIN_TEMPLATES}
    heldout = {phrase(r, t) for r in VOICES for t in HELDOUT_TEMPLATES}
    assert not train & heldout
    assert {w for text in heldout for w in text.split()} <= {w for text in train for w in text.split()}


def test_unknown_or_long_queries_are_errors() -> None:
    vocabulary = QueryVocabulary()
    with pytest.raises(ValueError, match="'highest'"):
        vocabulary.encode(["the highest voice"])
    with pytest.raises(ValueError, match="MAX_QUERY_LENGTH"):
        vocabulary.encode(["the bass " * MAX_QUERY_LENGTH])
    with pytest.raises(ValueError, match="role"):
        phrase("baritone", "the {role}")


def test_queries_draw_one_phrasing_per_role() -> None:
    rng = np.random.default_rng(0)
    roles = ["bass", "soprano", "alto"]
    seen = set()
    for heldout, templates in ((False, TRAIN_TEMPLATES), (True, HELDOUT_TEMPLATES)):
        for _ in range(50):
            texts = queries(roles, heldout, rng)
            assert len(texts) == len(roles)
            for role, text in zip(roles, texts):
                assert text in {phrase(role, t) for t in templates}
            seen.update(texts)
    assert len(seen) > 20


# --- mixtures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, field", [({"n_train": 0}, "n_train"), ({"max_voices": 5}, "max_voices"),
                                        ({"min_voices": 3, "max_voices": 2}, "max_voices"),
                                        ({"gain_db": -1.0}, "gain_db"), ({"heldout_chorales": 1.0},
                                                                         "heldout_chorales"),
                                        ({"instruments": ["flute", "oboe", "kazoo", "viola"]}, "instruments"),
                                        ({"instruments": ["flute", "oboe", "viola"]}, "instruments"),
                                        ({"n_chorales": 2}, "n_chorales"), ({"bpm": 0.0}, "bpm"),
                                        ({"clip_samples": 1.5}, "clip_samples")])
def test_settings_are_validated(bad: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MixtureSettings(**bad)


def test_split_chorales_keeps_each_tune_in_one_split() -> None:
    tunes = [0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 6, 6, 6, 7, 8, 9, 9, 10, 11]
    for seed in range(5):
        parts = split_chorales(tunes, 0.2, np.random.default_rng(seed))
        assert sorted(np.concatenate([parts[s] for s in SPLITS]).tolist()) == list(range(len(tunes)))
        held = {split: {tunes[i] for i in parts[split]} for split in SPLITS}
        assert not held["train"] & held["val"] and not held["train"] & held["test"]
        assert not held["val"] & held["test"]
        assert len(parts["val"]) >= 2 and len(parts["val"]) + len(parts["test"]) >= 4 and len(parts["test"])
    with pytest.raises(ValueError, match="heldout_chorales"):
        split_chorales(["a", "a", "b"], 0.2, np.random.default_rng(0))


def test_splits_hold_disjoint_chorales_and_valid_mixtures(data: dict[str, Path], chorales: list) -> None:
    low = 10 ** (-TINY.gain_db / 20)
    used = {}
    for split in SPLITS:
        part = load_separation_split(data["a"], split)
        n = {"train": TINY.n_train, "val": TINY.n_val, "test": TINY.n_test}[split]
        assert part.sources.shape == (n, 4, TINY.clip_samples) and part.gains.shape == (n, 3, 4)
        used[split] = set(part.chorale.tolist())
        gains = part.gains.numpy()
        assert ((gains == 0) | ((gains >= low) & (gains <= 1))).all()
        present = (gains > 0).sum(-1)
        mixtures = 3 if split == "train" else 1
        assert ((present[:, :mixtures] >= 2) & (present[:, :mixtures] <= 4)).all()
        assert (present[:, mixtures:] == 0).all()  # val / test: one mixture, the other rows unused
        for programs in part.programs.tolist():
            assert len(set(programs)) == 4 and set(programs) <= set(INSTRUMENTS.values())
        for voice in part.sources.numpy().reshape(-1, TINY.clip_samples):
            assert rms(voice) == pytest.approx(TARGET_RMS, rel=1e-3)
            frames = voice[:len(voice) // 320 * 320].reshape(-1, 320)  # 20 ms frames
            assert (np.sqrt((frames ** 2).mean(1)) > 0.05 * TARGET_RMS).mean() >= 0.5
    assert not used["train"] & used["val"]
    assert not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    tunes = {split: {tune(chorales[i]) for i in used[split]} for split in SPLITS}
    assert not tunes["train"] & tunes["val"] and not tunes["train"] & tunes["test"]


def test_sources_are_the_recorded_excerpts(data: dict[str, Path], chorales: list) -> None:
    """Each stored voice is its chorale's notes rendered at the recorded start by the recorded
    program, scaled to the common RMS; starts fall on beats."""
    part = load_separation_split(data["a"], "val")
    beat = 60.0 / TINY.bpm
    names = read_meta(data["a"]).attrs["chorale_names"]
    assert list(names) == [c.name for c in chorales]
    for n in range(len(part.chorale)):
        start = float(part.start_seconds[n])
        assert start / beat == pytest.approx(round(start / beat), abs=1e-9)
        chorale = chorales[int(part.chorale[n])]
        for v, voice in enumerate(VOICES):
            audio = render_voice(chorale.notes[voice], int(part.programs[n, v]), SR, start,
                                 TINY.clip_samples)
            np.testing.assert_allclose(part.sources[n, v].numpy(), audio * (TARGET_RMS / rms(audio)),
                                       atol=1e-6)


def test_mixtures_are_the_sums_of_their_targets(data: dict[str, Path]) -> None:
    part = load_separation_split(data["a"], "train")
    rows = targets(part)
    assert len(rows) == int((part.gains > 0).sum())
    mixture, target, voice = examples(part, rows)
    waves = mixture_waves(part)
    for n, k, v in rows.tolist():
        own = (rows[:, 0] == n) & (rows[:, 1] == k)
        torch.testing.assert_close(target[own].sum(0), waves[n, k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(mixture[own][0], waves[n, k])
        gain = float(part.gains[n, k, v])
        assert rms(target[own & (voice == v)][0].numpy()) == pytest.approx(TARGET_RMS * gain, rel=1e-3)


def test_the_data_is_deterministic_for_a_seed(data: dict[str, Path]) -> None:
    for split in SPLITS:
        a, b, c = (load_separation_split(data[key], split) for key in "abc")
        for field in ("sources", "gains", "programs", "chorale", "start_seconds"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)
        assert not torch.equal(a.gains, c.gains) and not torch.equal(a.start_seconds, c.start_seconds)
    attrs = read_meta(data["a"]).attrs
    assert attrs["voices"] == list(VOICES) and attrs["instruments"] == INSTRUMENTS
    assert attrs["sample_rate"] == SR and attrs["n_train"] == TINY.n_train and attrs["seed"] == 0
