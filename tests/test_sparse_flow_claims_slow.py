"""Janny et al.'s claims (issue 25) at CPU scale, and the flow ensemble's goals, read from the
committed benchmark result (``python bench/sparse_flow.py``, bench/results/sparse_flow.json)
instead of re-training its nine models (78 minutes, two runs at a time on two cores);
``pytest -m slow``. Rerun the benchmark to refresh the numbers these tests read.

A claim the benchmark does not reproduce is a strict xfail with its numbers.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "sparse_flow.json"
OUT_SPLITS = ("mse_in_t_out_s", "mse_out_t_in_s", "mse_out_t_out_s")


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, float], dict]:
    result = json.loads(RESULT.read_text())
    return {(row["method"], row["space_sub"]): row for row in result["rows"]}


def test_the_observer_errs_off_the_observation_about_as_on_it(rows):
    observer = rows[("observer", 0.1)]
    assert observer["worst_out_ratio"] <= 2.0, {k: observer[k] for k in ("mse_in_t_in_s", *OUT_SPLITS)}


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced on the DINo set-up at 64²: the baseline's error is its GNN forecast's, 0.0474 on the "
    "observed points and 0.0470 off them at observed frames (ratio 0.99, space_sub 0.10); interpolating the "
    "true observations costs only 6.4e-5 off the points (3.8e-4 at space_sub 0.05) against a field variance "
    "of 0.49, because the flow (Re ~ 100, energy at |k| <= 3) is smooth on the scale of the observation"))
def test_the_interpolation_baseline_errs_twice_as_much_off_the_observed_points(rows):
    interpolation = rows[("interpolation", 0.1)]
    errors = {k: interpolation[k] for k in ("mse_in_t_in_s", *OUT_SPLITS)}
    assert interpolation["ratio_in_t_out_s"] >= 2.0, errors


@pytest.mark.parametrize("space_sub", [0.25, 0.1, 0.05])
def test_the_observer_beats_interpolation_on_every_out_error(rows, space_sub):
    observer, interpolation = rows[("observer", space_sub)], rows[("interpolation", space_sub)]
    for key in OUT_SPLITS:
        assert observer[key] < interpolation[key], (key, observer[key], interpolation[key])


def test_the_flow_ensemble_is_calibrated(rows):
    assert 0.7 <= rows[("flow_ensemble", 0.1)]["spread_skill"] <= 1.3


def test_the_ensemble_mean_is_within_1_2_of_the_observer(rows):
    assert rows[("flow_ensemble", 0.1)]["rel_l2"] <= 1.2 * rows[("observer", 0.1)]["rel_l2"]


def test_the_ensemble_spreads_more_where_less_is_observed(rows):
    spreads = [rows[("flow_ensemble", s)]["ensemble_std_out_s"] for s in (0.25, 0.1, 0.05)]
    assert spreads[0] < spreads[1] < spreads[2], spreads


def test_the_default_config_trains_within_15_minutes_on_one_core(rows):
    assert rows[("observer", 0.1)]["train_seconds"] <= 15 * 60
