"""Meta Flow Matching's claim at CPU scale (slow tier): conditioning the flow on an embedding of the
source population generalises to populations never seen in training, where FM (no population
input) and CGFM (a vector per training population id) cannot; on the training populations CGFM
is competitive.

Each data set trains MFM (GCN embedder), FM and CGFM with the defaults of
domains/population.yaml (the patients with ``domain.dataset=patients objective.pairing=ot``), the
same decoder, objective and budget; ``bench/population.py`` runs the same configurations (plus the
DeepSets and attention embedders) and tabulates them. ``FLOWSCI_POPULATION_BENCH=FILE.json`` reads
the bench's results instead of training (about 35 min per data set on one thread). The
ideal-mean-shift reference is printed next to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO

from flowsci.config import load_config
from flowsci.training import train

pytestmark = pytest.mark.slow

YAML = REPO / "domains" / "population.yaml"
DATASETS = {"letters": [], "patients": ["domain.dataset=patients", "objective.pairing=ot"]}
HELD_OUT = {"letters": ("val_letters", "test_letters"),
            "patients": ("heldout_replicates", "heldout_patients")}
METHODS = {"MFM": "population", "FM": "none", "CGFM": "identity"}
BENCH_NAMES = {"MFM": "MFM-gcn", "FM": "FM", "CGFM": "CGFM"}


def _from_bench(path: Path, dataset: str) -> dict[str, dict[str, float]]:
    """The bench's rows of one data set as flat metrics, keyed like a training run's."""
    results = json.loads(path.read_text())
    assert results["steps"] == load_config(YAML).train.steps, f"{path} was run at another budget"
    rows = {r["method"]: r for r in results["rows"] if r["dataset"] == dataset}
    metrics = {}
    for method, name in BENCH_NAMES.items():
        row = rows[name]
        metrics[method] = {f"{split}_{score}": value for split, scores in row["scores"].items()
                           for score, value in scores.items()}
        metrics[method].update({f"{split}_ref_{ref}_{score}": value
                                for split, refs in row["references"].items()
                                for ref, scores in refs.items() for score, value in scores.items()})
    return metrics


@pytest.fixture(scope="module", params=list(DATASETS))
def runs(request, tmp_path_factory):
    dataset = request.param
    bench = os.environ.get("FLOWSCI_POPULATION_BENCH")
    if bench:
        metrics = _from_bench(Path(bench), dataset)
    else:
        root = tmp_path_factory.mktemp(dataset)
        metrics = {method: train(load_config(YAML, [*DATASETS[dataset],
                                                    f"model.conditioning={conditioning}"]),
                                 root / method, progress=False).metrics
                   for method, conditioning in METHODS.items()}
    for split in ("train", *HELD_OUT[dataset]):
        print(f"{dataset} {split}: " + ", ".join(f"{m} W2 {metrics[m][f'{split}_w2']:.3f} MMD "
                                                 f"{metrics[m][f'{split}_mmd']:.4f}" for m in METHODS)
              + f"; ideal mean shift W2 {metrics['MFM'][f'{split}_ref_ideal_mean_shift_w2']:.3f}")
    return dataset, metrics


@pytest.mark.parametrize("runs", ["patients", pytest.param("letters", marks=pytest.mark.xfail(
    strict=True, reason=(
        "not reproduced on the test letter Y (bench/results/population.json): MFM-gcn W2 0.770 vs FM 0.667 "
        "and CGFM 0.712; it holds on the val letter X (W2 0.560 vs 0.777 / 0.853, MMD 0.096 vs 0.141 / "
        "0.146). Y also failed with 40 rotations x 6000 steps (0.693 vs FM 0.695)")))], indirect=True)
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
