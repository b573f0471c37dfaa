"""The turbulence issue's goals (issue 21) at CPU scale, on the default regime of
domains/turbulence.yaml, read from the committed benchmark result (``python bench/turbulence.py``,
bench/results/turbulence.json) instead of re-training its rows (about 45 minutes on one core);
``pytest -m slow``. Rerun the benchmark to refresh the numbers these tests read.

A goal the benchmark does not reach is a strict xfail with the measured numbers: it fails the
tier the day it starts to hold, so that the note here is updated.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "turbulence.json"
HYBRID = "hybrid: 32² solver + IFactFormer-m"  # the main job, domains/turbulence.yaml
HYBRID_FNO = "hybrid: 32² solver + FNO"
SURROGATE = "IFactFormer-m alone"
# a classical row counts as "equal or lower cost" up to this factor above the model's cost: the
# benchmark's costs are medians over interleaved rounds (--retime), still noisy by ~±25 % on a
# shared machine, so the tolerance is in the classical rows' favour
COST_TOLERANCE = 1.25


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {row["model"]: row for row in json.loads(RESULT.read_text())["rows"]}


def classical_choice(rows: dict[str, dict], prefix: str, cost: str, at: float) -> dict:
    """The classical row named ``prefix``... a user would pick at a budget of ``at``: the most
    accurate (one-step) of those costing at most ``COST_TOLERANCE * at``, else the cheapest one."""
    candidates = [row for label, row in rows.items() if label.startswith(prefix) and not row["trained"]]
    affordable = [row for row in candidates if row[cost] <= COST_TOLERANCE * at]
    if affordable:
        return min(affordable, key=lambda row: row["one_step_rel_l2"])
    return min(candidates, key=lambda row: row[cost])


def test_every_row_of_the_benchmark_ran_and_its_rollouts_stayed_finite(rows):
    expected = {"coarse 32² (no closure)", "coarse 64² (no closure)", "Smagorinsky 32²", "Leith 32²",
                "Smagorinsky 48²", "Smagorinsky 64²", HYBRID, HYBRID_FNO, SURROGATE}
    assert expected <= set(rows)
    assert any(label.startswith("DNS restart") for label in rows)
    for label, row in rows.items():
        assert row["rollout_finite"] == 1.0, label
        assert row["one_step_rel_l2"] < row["persistence_rel_l2"], label
        assert row["seconds_per_time_unit"] > 0 and row["seconds_per_time_unit_batch16"] > 0, label


def test_the_dns_restart_is_the_floor_of_every_model_on_the_filtered_state(rows):
    floor = next(row for label, row in rows.items() if label.startswith("DNS restart"))
    for label, row in rows.items():
        assert row["one_step_rel_l2"] >= floor["one_step_rel_l2"] - 0.01, label


def test_hybrid_keeps_the_short_rollout_statistics_of_the_filtered_dns(rows):
    hybrid = rows[HYBRID]
    assert hybrid["spectrum_max_rel_error_short"] <= 0.15, "50-Δ spectrum within ±15 % for k <= 8"
    assert abs(hybrid["enstrophy_ratio_short"] - 1) <= 0.15, "50-Δ enstrophy within ±15 %"


def test_hybrid_beats_smagorinsky_on_its_own_grid(rows):
    hybrid, les = rows[HYBRID], rows["Smagorinsky 32²"]
    assert hybrid["one_step_rel_l2"] < les["one_step_rel_l2"]
    assert hybrid["correlation_time"] > les["correlation_time"]


def goal_met(row: dict, rows: dict[str, dict], cost: str) -> bool:
    """The issue's first goal for one learned row: more accurate and with a longer correlation time
    than the Smagorinsky LES of equal or lower cost, its 50-Δ spectrum (k <= 8) and enstrophy
    within ±15 % of the filtered DNS."""
    les = classical_choice(rows, "Smagorinsky", cost, row[cost])
    return (row["one_step_rel_l2"] < les["one_step_rel_l2"]
            and row["correlation_time"] > les["correlation_time"]
            and row["spectrum_max_rel_error_short"] <= 0.15
            and abs(row["enstrophy_ratio_short"] - 1) <= 0.15)


@pytest.mark.parametrize("batch", ["", "_batch16"])
def test_some_model_is_more_accurate_than_smagorinsky_at_equal_or_lower_cost(rows, batch):
    cost = f"seconds_per_time_unit{batch}"
    learned = {label: row for label, row in rows.items() if row["trained"]}
    measured = {label: (round(row["one_step_rel_l2"], 3), round(1000 * row[cost], 1))
                for label, row in learned.items()}  # (one-step error, ms per time unit)
    assert any(goal_met(row, rows, cost) for row in learned.values()), measured


@pytest.mark.xfail(strict=True, reason="not reached: the 48² solver without closure is more accurate "
                                       "(0.160 vs 0.214 one-step) at about the hybrid's cost (71 vs 62 ms "
                                       "per time unit at batch 1; docs/benchmarks.md)")
def test_the_main_job_beats_the_coarse_solver_without_closure_at_equal_cost(rows):
    hybrid = rows[HYBRID]
    cost = "seconds_per_time_unit"
    assert hybrid["one_step_rel_l2"] < classical_choice(rows, "coarse", cost, hybrid[cost])["one_step_rel_l2"]


def test_ifactformer_m_alone_stays_bounded_over_300_steps(rows):
    surrogate = rows[SURROGATE]
    assert surrogate["rollout_finite"] == 1.0
    assert surrogate["peak_enstrophy_ratio"] < 2.0


@pytest.mark.xfail(strict=True, reason="not reached at CPU scale: at Δ = 1 (a turnover) and 800 steps "
                                       "IFactFormer-m alone barely learns (one-step 0.91 vs persistence "
                                       "1.13) and its rollouts decay: 300-Δ spectrum error 0.99")
def test_ifactformer_m_alone_keeps_the_300_step_spectrum_within_30_percent(rows):
    assert rows[SURROGATE]["spectrum_max_rel_error"] <= 0.3
