"""The one-step family's claims (issue 22) on MNIST-5k at 14×14, read from the committed
benchmark result (``python bench/one_step.py``, bench/results/one_step.json) instead of
re-training its twenty models (about two hours on one core); ``pytest -m slow``. Rerun the
benchmark to refresh the numbers these tests read.

One-step FD is the Fréchet classifier distance (not FID) after one step of each model's own
sampler; the teacher's step evaluates both guidance branches. A claim the benchmark does not
reproduce is a strict xfail with its numbers: it fails the tier the day it starts to hold.
"""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "one_step.json"


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return json.loads(RESULT.read_text())["rows"]


def fd(rows: dict[str, list[dict]], key: str, steps: int = 1) -> float:
    """The row's FD after ``steps`` steps, averaged over the seeds measured."""
    return statistics.fmean(r["by_steps"][str(steps)]["fd"] for r in rows[key])


def test_reflow_cuts_the_one_step_fd_to_a_third_and_distillation_cuts_it_further(rows):
    assert fd(rows, "2-RF") <= fd(rows, "1-RF") / 3
    assert fd(rows, "2-RF+distil") < fd(rows, "2-RF")


@pytest.mark.xfail(strict=True, reason="not reproduced at this scale: one-step FD 6.92 ± 0.56 after "
                   "reflow then distillation vs 6.72 ± 0.49 distilling the 1-RF directly (L2, 3 seeds); "
                   "perceptual-Huber 6.98 vs 6.39 (1 seed)")
def test_reflow_then_distil_beats_distilling_the_first_flow(rows):
    """InstaFlow's central finding, with either distillation loss."""
    assert fd(rows, "2-RF+distil") < fd(rows, "distil-1RF")
    assert fd(rows, "2-RF+distil/P") < fd(rows, "distil-1RF/P")


def test_two_rf_plus_plus_beats_two_rf_at_one_step_over_three_seeds(rows):
    seeds = {r["seed"] for r in rows["2-RF++"]}
    assert len(seeds) >= 3 and seeds == {r["seed"] for r in rows["2-RF"]}
    by_seed = {r["seed"]: r["by_steps"]["1"]["fd"] for r in rows["2-RF"]}
    better = [r["by_steps"]["1"]["fd"] < by_seed[r["seed"]] for r in rows["2-RF++"]]
    assert all(better), better


@pytest.mark.xfail(strict=True, reason="not reproduced over two seeds: the 2 000-step annealing-reflow "
                   "student scores 14.9 (12.0 and 17.7) against 2-RF's 10.5 ± 0.7, 1.41×; seed 0 alone "
                   "was within 1.3× (1.22)")
def test_the_slim_student_is_within_1_3x_of_the_teacher_sized_two_rf(rows):
    """SlimFlow's size claim, for the annealing-reflow student trained from scratch 2 000 steps
    (at the other students' 500 steps it is far behind: see docs/benchmarks.md)."""
    student = rows["Slim/annealed-2000"][0]
    assert student["parameters"] <= 0.4 * rows["2-RF"][0]["parameters"]
    assert fd(rows, "Slim/annealed-2000") <= 1.3 * fd(rows, "2-RF")


@pytest.mark.xfail(strict=True, reason="not reproduced: annealing reflow 48.1 vs random init 44.6 at "
                   "500 steps (one seed), 14.9 vs 14.7 at 2 000 steps (seeds 0, 1: 12.0 vs 10.8, "
                   "17.7 vs 18.7)")
def test_annealing_reflow_beats_reflow_from_random_init(rows):
    assert fd(rows, "Slim/annealed") < fd(rows, "Slim/random")
    assert fd(rows, "Slim/annealed-2000") < fd(rows, "Slim/random-2000")


@pytest.mark.xfail(strict=True, reason="not reproduced (one seed): distilling the 2 000-step annealed "
                   "student with flow-guided distillation gave one-step FD 28.9, worse than the "
                   "student itself (12.0); plain distillation 34.1")
def test_flow_guided_distillation_improves_the_slim_student(rows):
    assert fd(rows, "Slim/annealed-2000+FGD") < fd(rows, "Slim/annealed-2000")


def test_flow_guided_distillation_beats_plain_distillation_of_the_slim_student(rows):
    assert fd(rows, "Slim/annealed-2000+FGD") < fd(rows, "Slim/annealed-2000+distil")


def test_rectified_diffusion_halves_the_vp_models_two_step_fd(rows):
    assert fd(rows, "VP", 2) >= 2 * fd(rows, "VP/rectified", 2)


def test_the_instaflow_student_draws_the_asked_attributes_in_one_step(rows):
    """One step of the caption 2-RF distilled: closer to the data than the caption teacher's one
    step, and its attribute accuracy is not lost on the way."""
    teacher, student = rows["captions-1RF"][0]["by_steps"]["1"], rows["InstaFlow"][0]["by_steps"]["1"]
    assert student["fd"] < teacher["fd"]
    assert student["accuracy"] >= teacher["accuracy"] - 0.05
