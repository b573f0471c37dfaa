"""Caption conditioning of the images domain at toy scale (8×8 digits): attribute captions with
held-out combinations and phrasings, the two-digit relations canvas, their scores against real
images with known answers, and ``flowsci sample --prompt``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

from flowsci.checkpoint import load_model
from flowsci.cli import main
from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.registry import create_domain
from flowsci.training import train
from flowsci_domains.images.captioned import captioned_split
from flowsci_domains.images.captions import describe, heldout_combinations, parse_caption, parse_relation
from flowsci_domains.images.domain import VOCABULARY, sample_scores

pytest.importorskip("sklearn", reason="the 8×8 digits come from scikit-learn (the images extra)")


def tiny(mode: str, *extra: str):
    yaml = REPO / "domains" / f"images_{mode}.yaml"
    backbone = (["model.width=8", "model.heads=2"] if mode == "attributes"
                else ["model.width=16", "model.depth=2", "model.heads=2"])
    return load_config(yaml, [
        "domain.source=digits8", "domain.resolution=8", "data.n_val=100", "data.n_test=100",
        "domain.text_width=16", "domain.text_depth=1", "domain.text_heads=2", *backbone,
        "train.steps=20", "train.batch_size=32", "train.warmup_steps=5", "train.checkpoint_every=0",
        "train.ema=0", "eval.n_samples=60", "eval.steps=[2]", "sample.steps=2", "eval.classifier_steps=150",
        "eval.grid_per_class=2", *extra])


@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory):
    cfg = tiny("attributes")
    return cfg, train(cfg, tmp_path_factory.mktemp("attributes") / "run", progress=False)


def test_attribute_captions_hold_out_combinations_and_are_scored(attribute_run):
    cfg, result = attribute_run
    m = result.metrics
    for key in ("fd_real", "fd_nfe2", "accuracy_nfe2", "attribute_accuracy_nfe2", "heldout_accuracy",
                "heldout_attribute_accuracy", "heldout_thickness_accuracy", "heldout_slant_accuracy"):
        assert np.isfinite(m[key]) and (key.startswith("fd") or 0 <= m[key] <= 1), key
    for figure in ("samples", "trajectories", "guidance"):
        assert (result.run_dir / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    domain = create_domain("images")
    data = domain.build_data(cfg)
    tokens = data.train.tensors["tokens"]
    assert tokens.shape == (len(data.train), 12) and set(data.train.tensors) == {"x1", "tokens"}
    # the training captions name the digit and attributes of their own image, and no image of a
    # held-out (digit, thickness, slant) combination is left in training
    images = (data.train.tensors["x1"] + 1) / 2
    said = [parse_caption(text) for text in VOCABULARY.decode(tokens)]
    bins = domain.caption_bins(data.meta.path)
    true = describe(images, [s["digit"] for s in said], bins)
    assert all(s == t for s, t in zip(said, true, strict=True))
    held = heldout_combinations(cfg.data.seed)
    assert not any((t["digit"], t["thickness"], t["slant"]) in held for t in true)


def test_scores_of_real_images_with_known_answers(attribute_run):
    cfg, _ = attribute_run
    domain = create_domain("images")
    data = domain.build_data(cfg)
    classifier = domain.classifier(cfg, data)
    test = domain.test_captions(cfg, data)
    bins = domain.caption_bins(data.meta.path)
    x = test.images * 2 - 1
    with torch.no_grad():
        own, _ = sample_scores("attributes", classifier, x, test.requests, bins)
    # real images match their own descriptions exactly (outer bins lie beyond the median)
    assert own["attribute_accuracy"] == 1.0 and own["accuracy"] > 0.8
    flipped = [{**r, **{k: {"thin": "thick", "thick": "thin", "left": "right", "right": "left"}.get(r[k])
                        for k in ("thickness", "slant")}} for r in test.requests]
    with torch.no_grad():
        other, _ = sample_scores("attributes", classifier, x, flipped, bins)
    named = [r for r in flipped if r["thickness"] or r["slant"]]
    assert named and other.get("thickness_accuracy", 0) == 0 and other.get("slant_accuracy", 0) == 0
    # a relations canvas of real digits: in place, and swapped
    digits = torch.tensor([r["digit"] for r in test.requests])
    canvas = captioned_split("relations", "test", test.images, digits, {}, 0)
    assert canvas.images.shape[-1] == 2 * test.images.shape[-1]
    assert all(parse_relation(c) == r for c, r in zip(canvas.captions, canvas.requests, strict=True))
    with torch.no_grad():
        placed, _ = sample_scores("relations", classifier, canvas.images * 2 - 1, canvas.requests, {})
        swapped, _ = sample_scores("relations", classifier, canvas.images * 2 - 1,
                                   [(b, a) for a, b in canvas.requests], {})
    assert placed["relation_accuracy"] > 0.7 and placed["swapped"] < 0.1
    assert swapped["relation_accuracy"] < 0.2 and swapped["swapped"] > 0.6


def test_sample_with_a_prompt_writes_images_and_a_grid(attribute_run, capsys):
    _, result = attribute_run
    run = result.run_dir
    out = run / "prompt.npz"
    prompt = "a thick seven leaning right"
    assert main(["sample", str(run), "--prompt", prompt, "-n", "6", "--out", str(out)]) == 0
    with np.load(out) as arrays:
        assert arrays["images"].shape == (6, 1, 8, 8)
        assert VOCABULARY.decode(torch.from_numpy(arrays["tokens"][:1])) == [prompt]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert main(["sample", str(run), "--prompt", "a purple seven"]) != 0
    err = capsys.readouterr().err
    assert "unknown words ['purple']" in err and "thick" in err


def test_relations_canvas_run(tmp_path):
    cfg = tiny("relations")
    result = train(cfg, tmp_path / "run", progress=False)
    m = result.metrics
    for key in ("fd_nfe2", "left_accuracy_nfe2", "relation_accuracy_nfe2", "swapped_nfe2",
                "heldout_relation_accuracy", "heldout_left_accuracy"):
        assert 0 <= m[key] < float("inf"), key
    domain = create_domain("images")
    data = domain.build_data(cfg)
    assert data.train.tensors["x1"].shape[1:] == (1, 8, 16)
    model = load_model(result.run_dir)
    assert type(model.model).__name__ == "MMDiT"
    with pytest.raises(ConfigError, match="caption model"):
        create_domain("images").sample_prompt(model, data, tiny("attributes", "domain.captions=none"), 2,
                                              "a 3")


def test_caption_settings_are_checked():
    with pytest.raises(ConfigError, match="captions must be one of"):
        tiny("attributes", "domain.captions=colours")
    with pytest.raises(ConfigError, match="set conditional: true"):
        tiny("attributes", "domain.conditional=false")
