"""Checkpoints: round trip, atomic writes, truncated files, and SIGKILL + --resume equivalence."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import FLOWSCI, SMALL, TOY2D_YAML, subprocess_env

from flowsci.checkpoint import list_checkpoints, load_checkpoint, load_model, save_checkpoint
from flowsci.config import load_config
from flowsci.errors import CheckpointError
from flowsci.metrics_log import read_metrics
from flowsci.training import train

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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_train_cmd(out), env=subprocess_env(), check=True, capture_output=True, timeout=300)
    return out


def _start_and_stop(run, sig):
    """Start training, send ``sig`` once three checkpoints (step 75) exist, return the process."""
    proc = subprocess.Popen(_train_cmd(run), env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list_checkpoints(run / "checkpoints")) < 3:
        assert proc.poll() is None, f"training ended before it could be stopped: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    assert list_checkpoints(run / "checkpoints")[-1][0] < 300, "the run finished first; make it longer"
    return proc


def _assert_same_run(reference, run):
    ref_rows, new_rows = read_metrics(reference / "metrics.csv"), read_metrics(run / "metrics.csv")
    ref_loss = [(s, v) for s, p, n, v in ref_rows if (p, n) == ("train", "loss")]
    new_loss = [(s, v) for s, p, n, v in new_rows if (p, n) == ("train", "loss")]
    assert [s for s, _ in new_loss] == list(range(1, 301))
    assert new_loss == ref_loss  # bit-for-bit: same floats, no duplicated or missing steps
    evals = lambda rows: [r for r in rows if r[1] == "eval" and r[2] != "train_seconds"]  # noqa: E731 (wall clock)
    assert evals(new_rows) == evals(ref_rows)
    ref_state = load_checkpoint(list_checkpoints(reference / "checkpoints")[-1][1])
    new_state = load_checkpoint(list_checkpoints(run / "checkpoints")[-1][1])
    for part in ("model", "ema"):
        for key in ref_state[part]:
            assert torch.equal(ref_state[part][key], new_state[part][key]), (part, key)


def _resume(command):
    proc = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "from step" in proc.stderr


def test_sigkill_then_flowsci_resume_gives_the_identical_run(reference, tmp_path):
    """`flowsci resume RUN` needs only the run directory (its saved config.yaml)."""
    run = tmp_path / "killed"
    proc = _start_and_stop(run, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    _resume([FLOWSCI, "resume", str(run), "--no-progress"])
    _assert_same_run(reference, run)


def test_ctrl_c_saves_a_checkpoint_and_resumes_identically(reference, tmp_path):
    run = tmp_path / "interrupted"
    proc = _start_and_stop(run, signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.returncode == 130, stderr
    step = list_checkpoints(run / "checkpoints")[-1][0]
    assert f"interrupted at step {step}; checkpoint" in stderr and f"flowsci resume {run}" in stderr
    logged = [s for s, p, n, _ in read_metrics(run / "metrics.csv") if (p, n) == ("train", "loss")]
    assert logged[-1] == step  # the checkpoint holds the last completed step
    _resume(_train_cmd(run, "--resume"))  # the long form: the YAML, its overrides and --out
    _assert_same_run(reference, run)
