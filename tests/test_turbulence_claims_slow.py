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
HYBRID = "hybrid: 32² solver + IFactFormer-m"
SURROGATE = "IFactFormer-m alone"


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {row["model"]: row for row in json.loads(RESULT.read_text())["rows"]}


def classical_front(rows: dict[str, dict], prefix: str, metric: str, cost: str, at: float) -> float:
    """The best ``metric`` (lower is better) of the classical rows named ``prefix``... that cost at
    most ``at`` — and, if none does, of the cheapest one above it (the classical choice at equal
    or lower cost than a model costing ``at``)."""
    candidates = [row for label, row in rows.items() if label.startswith(prefix) and not row["trained"]]
    affordable = [row[metric] for row in candidates if row[cost] <= at]
    if affordable:
        return min(affordable)
    return min(candidates, key=lambda row: row[cost])[metric]


def test_every_row_of_the_benchmark_ran_and_its_rollouts_stayed_finite(rows):
    expected = {"coarse 32² (no closure)", "coarse 64² (no closure)", "Smagorinsky 32²", "Leith 32²",
                "Smagorinsky 48²", "Smagorinsky 64²", HYBRID, SURROGATE}
    assert expected <= set(rows)
    assert any(label.startswith("DNS restart") for label in rows)
    for label, row in rows.items():
        assert row["rollout_finite"] == 1.0, label
        assert row["one_step_rel_l2"] < row["persistence_rel_l2"], label


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


@pytest.mark.xfail(strict=True, reason="not reached at CPU scale: the 48²/64² classical solvers are "
                                       "more accurate at the hybrid's cost (numbers in docs/benchmarks.md)")
@pytest.mark.parametrize("batch", ["", "_batch16"])
def test_hybrid_is_more_accurate_than_smagorinsky_at_equal_or_lower_cost(rows, batch):
    hybrid = rows[HYBRID]
    cost = f"seconds_per_time_unit{batch}"
    assert hybrid["one_step_rel_l2"] < classical_front(rows, "Smagorinsky", "one_step_rel_l2", cost,
                                                       hybrid[cost])


@pytest.mark.xfail(strict=True, reason="not reached at CPU scale: the 64² solver without closure is "
                                       "more accurate at the hybrid's cost (numbers in docs/benchmarks.md)")
def test_the_main_job_beats_the_coarse_solver_without_closure_at_equal_cost(rows):
    hybrid = rows[HYBRID]
    cost = "seconds_per_time_unit"
    assert hybrid["one_step_rel_l2"] < classical_front(rows, "coarse", "one_step_rel_l2", cost, hybrid[cost])


def test_ifactformer_m_alone_stays_bounded_over_300_steps(rows):
    surrogate = rows[SURROGATE]
    assert surrogate["rollout_finite"] == 1.0
    assert surrogate["peak_enstrophy_ratio"] < 2.0


@pytest.mark.xfail(strict=True, reason="not reached at CPU scale: its 300-Δ spectrum is off by more "
                                       "than 30 % (numbers in docs/benchmarks.md)")
def test_ifactformer_m_alone_keeps_the_300_step_spectrum_within_30_percent(rows):
    assert rows[SURROGATE]["spectrum_max_rel_error"] <= 0.3
