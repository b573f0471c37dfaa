"""Inversion, editing, steering and restoration claims (issue 23) on MNIST-5k 14×14 and LFW, read
from the committed benchmark result (``python bench/restoration.py``,
bench/results/restoration.json) instead of re-training its models (about 1.5 hours on one
core); ``pytest -m slow``. Rerun the benchmark to refresh the numbers these tests read.

FD is the Fréchet classifier distance (a classifier trained here, not Inception: not FID). A
claim the benchmark does not reproduce is a strict xfail with its numbers.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "restoration.json"
INJECT = "4"  # RF-Edit's sharing for 4 of 20 steps (the paper: 3 of 15 on FLUX)


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text())


def mse_by_nfe(result: dict, solver: str) -> dict[int, float]:
    return {r["nfe"]: r["mse"] for r in result["inversion"]["rows"] if r["solver"] == solver}


@pytest.mark.parametrize("solver", ["rf_solver3", "midpoint"])
def test_a_higher_order_solver_reconstructs_better_than_euler_at_every_equal_nfe(result, solver):
    euler, other = mse_by_nfe(result, "euler"), mse_by_nfe(result, solver)
    shared = sorted(set(euler) & set(other))
    assert len(shared) >= 3
    assert all(other[k] < euler[k] for k in shared), {k: (other[k], euler[k]) for k in shared}


def test_the_inversion_table_reports_each_methods_observed_order(result):
    orders = result["inversion"]["orders"]
    assert set(orders) == {"euler", "midpoint", "heun", "rf_solver3", "rk4"}
    assert 0.8 < orders["euler"] < 1.3  # Euler's round trip is first order on the learned field too


def pmrf_rows(result: dict, dataset: str, task: str) -> dict[str, dict]:
    return result[f"pmrf-{dataset}-{task}"]["rows"]


LFW_DENOISE = pytest.mark.xfail(strict=True, reason="not reproduced on LFW denoising (120 faces and "
                                "non-faces, 40 test images): PMRF MSE 0.0148 (FD 15.0) against posterior "
                                "sampling's 0.0105 (FD 25.8); PMRF's FD is the better one")
LFW_INPAINT = pytest.mark.xfail(strict=True, reason="not reproduced on LFW inpainting: PMRF MSE 0.0050 "
                                "(FD 12.4) against posterior sampling's 0.0037 (FD 10.4); the posterior-mean "
                                "network (0.0048) is no better in MSE than posterior sampling: under-trained")


@pytest.mark.parametrize(("dataset", "task"), [("mnist", "denoise"), ("mnist", "inpaint"),
                                               pytest.param("lfw", "denoise", marks=LFW_DENOISE),
                                               pytest.param("lfw", "inpaint", marks=LFW_INPAINT)])
def test_pmrf_has_lower_mse_than_posterior_sampling_at_equal_or_better_fd(result, dataset, task):
    rows = pmrf_rows(result, dataset, task)
    assert rows["pmrf"]["mse"] < rows["posterior"]["mse"]
    assert rows["pmrf"]["fd"] <= 1.1 * rows["posterior"]["fd"]  # "equal": within 10 %


@pytest.mark.parametrize("dataset", ["mnist", "lfw"])
@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_pmrf_looks_more_real_than_the_posterior_mean(result, dataset, task):
    rows = pmrf_rows(result, dataset, task)
    assert rows["pmrf"]["fd"] < rows["mmse"]["fd"]
    assert rows["mmse"]["mse"] < rows["pmrf"]["mse"]  # the posterior mean is the least-MSE estimate


def chef(result: dict, task: str, method: str, prior: str = "teacher") -> dict:
    return result["flowchef"]["rows"][f"{prior}/{task}/{method}"]


def test_flowchef_beats_dps_on_deblurring_in_psnr_at_half_its_time_and_memory(result):
    assert chef(result, "deblur", "flowchef")["psnr"] >= chef(result, "deblur", "dps")["psnr"]
    timing = result["timing"]["rows"]
    assert timing["deblur/flowchef"]["seconds"] <= 0.5 * timing["deblur/dps"]["seconds"]
    assert timing["deblur/flowchef"]["peak_mib"] <= 0.5 * timing["deblur/dps"]["peak_mib"]


@pytest.mark.xfail(strict=True, reason="not reproduced: inpainting the right half, FlowChef 15.02 dB "
                   "(step 10, K = 3) against DPS-style guidance 16.36 dB (step 100), 200 test digits, "
                   "step sizes chosen on validation digits; K = 10, 100 Euler steps and the Adam variant "
                   "all stayed at 14.9-15.1 dB on 50 validation digits; the 2-RF prior: 15.59 vs 16.29")
def test_flowchef_matches_dps_on_inpainting_in_psnr(result):
    assert chef(result, "inpaint", "flowchef")["psnr"] >= chef(result, "inpaint", "dps")["psnr"] - 0.1


@pytest.mark.parametrize("task", ["deblur", "inpaint", "sr2"])
def test_steering_restores_far_better_than_the_unsteered_prior(result, task):
    for method in ("flowchef", "dps"):
        assert chef(result, task, method)["psnr"] > chef(result, task, "prior")["psnr"] + 4


@pytest.mark.parametrize("kind", ["label", "attribute"])
def test_rf_edit_feature_sharing_keeps_more_structure_at_most_5_points_less_accuracy(result, kind):
    """Label edits with the DiT, thickness edits with the caption MM-DiT; the values of the last 2
    blocks shared for 4 of 20 steps."""
    rows = result["edit"]["rows"]
    plain, shared = rows[f"{kind}/2/0"], rows[f"{kind}/2/{INJECT}"]
    assert shared["ssim"] > plain["ssim"]
    assert shared["target_accuracy"] >= plain["target_accuracy"] - 0.05
