"""The separation domains end to end on a tiny data set: the autoencoder trained on first use and
cached, the flow separator and the mask baseline trained through ``flowsci train``'s Trainer,
their scores and listening examples; features against direct computation; the mask separator's
fold; the shared-row dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowsci.audio.metrics import si_sdr
from flowsci.audio.spectral import MelSpectrogram
from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.registry import build_model, create_domain
from flowsci.training import train
from flowsci_domains.separation.autoencoder_cache import DONE, autoencoder_config, autoencoder_file, cache_dir
from flowsci_domains.separation.mask_separator import MaskObjective
from flowsci_domains.separation.rows import IndexedRows

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.n_chorales=8", "data.n_train=4", "data.n_val=2", "data.n_test=3", "data.mixtures_per_excerpt=2",
        "data.clip_samples=7936", "train.batch_size=8", "train.log_every=5", "train.checkpoint_every=10",
        "model.width=16", "domain.text_width=16", "domain.text_heads=2"]
AE = "domain.autoencoder_overrides=[train.steps=15,train.batch_size=8,model.width=8,eval.n_samples=4]"
EVAL = ["eval.n_samples=6", "eval.steps=[1,2]", "eval.griffin_lim=4", "sample.steps=2", "eval.examples=2"]


def config(name: str, *overrides: str):
    extra = [AE] if name == "separation" else []
    return load_config(REPO / "domains" / f"{name}.yaml", [*TINY, *extra, *EVAL, *overrides])


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory):
    cfg = config("separation", "train.steps=12")
    return cfg, train(cfg, tmp_path_factory.mktemp("flow") / "run", progress=False)


def test_flow_separator_trains_scores_and_writes_listening_examples(flow_run) -> None:
    cfg, result = flow_run
    m = result.metrics
    for key in ("si_sdr", "si_sdri", "sdr", "mel_l1", "si_sdr_griffin_lim", "si_sdr_heldout", "si_sdri_nfe1",
                "si_sdri_nfe2", "seconds_per_audio_second", "si_sdr_mixture"):
        assert key in m and torch.isfinite(torch.tensor(m[key])), key
    assert m["nfe"] == 2
    # SI-SDRi is SI-SDR minus the mixture's (same rows)
    assert m["si_sdri"] == pytest.approx(m["si_sdr"] - m["si_sdr_mixture"], abs=1e-9)
    figures = result.run_dir / "figures"
    assert (figures / "spectrograms.png").is_file() and (figures / "quality_vs_nfe.png").is_file()
    wavs = sorted(p.name for p in figures.glob("*.wav"))
    assert len(wavs) == 8 and "example0_soprano_target.wav" in wavs


def test_the_autoencoder_is_trained_once_and_reused(flow_run) -> None:
    cfg, _ = flow_run
    domain = create_domain("separation")
    ae = autoencoder_config(cfg, autoencoder_file(cfg.settings.autoencoder))
    assert ae.train.steps == 15 and ae.model.params["width"] == 8  # the overrides reached it
    assert ae.data == cfg.data                                      # and the run's data
    out = cache_dir(ae, domain.data_file(cfg))
    assert (out / DONE).is_file()
    stamp = (out / DONE).stat().st_mtime_ns
    domain.codec(cfg)  # a new domain loads it: nothing is trained again
    assert (out / DONE).stat().st_mtime_ns == stamp
    # a run directory is accepted as it is
    reuse = config("separation", f"domain.autoencoder={out}")
    assert create_domain("separation").codec(reuse).autoencoder.flowsci_spec["params"]["width"] == 8


def test_the_flow_sees_mixture_latents_and_targets_of_the_rows(flow_run) -> None:
    cfg, _ = flow_run
    domain = create_domain("separation")
    data = domain.build_data(cfg)
    features = domain.features(cfg, "train")
    mixtures, targets = domain.latents(cfg, "train")
    batch = data.train.__getitems__([0, 3])
    assert torch.equal(batch["x1"], targets[[0, 3]])
    assert torch.equal(batch["observation"], mixtures[features.mixture_ids[[0, 3]]])
    assert batch["tokens"].shape == (2, 8)
    # the latents have about unit variance: the codec's scale is the training targets' std
    assert float(targets.std()) == pytest.approx(1.0, rel=0.1)


def test_features_are_the_mels_of_the_mixed_waves(flow_run) -> None:
    cfg, _ = flow_run
    domain = create_domain("separation")
    features = domain.features(cfg, "test")
    transform = MelSpectrogram(domain.spectrogram(cfg))
    rows = features.rows
    # the target's mel by linearity (g · mel(s)) equals the mel of the scaled wave
    direct = transform(features.target_waves(rows))
    assert torch.allclose(features.target_mels(rows), direct, rtol=1e-4, atol=1e-6)
    mixture = transform(features.mixture_waves(rows))
    assert torch.allclose(features.mixture_mels.flatten(0, 1)[features.mixture_ids], mixture, rtol=1e-4,
                          atol=1e-6)
    # each mixture is the sum of its rows' targets
    for i in features.mixture_ids.unique():
        mine = features.mixture_ids == i
        assert torch.allclose(features.target_waves(rows[mine]).sum(0), features.mixture_waves(rows[mine])[0],
                              atol=1e-6)
    # the row's voice is present in its mixture
    n, k, v = rows.unbind(1)
    assert bool((features.waves.gains[n, k, v] > 0).all())


def test_mask_baseline_trains_on_the_same_rows_and_scores(tmp_path: Path) -> None:
    cfg = config("separation_mask", "train.steps=12")
    result = train(cfg, tmp_path / "run", progress=False)
    assert torch.isfinite(torch.tensor(result.metrics["si_sdri"])) and result.metrics["nfe"] == 1
    assert "si_sdr_heldout" in result.metrics and "si_sdri_nfe1" not in result.metrics


def test_mask_objective_of_an_all_pass_mask_is_the_mixture_error() -> None:
    objective = MaskObjective(mean=-4.0, std=2.0, floor=1e-5)
    mixture = torch.randn(3, 1, 8, 8)
    # mask logits +inf pass the mixture unchanged: the masked log-mel is the mixture's
    passed = objective.masked(torch.full_like(mixture, 60.0), mixture)
    assert torch.allclose(passed, mixture, atol=1e-4)
    # a mask of 1/2 lowers the log-mel by log 2 where the mixture is far above the floor
    half = objective.masked(torch.zeros_like(mixture), mixture + 5)
    assert torch.allclose(half, mixture + 5 - torch.log(torch.tensor(2.0)) / 2.0, atol=1e-3)


def test_mask_separator_folds_to_the_flows_resolution() -> None:
    backbone = {"name": "unet", "params": {"width": 16, "multipliers": [1, 2]}}
    mask = build_model("mask_separator", {"backbone": backbone, "query": "label", "num_classes": 4})
    flow = build_model("concat_conditioned", {"observation_channels": 8, "channels": 8, "num_classes": 4,
                                              "backbone": backbone})
    out = mask(torch.randn(2, 1, 64, 32), y=torch.tensor([0, 3]))
    assert out.shape == (2, 1, 64, 32)
    count = [sum(p.numel() for p in m.parameters()) for m in (mask, flow)]
    assert abs(count[0] - count[1]) < 0.02 * count[1]  # equal parameters but the first and last layers
    with pytest.raises(ValueError, match="divisible by fold"):
        mask(torch.randn(1, 1, 62, 32), y=torch.tensor([0]))


def test_indexed_rows_share_tables() -> None:
    table = torch.arange(12.0).reshape(3, 4)
    rows = IndexedRows({"a": (table, torch.tensor([2, 2, 0])), "b": (torch.tensor([5, 6, 7]), None)})
    batch = rows.__getitems__([0, 2])
    assert torch.equal(batch["a"], table[[2, 0]]) and torch.equal(batch["b"], torch.tensor([5, 7]))
    assert len(rows) == 3 and torch.equal(rows[1]["a"], table[2])
    with pytest.raises(ValueError, match="one entry"):
        IndexedRows({"a": (table, torch.tensor([0])), "b": (table, None)})
    with pytest.raises(ValueError, match="outside"):
        IndexedRows({"a": (table, torch.tensor([3, 0, 0]))})


def test_unknown_autoencoder_and_model_keys_set_by_the_domain_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a run directory"):
        autoencoder_file(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="model.channels is set by the separation domain"):
        create_domain("separation").build_model(config("separation", "model.channels=3"))


def test_mixture_si_sdr_matches_the_scores_of_the_mixture(flow_run) -> None:
    cfg, result = flow_run
    features = create_domain("separation").features(cfg, "test")
    rows = features.rows[: cfg.eval.n_samples]
    expected = si_sdr(features.mixture_waves(rows), features.target_waves(rows)).mean()
    assert result.metrics["si_sdr_mixture"] == pytest.approx(float(expected), abs=1e-6)


def test_separate_reads_a_mixture_of_any_length(flow_run) -> None:
    cfg, result = flow_run
    from flowsci.checkpoint import load_model

    domain = create_domain("separation")
    model = load_model(result.run_dir)
    features = domain.features(cfg, "test")
    mixture = features.mixture_waves(features.rows[:1])[0, :5000]
    out = domain.separate(model, cfg, mixture, ["the soprano", "bass part"], steps=2)
    assert out.shape == (2, 5000) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="unknown word"):
        domain.separate(model, cfg, mixture, ["the kazoo"], steps=1)


def test_label_queries_condition_the_flow_and_the_mask(flow_run) -> None:
    cfg = config("separation", "domain.query=label")
    domain = create_domain("separation")
    data = domain.build_data(cfg)
    batch = data.train.__getitems__([0, 1, 2])
    assert "tokens" not in batch and torch.equal(batch["y"], domain.features(cfg, "train").rows[:3, 2])
    model = domain.build_model(cfg)
    loss, _ = domain.build_objective(cfg).loss(model, batch)
    assert torch.isfinite(loss)
    assert domain.null(cfg) == {"y": -1}
    mask = create_domain("separation_mask")
    mask_cfg = config("separation_mask", "domain.query=label")
    loss, _ = mask.build_objective(mask_cfg).loss(mask.build_model(mask_cfg),
                                                  mask.build_data(mask_cfg).train.__getitems__([0, 1]))
    assert torch.isfinite(loss)
