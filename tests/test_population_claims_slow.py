"""Meta Flow Matching's claim at CPU scale (slow tier): conditioning the flow on an embedding of the
source population generalises to populations never seen in training, where FM (no population
input) and CGFM (a vector per training population id) cannot; on the training populations CGFM
is competitive.

Each data set trains MFM (GCN embedder), FM and CGFM with the defaults of
domains/population.yaml (the patients with ``domain.dataset=patients``), the same decoder,
objective and budget; ``bench/population.py`` runs the same configurations (plus the DeepSets and
attention embedders) and tabulates them. The ideal-mean-shift reference is printed next to them.
"""

from __future__ import annotations

import pytest

from conftest import REPO
from flowsci.config import load_config
from flowsci.training import train

pytestmark = pytest.mark.slow

YAML = REPO / "domains" / "population.yaml"
DATASETS = {"letters": [], "patients": ["domain.dataset=patients", "objective.pairing=ot"]}
HELD_OUT = {"letters": ("val_letters", "test_letters"), "patients": ("heldout_replicates", "heldout_patients")}
METHODS = {"MFM": "population", "FM": "none", "CGFM": "identity"}


@pytest.fixture(scope="module", params=list(DATASETS))
def runs(request, tmp_path_factory):
    dataset = request.param
    root = tmp_path_factory.mktemp(dataset)
    metrics = {method: train(load_config(YAML, [*DATASETS[dataset], f"model.conditioning={conditioning}"]),
                             root / method, progress=False).metrics
               for method, conditioning in METHODS.items()}
    for split in ("train", *HELD_OUT[dataset]):
        print(f"{dataset} {split}: " + ", ".join(f"{m} W2 {metrics[m][f'{split}_w2']:.3f} MMD "
                                                 f"{metrics[m][f'{split}_mmd']:.4f}" for m in METHODS)
              + f"; ideal mean shift W2 {metrics['MFM'][f'{split}_ref_ideal_mean_shift_w2']:.3f}")
    return dataset, metrics


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced at 2000 CPU steps (bench/population.py, same configurations): MFM-gcn is better than "
    "FM and CGFM on 3 of the 4 held-out splits but by >= 20 % on W2 and MMD only on the val letter X "
    "(W2 0.583 vs 0.774 / 0.843). Test letter Y: 0.755 vs FM 0.665 (worse). Held-out replicates: W2 2.574 "
    "vs 3.034 / 3.188 (15 % / 19 %), MMD 0.146 vs 0.176 / 0.204. Held-out patients: W2 3.187 vs 4.097 / "
    "3.670 (22 % / 13 %), MMD 0.203 vs 0.252 / 0.250"))
def test_mfm_beats_fm_and_cgfm_by_20_percent_on_held_out_populations(runs):
    dataset, metrics = runs
    for split in HELD_OUT[dataset]:
        for score in ("w2", "mmd"):
            mfm = metrics["MFM"][f"{split}_{score}"]
            for baseline in ("FM", "CGFM"):
                assert mfm <= 0.8 * metrics[baseline][f"{split}_{score}"], (split, score, baseline)


def test_cgfm_is_competitive_on_training_populations(runs):
    _, metrics = runs
    assert metrics["CGFM"]["train_w2"] <= 1.1 * metrics["MFM"]["train_w2"]
    assert metrics["CGFM"]["train_w2"] < metrics["FM"]["train_w2"]
