"""FlowSep's claims (issue 24) at CPU scale on held-out Bach chorales, read from the committed
benchmark result (``python bench/separation.py``, bench/results/separation.json) instead of
re-training its four models (31 minutes, two runs at a time on two cores); ``pytest -m slow``. Rerun the
benchmark to refresh the numbers these tests read.

A claim the benchmark does not reproduce is a strict xfail with its numbers.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from flowsci_domains.separation.chorales import VOICES

pytestmark = pytest.mark.slow

RESULT = REPO / "bench" / "results" / "separation.json"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text())


SI_SDRI_6DB = pytest.mark.xfail(strict=True, reason=(
    "not reproduced at CPU scale (2 400 steps of 16 rows, 9 min): the flow separator's SI-SDRi at 10 Euler "
    "steps is soprano 3.67, alto -0.75, tenor 1.42, bass 3.66 dB (best 2.72 dB overall at 2 steps; 3.12 with "
    "guidance 2); the mask separator reaches 6.23 / 2.58 / 3.89 / 5.27 dB; the true mel gives about "
    "11 dB"))


@SI_SDRI_6DB
@pytest.mark.parametrize("role", VOICES)
def test_the_flow_separator_gains_at_least_6_db_on_every_role(result, role):
    assert result["runs"]["flow"][f"si_sdri_{role}"] >= 6.0


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced at CPU scale: at equal parameters (0.59 M, the same U-Net) and equal training steps "
    "the mask separator wins on both, SI-SDR 1.17 vs -1.30 dB and mel-L1 0.791 vs 1.032; the flow's "
    "one-step estimate (its posterior mean) is its best SI-SDR, as distortion metrics favour means"))
def test_the_flow_beats_the_mask_separator_on_si_sdr_or_mel_l1_at_equal_parameters(result):
    flow, mask = result["runs"]["flow"], result["runs"]["mask"]
    assert abs(flow["parameters"] - mask["parameters"]) < 0.05 * mask["parameters"]
    scores = {k: (flow[k], mask[k]) for k in ("si_sdr", "mel_l1")}
    assert flow["si_sdr"] > mask["si_sdr"] or flow["mel_l1"] < mask["mel_l1"], scores


def test_the_vp_path_needs_at_least_four_times_the_nfe_at_equal_quality(result):
    efficiency = result["efficiency"]
    # None: the VP model never reached the flow's quality, so it needs more than the largest NFE tried
    vp_nfe = efficiency["vp_nfe"] or max(result["nfe_grid"]) + 1
    assert vp_nfe >= 4 * efficiency["flow_nfe"], efficiency


def test_held_out_phrasings_are_within_1_db_of_the_trained_ones(result):
    flow = result["runs"]["flow"]
    assert abs(flow["si_sdri_heldout"] - flow["si_sdri"]) <= 1.0


def test_the_default_config_trains_within_15_minutes_on_one_core(result):
    runs = result["runs"]
    assert runs["autoencoder"]["train_seconds"] + runs["flow"]["train_seconds"] <= 15 * 60
