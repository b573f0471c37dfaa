"""The perceptual distance (LPIPS's form on a domain's own network) and 2-RF++'s
perceptual-Huber loss, and the images domain's feature network for it."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO

from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.losses import PseudoHuberLoss
from flowsci.paths import linear_path
from flowsci.perceptual import PerceptualHuberLoss, feature_distance
from flowsci.registry import LOSSES, create_domain
from flowsci.training import train


def identity(x):
    return [x.flatten(1)]


def test_feature_distance_is_two_minus_twice_the_cosine_per_layer():
    a, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert torch.allclose(feature_distance(identity, a, b), 2 - 2 * cosine)
    # two layers add up; positive rescaling of a channel vector changes nothing
    two = feature_distance(lambda x: [x, 3 * x], a, b)
    assert torch.allclose(two, 2 * (2 - 2 * cosine))
    zero = torch.zeros(6, dtype=torch.float64)
    assert torch.allclose(feature_distance(identity, a, 4.0 * a), zero, atol=1e-12)


def test_feature_distance_of_maps_averages_positions():
    a, b = torch.randn(3, 4, 2, 5), torch.randn(3, 4, 2, 5)
    cosine = torch.nn.functional.cosine_similarity
    per_position = torch.stack([2 - 2 * cosine(a[..., i, j], b[..., i, j], dim=1)
                                for i in range(2) for j in range(5)], 1)
    assert torch.allclose(feature_distance(lambda x: [x], a, b), per_position.mean(1), atol=1e-6)


@pytest.mark.parametrize("inverse_time", [False, True])
def test_perceptual_huber_is_the_time_weighted_huber_plus_the_distance_of_predicted_data(inverse_time):
    torch.manual_seed(0)
    x0, x1, pred = torch.randn(8, 6), torch.randn(8, 6), torch.randn(8, 6)
    t = torch.rand(8)
    path = linear_path()
    x_t = (1 - t)[:, None] * x0 + t[:, None] * x1
    loss = PerceptualHuberLoss(identity, c=0.1, perceptual_weight=2.0, inverse_time=inverse_time)
    got = loss(pred, x1 - x0, t, x_t=x_t, path=path)
    x1_hat = x_t + (1 - t)[:, None] * pred  # the data the velocity points at, by hand
    cosine = torch.nn.functional.cosine_similarity(x1_hat, x1, dim=1)
    weight = 2.0 / (1 - t) if inverse_time else 2.0
    huber = (((pred - (x1 - x0)).pow(2).sum(1) + 0.01).sqrt() - 0.1) / 6
    assert torch.allclose(got, t * huber + weight * (2 - 2 * cosine), atol=1e-5)
    assert torch.allclose(PseudoHuberLoss(0.1)(pred, x1 - x0, t), huber, atol=1e-6)
    # a perfect velocity costs nothing
    assert torch.allclose(loss(x1 - x0, x1 - x0, t, x_t=x_t, path=path), torch.zeros(8), atol=1e-5)


def test_perceptual_huber_needs_a_feature_network():
    with pytest.raises(ConfigError, match="feature network"):
        LOSSES.create("perceptual_huber", "objective.loss")
    with pytest.raises(ValueError, match="x_t= and path="):
        PerceptualHuberLoss(identity)(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))


def test_images_domain_trains_with_its_own_perceptual_network(tmp_path):
    pytest.importorskip("sklearn", reason="the 8×8 digits come from scikit-learn (the images extra)")
    cfg = load_config(REPO / "domains" / "images.yaml", [
        "domain.source=digits8", "domain.resolution=8", "data.n_val=100", "data.n_test=100",
        "model.width=8", "model.multipliers=[1,2]", "model.attention=false", "train.steps=3",
        "train.batch_size=16", "train.warmup_steps=1", "train.checkpoint_every=0", "train.ema=0",
        "eval.n_samples=40", "eval.steps=[1]", "sample.steps=1", "eval.classifier_steps=60",
        "eval.grid_per_class=1", "objective.loss={name: perceptual_huber, inverse_time: true}"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert math.isfinite(result.metrics["fd_nfe1"])
    domain = create_domain("images")
    data_file = domain.data_file(cfg)
    stored = {p.name.split(".")[-2] for p in data_file.parent.glob(f"{data_file.stem}.*.pt")}
    assert {"classifier-60", "perceptual-60"} <= stored
    # another network than the evaluation's: the loss does not tune the model to its judge
    judge = domain.stored_classifier(cfg, data_file, "classifier", cfg.data.seed)
    features = domain.perceptual_features(cfg)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    shapes = [tuple(f.shape) for f in features(x)]
    assert shapes == [(4, 32, 8, 8), (4, 64, 4, 4), (4, 128)]
    assert not torch.allclose(features(x)[-1], judge.features(x))
