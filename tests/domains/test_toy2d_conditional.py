"""toy2d with labels: component labels of the distributions, classifier-free guidance from
YAML, and the likelihood evaluation."""

from __future__ import annotations

import dataclasses
import math

import torch
from conftest import SMALL, TOY2D_YAML

from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.toy2d.distributions import LABELLED, eight_gaussians_log_prob


def test_labels_name_the_component():
    g = torch.Generator().manual_seed(0)
    x, y = LABELLED["8gaussians"][0](4000, g)
    angle = torch.arange(8) * (2 * math.pi / 8)
    centres = 5 * torch.stack([angle.cos(), angle.sin()], 1)
    assert (torch.cdist(x, centres).argmin(1) == y).float().mean() > 0.999
    x, y = LABELLED["checkerboard"][0](4000, g)
    column, row_from_top = ((x[:, 0] / 2).floor() + 2).long(), ((x[:, 1] / 2).floor() + 2).long()
    assert torch.equal(column, y // 2)  # the column of the cell; rows alternate with the column
    assert len(torch.unique(torch.stack([y, row_from_top], 1), dim=0)) == 8
    x, y = LABELLED["moons"][0](4000, g)
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean() + 1  # label 0 is the upper moon


def test_eight_gaussian_density_integrates_to_one():
    grid = torch.linspace(-9, 9, 721, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    density = eight_gaussians_log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(float(density.sum()) * float(grid[1] - grid[0]) ** 2 - 1) < 1e-4


def test_guidance_weight_controls_label_accuracy(tmp_path):
    """w = 0 samples ignore the label (accuracy near chance, 1/8); w >= 1 follow it."""
    cfg = load_config(TOY2D_YAML, [*SMALL, "domain.source=gaussian", "domain.target=8gaussians",
                                   "domain.conditional=true", "objective.p_uncond=0.2", "train.steps=600",
                                   "train.lr=3e-3", "eval.n_samples=400"])
    run = train(cfg, tmp_path / "run", progress=False)
    model, domain = load_model(run.run_dir), create_domain("toy2d")
    data = domain.build_data(cfg)
    accuracy = {}
    for w in (0.0, 1.0, 3.0):
        guided = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guidance=w))
        accuracy[w] = domain.evaluate(model, data, guided)["label_accuracy"]
    assert accuracy[0.0] < 0.4 < 0.9 < accuracy[1.0] <= accuracy[3.0] + 0.02, accuracy


def test_likelihood_is_a_cross_entropy_above_the_entropy(tmp_path):
    """NLL of the learned flow on the 8-Gaussian ring: at least the entropy of the ring (a
    cross-entropy bound, up to Monte-Carlo error) and not far above it after training."""
    cfg = load_config(TOY2D_YAML, [*SMALL, "domain.source=gaussian", "domain.target=8gaussians",
                                   "eval.likelihood=true", "train.steps=1500", "train.lr=3e-3",
                                   "model.width=64", "eval.n_samples=500", "eval.likelihood_steps=20"])
    nll = train(cfg, tmp_path / "run", progress=False).metrics["nll"]
    var = 0.1 ** 0.5
    entropy = math.log(8) + math.log(2 * math.pi * math.e * var)  # components barely overlap
    assert entropy - 0.15 < nll < entropy + 1.0, (nll, entropy)
