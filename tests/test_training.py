"""Trainer behaviour: learning-rate schedule, NaN guard, TensorBoard, run-directory guards."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMALL, TOY2D_YAML

from flowsci.config import load_config
from flowsci.errors import NonFiniteLossError, RunError
from flowsci.metrics_log import read_metrics
from flowsci.registry import create_domain
from flowsci.training import lr_factor, train


def test_lr_schedule_shape():
    kw = dict(warmup=10, total=110, min_ratio=0.1)
    warm = [lr_factor(s, schedule="cosine", **kw) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    assert lr_factor(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(60, schedule="cosine", **kw) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lr_factor(110, schedule="cosine", **kw) == pytest.approx(0.1)
    decay = [lr_factor(s, schedule="cosine", **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_factor(50, schedule="constant", **kw) == 1.0


def test_nan_loss_stops_with_the_step(tmp_path, monkeypatch):
    domain = create_domain("toy2d")
    objective_cls = type(domain.build_objective(load_config(TOY2D_YAML)))
    real_loss = objective_cls.loss
    calls = {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, logs = real_loss(self, model, batch)
        return (loss * math.inf if calls["n"] == 7 else loss), logs

    monkeypatch.setattr(objective_cls, "loss", poisoned)
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=20"])
    with pytest.raises(NonFiniteLossError, match="non-finite loss inf at step 7"):
        train(cfg, tmp_path / "run", progress=False)


def test_tensorboard_events_and_csv(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=5", "train.tensorboard=true"])
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    names = {n for _, p, n, _ in read_metrics(run / "metrics.csv") if p == "train"}
    assert names == {"loss", "lr", "grad_norm", "seconds_per_step", "train_seconds"}


def test_grad_clip_bounds_the_update(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=3", "train.grad_clip=1e-6", "train.warmup_steps=0",
                                   "train.schedule=constant", "train.lr=0.1"])
    result = train(cfg, tmp_path / "run", progress=False)
    state = torch.load(next((result.run_dir / "checkpoints").glob("*.pt")), weights_only=True)
    assert state["step"] == 3
    # Adam normalises the step, so clipping shows in the optimizer's first moment instead.
    exp_avg = torch.cat([s["exp_avg"].flatten() for s in state["optimizer"]["state"].values()])
    assert exp_avg.norm() <= (1 - 0.9 ** 3) * 1e-6 * 1.0001  # sum of the EMA weights of 3 clipped grads


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=2"])
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(cfg, run, progress=False)
    with pytest.raises(RunError, match="already at step 2"):
        train(cfg, run, resume=True, progress=False)
    with pytest.raises(RunError, match="is not a run directory"):
        train(cfg, tmp_path / "empty", resume=True, progress=False)
    changed = load_config(TOY2D_YAML, [*SMALL, "train.steps=4", "train.lr=0.5"])
    with pytest.raises(RunError, match=r"the config differs .*train.lr: 0.001 -> 0.5"):
        train(changed, run, resume=True, progress=False)


def test_ema_warm_up_forgets_the_initial_weights(tmp_path):
    """With decay 0.9999 and no warm-up the EMA would still be ~99.8% initial weights after 20
    steps; the warm-up decay (1+n)/(10+n) leaves them a weight of 20!·10!/29! ~ 1e-6."""
    from flowsci.plugins import build_model

    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=20", "train.ema=0.9999", "train.lr=0.01"])
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    state = torch.load(next((run / "checkpoints").glob("*.pt")), weights_only=True)
    torch.manual_seed(cfg.seed)  # the trainer builds the model right after seeding
    initial = build_model("mlp_velocity", {"dim": 2, **cfg.model.params}).state_dict()
    key = "net.0.weight"
    raw, ema = state["model"][key], state["ema"][f"module.{key}"]
    assert (raw - initial[key]).norm() > 0.05  # training moved the weights
    # the EMA sits among the recent iterates, far closer to them than to the start
    assert (ema - raw).norm() < 0.5 * (initial[key] - raw).norm()
