"""IFactFormer-m's claims (Yang, Wang & Wang, arXiv 2412.18840, 2024) at CPU scale, on the default data and
training budget of domains/turbulence.yaml: -m and -o (equal parameter budget) trained for the
same number of steps. About 10 minutes on one core. ``pytest -m slow``."""

from __future__ import annotations

import pytest
from conftest import REPO

from flowsci.config import load_config
from flowsci.training import train

pytestmark = pytest.mark.slow

YAML = REPO / "domains" / "turbulence.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("turbulence_claims")
    variants = {"m": [], "o": ["model.name=ifactformer_o", "model.dim=50"]}  # 74.4 k vs 75.5 k parameters
    results = {name: train(load_config(YAML, ["train.threads=1", *extra]), out / name, progress=False)
               for name, extra in variants.items()}
    for name, result in results.items():
        print(name, {k: round(v, 4) for k, v in result.metrics.items()})
    return results


# Measured 2026-11-24 (default data and YAML, one thread): -m one-step 0.426, -o 0.270;
# -m 300-step rollout: E(k) ratio 0.19-11.7 for k <= 8 (energy piles up at k = 1), enstrophy
# ratio 1.07; speed-up over the 128² DNS 1.8x (batch 1). The claims below are the paper's;
# they do not hold for 2-D Kolmogorov flow at this CPU budget (see the turbulence section of
# the README). strict=True: a claim that starts to hold fails the tier until this is updated.
NOT_REPRODUCED = "not reproduced at CPU scale on 2-D Kolmogorov flow (measured numbers above)"


@pytest.mark.xfail(strict=True, reason=NOT_REPRODUCED)
def test_m_reaches_a_lower_one_step_error_than_o_at_equal_steps(runs):
    assert runs["m"].metrics["one_step_rel_l2"] < runs["o"].metrics["one_step_rel_l2"]


def test_m_rollout_stays_bounded_for_300_steps(runs):
    m = runs["m"].metrics
    assert m["rollout_finite"] == 1.0
    assert m["peak_enstrophy_ratio"] < 2.0, "no blow-up: the largest enstrophy stays near the DNS's"


@pytest.mark.xfail(strict=True, reason=NOT_REPRODUCED)
def test_m_rollout_matches_the_filtered_dns_statistics(runs):
    m = runs["m"].metrics
    assert m["spectrum_max_rel_error"] <= 0.2, "time-averaged E(k) within ±20 % for k <= k_cut / 2"
    assert abs(m["enstrophy_ratio"] - 1) <= 0.2, "mean enstrophy within ±20 %"


@pytest.mark.xfail(strict=True, reason=NOT_REPRODUCED)
def test_surrogate_is_ten_times_faster_than_the_dns_per_unit_physical_time(runs):
    assert runs["m"].metrics["speedup"] >= 10
