"""Restoration of turbulence fields with the engine's image techniques (issue 23, item 5), read
from the committed benchmark result (``python bench/restoration_fields.py``,
bench/results/restoration_fields.json) instead of re-training its four networks (about 25
minutes on one core); ``pytest -m slow``. Rerun the benchmark to refresh the numbers these tests
read.

The fields are 82 test snapshots of filtered 2-D Kolmogorov vorticity (32²), restored from 5 %
sparse probes or from 8×8 block means, noise-free. Spectrum log error: the mean over fields and
shells k = 1..16 of |log10 E_restored(k) / E_truth(k)|. A goal the benchmark does not reach is a
strict xfail with the measured numbers: it fails the tier the day it starts to hold.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "restoration_fields.json"
SCORES = ("rel_l2", "spectrum_log_error", "mean_spectrum_log_error", "enstrophy_error",
          "measurement_residual")
STEERED = ("dps", "flowchef")
GENERATIVE = ("prior", "dps", "flowchef", "pmrf", "posterior_sampling")


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text())


def rows(result: dict, task: str) -> dict[str, dict]:
    return result["tasks"][task]["rows"]


def test_the_augmentation_maps_are_symmetries_of_the_solver_and_the_controls_are_not(result):
    """T(S(w)) = S(T(w)) on the 32² pseudo-spectral solver to round-off for the maps used, while
    a y shift by half the forcing period, or the x mirror without the sign flip, change the flow."""
    symmetry = result["symmetry"]
    assert len(symmetry["symmetries"]) == 4
    assert all(error < 1e-10 for error in symmetry["symmetries"].values()), symmetry["symmetries"]
    assert all(error > 0.5 for error in symmetry["controls"].values()), symmetry["controls"]


def test_every_row_ran_and_its_scores_are_finite(result):
    assert set(rows(result, "probes")) == {"baseline", "prior", *STEERED}
    assert set(rows(result, "coarse")) == {"baseline", "prior", *STEERED, "posterior_mean", "pmrf",
                                           "posterior_sampling"}
    for task in ("probes", "coarse"):
        for method, row in rows(result, task).items():
            assert all(math.isfinite(row[key]) and row[key] >= 0 for key in SCORES), (task, method)


def test_steering_fits_the_measurements_that_the_prior_alone_misses(result):
    """FlowChef and DPS reproduce the probes to within 5 % (the unsteered prior misses them by more
    than 100 %); on the block means both beat the bicubic interpolant, which does not preserve
    block means (the noise-free baseline's residual), and FlowChef is within 5 %."""
    for task in ("probes", "coarse"):
        assert rows(result, task)["prior"]["measurement_residual"] > 1.0, task
    probes, coarse = rows(result, "probes"), rows(result, "coarse")
    for method in STEERED:
        assert probes[method]["measurement_residual"] < 0.05, method
        assert coarse[method]["measurement_residual"] < coarse["baseline"]["measurement_residual"], method
    assert coarse["flowchef"]["measurement_residual"] < 0.05


def test_steering_moves_the_prior_towards_the_truth(result):
    """Steered samples are closer to the truth than unsteered ones in relative L2 (an unsteered
    sample's error is about sqrt(2))."""
    for task in ("probes", "coarse"):
        r = rows(result, task)
        for method in STEERED:
            assert r[method]["rel_l2"] < 0.9 * r["prior"]["rel_l2"], (task, method)


def test_generative_restorations_keep_the_spectrum_that_plain_interpolation_loses(result):
    """Every flow-based row has a spectrum log error below half its task's plain answer
    (griddata linear for probes, bicubic for block means), and a mean spectrum within 0.1
    decades on average over the shells."""
    for task in ("probes", "coarse"):
        r = rows(result, task)
        for method in (m for m in GENERATIVE if m in r):
            assert r[method]["spectrum_log_error"] < r["baseline"]["spectrum_log_error"] / 2, (task, method)
            assert r[method]["mean_spectrum_log_error"] < 0.1, (task, method)


def test_the_posterior_mean_has_the_least_distortion(result):
    """The MSE-trained posterior mean has the lowest relative L2 error of the super-resolution rows."""
    coarse = rows(result, "coarse")
    best = coarse["posterior_mean"]["rel_l2"]
    assert all(best < row["rel_l2"] for method, row in coarse.items() if method != "posterior_mean")


def test_pmrf_super_resolution_beats_bicubic_and_the_posterior_mean_on_spectrum_error(result):
    """The issue's goal: on turbulence fields, PMRF super-resolution beats bicubic interpolation
    and the posterior mean on spectrum error."""
    coarse = rows(result, "coarse")
    pmrf = coarse["pmrf"]["spectrum_log_error"]
    assert pmrf < coarse["baseline"]["spectrum_log_error"]
    assert pmrf < coarse["posterior_mean"]["spectrum_log_error"]
    assert result["goal"]["holds"]


def test_pmrf_has_less_distortion_than_posterior_sampling(result):
    """PMRF's premise (Ohayon et al. 2025): transporting the posterior mean costs less MSE than
    sampling the posterior (whose MSE is twice the posterior mean's)."""
    coarse = rows(result, "coarse")
    assert coarse["pmrf"]["rel_l2"] < coarse["posterior_sampling"]["rel_l2"]
