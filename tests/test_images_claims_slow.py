"""The images domain's goals at CPU scale (slow tier), read from the committed benchmark results
in ``bench/results/`` instead of re-training (each would take 10–60 minutes on one core; the
docstring of each test names the command that regenerates its file):

- the default run: Fréchet classifier distance <= 3x its real-vs-real floor at 20 steps, class
  accuracy >= 90 % (``bench/images.py``, the row at the default guidance weight);
- SD3's timestep finding: logit-normal no worse than uniform at <= 25 Euler steps, 3 seeds
  (``bench/images_timesteps.py``);
- SD3's claim that joint attention reads the caption better: MM-DiT's relation accuracy on the
  two-digit canvas >= the pooled-caption DiT's + 10 points at equal parameters and budget
  (``bench/images_relations.py``);
- caption attributes: >= 80 % of the samples asked for held-out (digit, thickness, slant)
  combinations in held-out phrasings show every attribute asked for (``bench/images_attributes.py``).
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from flowsci.config import load_config

pytestmark = pytest.mark.slow

RESULTS = REPO / "bench" / "results"


def result(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def test_default_run_is_within_3x_of_the_floor_with_90_percent_class_accuracy():
    """`python bench/images.py`: the run of domains/images.yaml at its default guidance."""
    guidance = load_config(REPO / "domains" / "images.yaml").sample.guidance
    sweep = result("images_guidance")
    row = next(r for r in sweep["rows"] if r["guidance"] == guidance)
    floor = sweep["fixed"]["fd_real"]
    print(f"FD {row['fd']:.3g} = {row['fd'] / floor:.2f}x the floor {floor:.3g}; "
          f"accuracy {row['accuracy']:.3f}")
    assert row["fd"] <= 3 * floor
    assert row["accuracy"] >= 0.9


def test_logit_normal_timesteps_are_no_worse_than_uniform_at_few_steps():
    """`python bench/images_timesteps.py` (3 seeds, 600 steps each): mean FD over seeds."""
    study = result("images_timesteps")
    assert len(study["seeds"]) >= 3
    table = study["table"]
    for nfe in study["nfe"]:
        uniform, logit = table["uniform"][f"fd_nfe{nfe}"], table["logit_normal"][f"fd_nfe{nfe}"]
        print(f"{nfe} steps: uniform {uniform[0]:.3g} ± {uniform[1]:.2g}, logit-normal {logit[0]:.3g} ± "
              f"{logit[1]:.2g}")
        assert logit[0] <= uniform[0]


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced at CPU scale: after 4 000 steps (batch 64, 0.34 M parameters each) MM-DiT's relation "
    "accuracy is 0.126 against the pooled-caption DiT's 0.088 (+3.8 points, not +10; +5.2 after 2 000 "
    "steps), and neither draws clean digits yet (per-half class accuracy 0.34 and 0.29; FD of the halves "
    "110 and 121); docs/benchmarks.md"))
def test_mmdit_reads_relations_better_than_a_pooled_caption_dit():
    """`python bench/images_relations.py`: relation accuracy after 20 Euler steps."""
    table = result("images_relations")["table"]
    mmdit, dit = table["mmdit"], table["dit (pooled text)"]
    ratio = mmdit["parameters"][0] / dit["parameters"][0]
    print(f"relation accuracy MM-DiT {mmdit['relation_accuracy'][0]:.3f}, "
          f"DiT {dit['relation_accuracy'][0]:.3f}; parameters ratio {ratio:.2f}")
    assert 0.9 <= ratio <= 1.1
    assert mmdit["relation_accuracy"][0] >= dit["relation_accuracy"][0] + 0.10


def test_caption_attributes_generalise_to_held_out_combinations():
    """`python bench/images_attributes.py`: the run of domains/images_attributes.yaml."""
    metrics = result("images_attributes")["metrics"]
    print({k: round(v, 3) for k, v in metrics.items() if k.startswith("heldout")})
    assert metrics["heldout_attribute_accuracy"] >= 0.8
