"""The reflow pipeline (`flowsci rectify`) on 8×8 digits: pairs drawn for the teacher's
conditions and reproducible from the seed, stages that resume after an interruption, the
distillation stage's settings, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO

from flowsci.cli import main
from flowsci.config import load_config
from flowsci.data import load_split, read_meta
from flowsci.errors import ConfigError
from flowsci.flow_matching import Sampler
from flowsci.rectify import rectify, split_overrides, stage_overrides
from flowsci.reflow import generate_pairs
from flowsci.solvers import Euler
from flowsci.sources import StandardNormal
from flowsci.training import train

pytest.importorskip("sklearn", reason="the 8×8 digits come from scikit-learn (the images extra)")

TINY = ["domain.source=digits8", "domain.resolution=8", "data.n_val=100", "data.n_test=100",
        "model.width=8", "model.multipliers=[1,2]", "model.attention=false", "train.steps=12",
        "train.batch_size=32", "train.warmup_steps=2", "train.checkpoint_every=5", "train.ema=0",
        "eval.n_samples=50", "eval.steps=[1,2]", "sample.steps=2", "eval.classifier_steps=100",
        "eval.grid_per_class=1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cfg = load_config(REPO / "domains" / "images.yaml", TINY)
    return train(cfg, tmp_path_factory.mktemp("teacher") / "run", progress=False).run_dir


class Interrupt(Exception):
    pass


def test_pairs_carry_their_conditions_and_repeat_with_the_seed(tmp_path):
    class LabelShift(torch.nn.Module):
        """v(x, t, y) = y: each pair's x1 - x0 tells the label it was drawn for."""

        def forward(self, x, t, y):
            return y.to(x.dtype)[:, None].expand_as(x)

    pool = {"y": torch.arange(5)}
    args = dict(sampler=Sampler(Euler(), 3), batch_size=40, seed=7, conditions=pool, progress=False)
    first = load_split(generate_pairs(LabelShift(), StandardNormal((2,)), 100, tmp_path / "a.h5", **args),
                       "train")
    again = load_split(generate_pairs(LabelShift(), StandardNormal((2,)), 100, tmp_path / "b.h5", **args),
                       "train")
    assert set(first) == {"x0", "x1", "y"} and first["y"].shape == (100,)
    assert all(torch.equal(first[k], again[k]) for k in first)
    shift = first["y"][:, None].expand(100, 2).to(first["x0"])
    assert torch.allclose(first["x1"] - first["x0"], shift)
    assert set(first["y"].tolist()) == set(range(5))  # drawn from the whole pool
    with pytest.raises(ValueError, match="same number"):
        generate_pairs(LabelShift(), StandardNormal((2,)), 10, tmp_path / "c.h5", sampler=Sampler(Euler(), 1),
                       conditions={"y": torch.arange(5), "z": torch.arange(4)})


def test_stage_overrides_fix_the_distillation_times_and_steps(tmp_path):
    got = stage_overrides("distill", tmp_path / "p.h5", tmp_path / "run", 4)
    cfg = load_config(REPO / "domains" / "images.yaml", got)
    assert cfg.objective.timesteps == {"name": "discrete", "values": [0, 0.25, 0.5, 0.75]}
    assert cfg.sample.steps == 4 and cfg.objective.coupling == "paired"
    assert cfg.train.init_from == str(tmp_path / "run") and cfg.data.pairs == str(tmp_path / "p.h5")
    assert split_overrides(["a.b=1", "distill:c=2", "reflow:d=x:y"]) == {None: ["a.b=1"], "distill": ["c=2"],
                                                                         "reflow": ["d=x:y"]}
    with pytest.raises(ConfigError, match="stage 'distil'"):
        split_overrides(["distil:c=2"])


def test_stages_resume_after_an_interruption(teacher, tmp_path):
    calls = []

    def interrupted_in_distill(cfg, out, *, resume, progress):
        calls.append((out.parent.name, resume))
        if out.parent.name == "2-distill" and not resume:
            cfg.train.steps = 5  # train 5 of its 12 steps, then stop as an interrupted run does
            train(cfg, out, progress=False)
            raise Interrupt
        return train(cfg, out, resume=resume, progress=progress)

    out = tmp_path / "pipeline"
    kwargs = dict(n_pairs=64, batch_size=32, out=out, progress=False, overrides=["distill:train.steps=12"])
    with pytest.raises(Interrupt):
        rectify(teacher, ["reflow", "distill"], train_fn=interrupted_in_distill, **kwargs)
    assert (out / "1-reflow" / "metrics.json").is_file() and not (out / "2-distill" / "metrics.json").exists()
    pairs_file = out / "2-distill" / "pairs.h5"
    stamp = pairs_file.stat().st_mtime_ns

    results = rectify(teacher, ["reflow", "distill"], train_fn=interrupted_in_distill, **kwargs)
    # the finished reflow stage is not trained again, the distillation continues its run
    assert calls == [("1-reflow", False), ("2-distill", False), ("2-distill", True)]
    assert pairs_file.stat().st_mtime_ns == stamp
    assert [r.name for r in results] == ["teacher", "reflow", "distill"]
    for result in results:
        assert np.isfinite(result.metrics["fd_nfe1"]) and 0 <= result.metrics["accuracy_nfe1"] <= 1
    assert results[1].pair_seconds > 0 and results[2].train_seconds > 0
    meta = read_meta(pairs_file)
    assert meta.attrs["conditions"] == ["y"] and meta.attrs["guidance"] == 1.5
    distilled = load_config(results[2].run / "config.yaml")
    assert distilled.sample.steps == 1
    assert distilled.train.init_from == str((out / "1-reflow" / "run").resolve())
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["results"]] == ["teacher", "reflow", "distill"]
    # a third call only reads the results
    calls.clear()
    rectify(teacher, ["reflow", "distill"], train_fn=interrupted_in_distill, **kwargs)
    assert calls == []


def test_rectify_command(teacher, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["rectify", str(teacher), "train.steps=4", "-n", "40", "--batch-size", "40",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "teacher:" in printed and "reflow (pairs" in printed and str(out / "summary.json") in printed
    pairs = load_split(out / "1-reflow" / "pairs.h5", "train")
    assert pairs["x0"].shape == (40, 1, 8, 8) and pairs["y"].shape == (40,)
    assert main(["rectify", str(teacher), "--stages", "reflow,distil", "--out", str(out)]) == 2
