"""The population (Meta Flow Matching) and letter_clouds domains end to end at tiny size."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from flowsci.config import load_config
from flowsci.data import ensure_data
from flowsci.plugins import create_domain
from flowsci.population import masked_mean, population_wasserstein
from flowsci.training import train
from flowsci_domains.population.evaluation import mean_shifts, population_scores, reference_predictions

POPULATION_YAML = REPO / "domains" / "population.yaml"
CLOUDS_YAML = REPO / "domains" / "letter_clouds.yaml"
TINY = ["domain.n_rotations=2", "model.width=32", "model.depth=2", "model.embedder.hidden=16",
        "model.embedder.out_dim=8", "model.embedder.layers=2", "objective.points=16", "train.steps=4",
        "train.batch_size=4", "train.log_every=1", "train.warmup_steps=1", "train.checkpoint_every=4",
        "train.eval_every=0", "eval.n_populations=3", "eval.steps=[1]", "eval.n_figure=1", "sample.steps=2"]
TINY_PATIENTS = ["domain.dataset=patients", "domain.n_patients=4", "domain.held_out_patients=[3]",
                 "domain.n_treatments=3", "domain.dim=4", "objective.pairing=random"]


@pytest.mark.parametrize("conditioning", ["population", "identity", "none"])
def test_letters_train_and_evaluate_for_each_method(tmp_path, conditioning):
    result = train(load_config(POPULATION_YAML, [*TINY, f"model.conditioning={conditioning}"]),
                   tmp_path / "run", progress=False)
    metrics = result.metrics
    for split in ("train", "val_letters", "test_letters"):
        for score in ("w1", "w2", "mmd", "energy", "ref_ideal_mean_shift_w2", "w2_nfe2"):  # midpoint: 2 NFE
            assert torch.isfinite(torch.tensor(metrics[f"{split}_{score}"])), (split, score)
    assert (result.run_dir / "figures" / "populations_test_letters.png").exists()


def test_patients_data_splits_ids_and_conditions(tmp_path):
    cfg = load_config(POPULATION_YAML, [*TINY, *TINY_PATIENTS, f"data.path={tmp_path / 'patients.h5'}"])
    domain = create_domain("population")
    ensure_data(domain, cfg, force=True)  # an explicit data.path is made by `flowsci data make`
    data = domain.build_data(cfg)
    train_set, replicates, patients = data.train.tensors, data.val.tensors, data.test.tensors
    # 3 training patients x 2 replicates x 3 treatments; the held-out replicate; the held-out patient
    assert len(train_set["x0"]) == 18 and len(replicates["x0"]) == 9 and len(patients["x0"]) == 9
    # one CGFM id per training control population, shared by its treatments; unseen elsewhere
    assert train_set["population_id"].unique().tolist() == list(range(6))
    assert (replicates["population_id"] == -1).all() and (patients["population_id"] == -1).all()
    assert torch.equal(train_set["condition"].sum(0), torch.full((3,), 6.0))
    sizes = train_set["mask0"].sum(1)
    assert sizes.min() >= 200 and sizes.max() <= 400 and len(sizes.unique()) > 1
    # padding holds no points: the valid points are the generator's cells (finite, non-zero)
    assert (train_set["x0"][~train_set["mask0"]] == 0).all()
    model = domain.build_model(load_config(POPULATION_YAML,
                                           [*TINY, *TINY_PATIENTS, "model.conditioning=identity"]))
    assert model.n_ids == 6 and model.n_conditions == 3


def test_patients_train_reports_r_and_the_references(tmp_path):
    cfg = load_config(POPULATION_YAML, [*TINY, *TINY_PATIENTS])
    metrics = train(cfg, tmp_path / "run", progress=False).metrics
    for split in ("train", "heldout_replicates", "heldout_patients"):
        assert -1 <= metrics[f"{split}_r"] <= 1
        assert metrics[f"{split}_ref_ideal_mean_shift_w2"] <= metrics[f"{split}_ref_identity_w2"]


def test_reference_predictors_and_scores_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    n, d = 50, 3
    x0 = torch.randn(4, n, d, generator=g)
    treatment = torch.tensor([0, 1, 0, 1])
    true_shift = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [3.0, 0, 0], [0, 4.0, 0]])
    x1 = x0[:, torch.randperm(n, generator=g)] + true_shift[:, None, :]
    mask = torch.ones(4, n, dtype=torch.bool)
    batch = {"x0": x0, "mask0": mask, "x1": x1, "mask1": mask,
             "condition": torch.nn.functional.one_hot(treatment, 2).float()}
    refs = reference_predictions(batch, batch)
    # mean shift: the mean training shift of the population's own treatment (here 2 and 3)
    assert torch.allclose(masked_mean(refs["mean_shift"] - x0, mask),
                          torch.tensor([[2.0, 0, 0], [0, 3.0, 0], [2.0, 0, 0], [0, 3.0, 0]]), atol=1e-5)
    # ideal mean shift: exactly the true (translated) population here, so W2 = 0
    assert torch.allclose(mean_shifts(batch), true_shift, atol=1e-5)
    assert population_wasserstein(refs["ideal_mean_shift"], x1, mask, mask).max() < 1e-5
    scores = population_scores(refs["ideal_mean_shift"], batch)
    assert scores["w2"] < 1e-5 and scores["mmd"] < 1e-5 and scores["r"] == pytest.approx(1.0)
    identity = population_scores(refs["identity"], batch)
    assert identity["w2"] == pytest.approx(float(true_shift.norm(dim=1).mean()), rel=1e-4)


def test_letter_clouds_train_on_population_space(tmp_path):
    overrides = ["domain.letters=AB", "domain.n_points=16", "data.n_train=8", "data.n_val=4", "data.n_test=4",
                 "model.width=32", "model.depth=1", "train.steps=3", "train.batch_size=4",
                 "train.log_every=1", "train.warmup_steps=1", "train.checkpoint_every=3",
                 "train.eval_every=0", "eval.n_per_letter=2", "eval.steps=[1]", "sample.steps=2"]
    metrics = train(load_config(CLOUDS_YAML, overrides), tmp_path / "run", progress=False).metrics
    assert 0 < metrics["w2_floor"] < metrics["w2_ceiling"]
    assert metrics["w2"] > 0 and metrics["w2_nfe1"] > 0
