"""The `flowsci` command end to end on toy2d, and its user-error contract (exit 2, one line)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import yaml
from conftest import FLOWSCI, SMALL, TOY2D_YAML, subprocess_env

from flowsci.metrics_log import read_metrics


def flowsci(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([FLOWSCI, *map(str, args)], capture_output=True, text=True,
                          env=subprocess_env(), cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    proc = flowsci("train", TOY2D_YAML, *SMALL, "train.steps=40", "train.checkpoint_every=20",
                   "train.eval_every=20", "train.figures_every=20", "--out", run)
    assert proc.returncode == 0, proc.stderr
    return run, proc


def test_train_writes_a_complete_run_directory(trained_run):
    run, proc = trained_run
    assert f"run: {run}" in proc.stdout and "w2=" in proc.stdout and "figures:" in proc.stdout
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000020.pt", "step-00000040.pt"]
    assert (run / "figures" / "samples.png").stat().st_size > 10_000
    assert (run / "figures" / "trajectories.png").is_file()
    assert (run / "figures" / "step-00000020" / "samples.png").is_file()
    rows = read_metrics(run / "metrics.csv")
    losses = [r for r in rows if r[1:3] == ("train", "loss")]
    assert [r[0] for r in losses] == list(range(1, 41))
    assert {r[2] for r in rows if r[1] == "eval"} >= {"w2", "w2_nfe1", "w2_nfe4", "straightness", "w2_floor"}
    assert not list(run.rglob("*.tmp"))


def test_eval_and_sample_a_run(trained_run):
    run, _ = trained_run
    proc = flowsci("eval", run, "eval.n_samples=100")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval" / "step-00000040" / "metrics.json").read_text())
    assert result["step"] == 40 and result["w2"] > 0
    assert (run / "eval" / "step-00000040" / "samples.png").is_file()
    proc = flowsci("sample", run, "-n", 50, "--out", run / "s.npz")
    assert proc.returncode == 0, proc.stderr
    samples = np.load(run / "s.npz")
    assert samples["x1"].shape == (50, 2) and np.isfinite(samples["x1"]).all()


def test_list_and_data_make(tmp_path):
    proc = flowsci("list", "domains")
    assert proc.returncode == 0 and "toy2d" in proc.stdout.split()[::2]
    assert "mlp_velocity" in flowsci("list", "models").stdout
    proc = flowsci("data", "make", TOY2D_YAML, "data.n_train=100", "data.n_val=10", "data.n_test=10",
                   f"data.path={tmp_path / 'd.h5'}")
    assert proc.returncode == 0, proc.stderr
    assert "train: 100, val: 10, test: 10" in proc.stdout and (tmp_path / "d.h5").is_file()


@pytest.mark.parametrize("args, message", [
    (["train", "missing.yaml"], "config file not found: missing.yaml"),
    (["train", TOY2D_YAML, "train.stepz=3"], "unknown key 'train.stepz' (did you mean 'train.steps'?)"),
    (["train", TOY2D_YAML, "domain.name=toy3d"], "unknown domain 'toy3d' (did you mean 'toy2d'?)"),
    (["eval", "no_such_run"], "run directory not found: no_such_run"),
    (["resume", "no_such_run"], "run directory not found: no_such_run"),
    (["list", "widgets"], "unknown list 'widgets'"),
])
def test_user_errors_exit_2_with_one_message(tmp_path, args, message):
    proc = flowsci(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_run_directory_stands_for_its_config(trained_run, tmp_path):
    run, _ = trained_run
    proc = flowsci("-q", "train", run, "train.steps=5", "--out", tmp_path / "again")
    assert proc.returncode == 0, proc.stderr
    assert "training into" not in proc.stderr  # -q: warnings only
    saved = yaml.safe_load((run / "config.yaml").read_text())
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert again["train"].pop("steps") == 5 and saved["train"].pop("steps") == 40
    assert again == saved


def test_resume_changes_only_the_step_counts(trained_run):
    run, _ = trained_run
    proc = flowsci("resume", run, "model.width=64")
    assert proc.returncode == 2
    assert "model.width: 32 -> 64" in proc.stderr and "only train.steps and train.lbfgs.steps" in proc.stderr


def test_corrupt_checkpoint_is_a_user_error(trained_run, tmp_path):
    run, _ = trained_run
    broken = tmp_path / "broken.pt"
    data = (run / "checkpoints" / "step-00000040.pt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    proc = flowsci("eval", run, "--checkpoint", broken)
    assert proc.returncode == 2
    assert f"checkpoint {broken} is corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr
