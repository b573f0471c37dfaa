"""Checkpoints: round trip, atomic writes, truncated files, and SIGKILL + --resume equivalence."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from flowsci.checkpoint import list_checkpoints, load_checkpoint, load_model, save_checkpoint
from flowsci.config import load_config
from flowsci.errors import CheckpointError
from flowsci.metrics_log import read_metrics
from flowsci.training import train

from conftest import FLOWSCI, SMALL, TOY2D_YAML, subprocess_env

# EMA, warm-up, cosine schedule, grad clipping and periodic eval all take part.
RESUME_ARGS = [*SMALL, "train.steps=300", "train.checkpoint_every=25", "train.eval_every=100",
               "train.ema=0.99", "train.grad_clip=0.5", "train.keep_checkpoints=0"]


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=10", "train.ema=0.9"])
    result = train(cfg, tmp_path / "run", progress=False)
    path = list_checkpoints(result.run_dir / "checkpoints")[-1][1]
    state = load_checkpoint(path)
    assert state["step"] == 10 and state["model_spec"]["name"] == "mlp_velocity"
    assert state["config"]["train"]["steps"] == 10 and state["flowsci_version"]
    x, t = torch.randn(16, 2), torch.rand(16)
    raw, ema = load_model(path, ema=False), load_model(path, ema=True)
    reference = load_model(path, ema=False)
    reference.load_state_dict(state["model"])
    assert torch.equal(raw(x, t), reference(x, t))
    assert not torch.equal(raw(x, t), ema(x, t))  # the EMA weights are a different average


def test_save_is_atomic(tmp_path, monkeypatch):
    good = tmp_path / "step-00000001.pt"
    save_checkpoint(good, {"a": torch.ones(3)})
    before = good.read_bytes()

    def failing_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(good, {"a": torch.zeros(3)})
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]


def test_truncated_checkpoint_is_reported_and_the_previous_one_survives(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=20", "train.checkpoint_every=10"])
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    (first, older), (_, newest) = list_checkpoints(run / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint {newest} is corrupt or truncated"):
        load_checkpoint(newest)
    more = load_config(TOY2D_YAML, [*SMALL, "train.steps=30", "train.checkpoint_every=10"])
    with pytest.raises(CheckpointError, match=f"the previous checkpoint {older} is intact"):
        train(more, run, resume=True, progress=False)
    assert load_checkpoint(older)["step"] == first == 10


def _train_cmd(out, *extra):
    return [FLOWSCI, "train", str(TOY2D_YAML), *RESUME_ARGS, *extra, "--out", str(out), "--no-progress"]


def test_sigkill_then_resume_gives_the_identical_loss_curve(tmp_path):
    env = subprocess_env()
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference), env=env, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list_checkpoints(killed / "checkpoints")) < 3:  # past step 75, mid-run
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = list_checkpoints(killed / "checkpoints")[-1][0]
    assert steps_before < 300, "the run finished before SIGKILL; make it longer"

    resumed = subprocess.run(_train_cmd(killed, "--resume"), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    ref_rows, new_rows = read_metrics(reference / "metrics.csv"), read_metrics(killed / "metrics.csv")
    ref_loss = [(s, v) for s, p, n, v in ref_rows if (p, n) == ("train", "loss")]
    new_loss = [(s, v) for s, p, n, v in new_rows if (p, n) == ("train", "loss")]
    assert [s for s, _ in new_loss] == list(range(1, 301))
    assert new_loss == ref_loss  # bit-for-bit: same floats, no duplicated or missing steps
    assert [r for r in new_rows if r[1] == "eval"] == [r for r in ref_rows if r[1] == "eval"]
    ref_state = load_checkpoint(list_checkpoints(reference / "checkpoints")[-1][1])
    new_state = load_checkpoint(list_checkpoints(killed / "checkpoints")[-1][1])
    for key in ref_state["model"]:
        assert torch.equal(ref_state["model"][key], new_state["model"][key]), key
    for key in ref_state["ema"]:
        assert torch.equal(ref_state["ema"][key], new_state["ema"][key]), key
