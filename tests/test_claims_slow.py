"""Slow tier (`pytest -m slow`): the rectified-flow claims that reflow straightens paths (Liu, Gong &
Liu, ICLR 2023) and that minibatch-OT couplings do (Tong et al. 2024),
reproduced with neural velocity fields on the toy2d domain."""

from __future__ import annotations

import pytest
import torch
from conftest import TOY2D_YAML

from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.flow_matching import Sampler
from flowsci.metrics import mmd_rbf
from flowsci.plugins import create_domain
from flowsci.reflow import generate_pairs
from flowsci.solvers import Euler
from flowsci.training import train

pytestmark = pytest.mark.slow

COMMON = ["train.batch_size=256", "train.ema=0", "train.eval_every=0", "train.checkpoint_every=0",
          "train.warmup_steps=100", "model.width=256", "eval.n_samples=1000", "eval.steps=[1,64]",
          "sample.steps=100"]


def test_o16_minibatch_ot_straightens_paths(tmp_path):
    """OT coupling: straightness at least 100x smaller than with independent pairs, and one
    Euler step within 1.5x of the 64-step W2 (8 Gaussians -> moons)."""
    results = {}
    for coupling in ("independent", "ot"):
        cfg = load_config(TOY2D_YAML, [*COMMON, "train.steps=6000", f"objective.coupling={coupling}"])
        results[coupling] = train(cfg, tmp_path / coupling, progress=False).metrics
    indep, ot = results["independent"], results["ot"]
    print(f"OT straightness: S indep {indep['straightness']:.4f}, S OT {ot['straightness']:.5f}; "
          f"OT W2 1 step {ot['w2_nfe1']:.3f}, 64 steps {ot['w2_nfe64']:.3f}")
    assert ot["straightness"] * 100 <= indep["straightness"]
    assert ot["w2_nfe1"] <= 1.5 * ot["w2_nfe64"]


def test_o15_reflow_straightens_and_fixes_one_step_sampling(tmp_path):
    """2-RF on N(0, I) -> 8-Gaussian ring: straightness < 0.2x of 1-RF's, one-step MMD < 0.2x,
    transport cost not increased."""
    task = ["domain.source=gaussian", "domain.target=8gaussians"]
    first_cfg = load_config(TOY2D_YAML, [*COMMON, *task, "train.steps=5000"])
    first = train(first_cfg, tmp_path / "rf1", progress=False)
    teacher = load_model(first.run_dir)
    pairs = generate_pairs(teacher, create_domain("toy2d").source(first_cfg), 50_000, tmp_path / "pairs.h5",
                           sampler=Sampler.from_config(first_cfg.sample), batch_size=5000, progress=False)
    second_cfg = load_config(TOY2D_YAML, [*COMMON, *task, "train.steps=5000", f"data.pairs={pairs}",
                                          "objective.coupling=paired", f"train.init_from={first.run_dir}"])
    second = train(second_cfg, tmp_path / "rf2", progress=False)
    student = load_model(second.run_dir)

    data = create_domain("toy2d").build_data(first_cfg)
    x0, target = data.test.tensors["x0"], data.test.tensors["x1"]
    one_step = Sampler(Euler(), 1)
    with torch.no_grad():
        mmd1 = mmd_rbf(one_step.sample(teacher, x0).x, target)
        mmd2 = mmd_rbf(one_step.sample(student, x0).x, target)
    s1, s2 = first.metrics["straightness"], second.metrics["straightness"]
    c1, c2 = first.metrics["transport_cost"], second.metrics["transport_cost"]
    print(f"reflow: S {s1:.4f} -> {s2:.4f}; 1-step MMD {mmd1:.4f} -> {mmd2:.4f}; cost {c1:.3f} -> {c2:.3f}")
    assert s2 < 0.2 * s1
    assert mmd2 < 0.2 * mmd1
    assert c2 <= c1 * 1.02
