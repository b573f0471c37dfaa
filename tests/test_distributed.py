"""DistributedDataParallel: 2 CPU processes (gloo) against 1 process on the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from conftest import SMALL, TOY2D_YAML, subprocess_env

from flowsci.checkpoint import list_checkpoints, load_checkpoint
from flowsci.distributed import DistContext
from flowsci.metrics_log import read_metrics
from flowsci.training import BatchPlan

SCRIPT = Path(__file__).with_name("ddp_regression.py")
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def test_batch_plan_shards_the_global_batch():
    data = list(range(103))
    single = BatchPlan(data, 8, seed=3, ctx=DistContext())
    ranks = [BatchPlan(data, 8, seed=3, ctx=DistContext(rank=r, world_size=2)) for r in range(2)]
    assert single.per_epoch == ranks[0].per_epoch == 12
    for k in (0, 5, 11, 12, 30):  # across epoch boundaries
        assert sorted(ranks[0].batch(k) + ranks[1].batch(k)) == sorted(single.batch(k))
        assert not set(ranks[0].batch(k)) & set(ranks[1].batch(k))
    assert single.batch(0) != single.batch(12)  # reshuffled each epoch


def _losses(run: Path) -> list[float]:
    return [v for s, p, n, v in read_metrics(run / "metrics.csv") if (p, n) == ("train", "loss")]


def test_two_processes_match_one_process(tmp_path):
    env = subprocess_env()
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(SCRIPT), str(one)], env=env, check=True, timeout=300)
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", str(SCRIPT), str(two)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert len(_losses(two)) == 20  # rank 0 alone writes the log
    assert torch.allclose(torch.tensor(_losses(one)), torch.tensor(_losses(two)), rtol=1e-5, atol=1e-7)
    assert [s for s, _ in list_checkpoints(two / "checkpoints")] == [10, 20]
    a = load_checkpoint(list_checkpoints(one / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(two / "checkpoints")[-1][1])
    assert b["world_size"] == 2 and len(b["rng"]) == 2
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=1e-5, atol=1e-6), key
    assert (a["model"]["net.0.weight"] - load_checkpoint(list_checkpoints(one / "checkpoints")[0][1])
            ["model"]["net.0.weight"]).abs().max() > 1e-3  # training moved the weights


def test_toy2d_cli_under_torchrun(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "flowsci", "train",
                           str(TOY2D_YAML), *SMALL, "train.steps=10", "--out", str(run)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"run: {run}") == 1  # printed by rank 0 only
    assert len(_losses(run)) == 10 and all(torch.isfinite(torch.tensor(_losses(run))))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [10]
