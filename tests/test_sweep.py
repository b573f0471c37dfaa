"""Sweeps: expansion of the grid, validation, time to target, running, resuming and results."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import FLOWSCI, REPO, subprocess_env

from flowsci.errors import ConfigError, SweepRunsFailed
from flowsci.sweep import load_sweep, run_sweep, sweep_from_dict, time_to_target

BASE = {
    "domain": {"name": "lpinn", "beta": 5.0, "n_x": 16, "n_t": 6},
    "model": {"name": "lpinn", "width": 8, "u_depth": 1, "x_depth": 1},
    "train": {"steps": 6, "batch_size": 1, "lr": 0.01, "threads": 1, "log_every": 2, "eval_every": 2,
              "checkpoint_every": 3, "lbfgs": {"steps": 2}},
    "eval": {"n_x": 16, "n_t": 6},
}
GRID = {"model": [{"name": "pinn", "width": 8, "depth": 1},
                  {"name": "lpinn", "width": 8, "u_depth": 1, "x_depth": 1}],
        "domain.beta": [1, 30]}


def sweep_dict(**section):
    return {**BASE, "sweep": {"grid": GRID, **section}}


def test_grid_expands_to_the_cartesian_product_with_named_runs() -> None:
    runs = sweep_from_dict(sweep_dict()).runs()
    assert [r.name for r in runs] == ["model=pinn_beta=1", "model=pinn_beta=30", "model=lpinn_beta=1",
                                      "model=lpinn_beta=30"]
    first = runs[0].config
    assert first.model.name == "pinn" and first.model.params == {"width": 8, "depth": 1}  # section replaced
    assert first.settings.beta == 1.0 and first.settings.n_x == 16  # dotted key replaces one entry
    assert runs[3].config.model.params["x_depth"] == 1 and runs[3].config.settings.beta == 30.0


def test_a_key_of_ones_own_sets_several_config_keys_per_value() -> None:
    grid = {"method": [{"name": "pinn-mse", "model": {"name": "pinn", "width": 8, "depth": 1},
                        "objective.norm": "mse", "objective.weight_ic": 1.0},
                       {"name": "lpinn-paper", "objective.norm": "l2"}]}
    runs = sweep_from_dict({**BASE, "sweep": {"grid": grid}}).runs()
    assert [r.name for r in runs] == ["method=pinn-mse", "method=lpinn-paper"]
    pinn, lpinn = (r.config for r in runs)
    assert (pinn.model.name, pinn.objective.norm, pinn.objective.weight_ic) == ("pinn", "mse", 1.0)
    assert (lpinn.model.name, lpinn.objective.norm, lpinn.objective.weight_ic) == ("lpinn", "l2", 1000.0)


def test_overrides_apply_to_the_base_before_expansion() -> None:
    runs = sweep_from_dict(sweep_dict(), ["train.steps=3", "domain.n_t=4"]).runs()
    assert {(r.config.train.steps, r.config.settings.n_t) for r in runs} == {(3, 4)}


@pytest.mark.parametrize("section, message", [
    ({"grid": {"domain.beta": 3}}, "non-empty list"),
    ({"grid": {"beta": [1]}}, "is not a config key"),
    ({"grid": {"method": [{"objective.norm": "mse"}]}}, "is not a config key"),  # no name
    ({"grid": GRID, "colour": 1}, "unknown key 'sweep.colour'"),
    ({"grid": GRID, "plot": {"x": "seed", "y": ["rel_l2"]}}, "not a key of sweep.grid"),
    ({"grid": GRID, "target": {"metric": "rel_l2"}}, "sweep.target"),
    ({"grid": {"model.depth": [2]}}, "model.depth"),   # caught by the run's config validation
])
def test_bad_sweeps_are_reported(section, message) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep_from_dict({**BASE, "sweep": section}).runs()


def test_a_file_without_sweep_section_is_an_error(tmp_path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="no 'sweep:' section"):
        load_sweep(path)


def test_time_to_target_reads_the_first_evaluation_below(tmp_path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,phase,name,value\n10,eval,rel_l2,0.5\n10,eval,train_seconds,1.5\n"
                   "20,train,rel_l2,0.001\n30,eval,rel_l2,0.009\n30,eval,train_seconds,4.0\n"
                   "40,eval,rel_l2,0.001\n40,eval,train_seconds,5.0\n")
    assert time_to_target(csv, "rel_l2", 0.01) == {"steps_to_target": 30.0, "seconds_to_target": 4.0}
    never = time_to_target(csv, "rel_l2", 1e-4)
    assert math.isnan(never["steps_to_target"]) and math.isnan(never["seconds_to_target"])


def test_run_sweep_writes_one_table_and_plot_and_skips_finished_runs(tmp_path, caplog) -> None:
    sweep = sweep_from_dict(sweep_dict(target={"metric": "rel_l2", "below": 10.0},
                                       plot={"x": "domain.beta", "group": "model.name", "y": ["rel_l2"]}))
    root = run_sweep(sweep, tmp_path / "sweep", progress=False)
    rows = json.loads((root / "results.json").read_text())["rows"]
    assert len(rows) == 4 and {r["model"] for r in rows} == {"pinn", "lpinn"}
    assert all(r["steps_to_target"] == 2.0 for r in rows)  # rel_l2 < 10 at the first evaluation
    assert all(r["lbfgs_iterations"] == 2 for r in rows)
    assert (root / "results.png").stat().st_size > 0 and (root / "results.md").read_text().count("\n") == 6
    assert yaml.safe_load((root / "sweep.yaml").read_text())["sweep"]["grid"]["domain.beta"] == [1, 30]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flowsci"):
        run_sweep(sweep, root, progress=False)
    assert "4 done, 0 to train" in caplog.text
    changed = sweep_from_dict(sweep_dict(), ["train.lr=0.02"])
    with pytest.raises(ConfigError, match="trained with another config.*--out"):
        run_sweep(changed, root, progress=False)


def test_a_failed_run_does_not_stop_the_others(tmp_path, caplog) -> None:
    grid = {"model": [GRID["model"][0]], "train.lr": [0.01, 1e30]}       # lr 1e30: a non-finite loss
    sweep = sweep_from_dict({**BASE, "sweep": {"grid": grid}})
    with pytest.raises(SweepRunsFailed,
                       match=r"1 of 2 runs .* failed \(.*lr.*NonFiniteLossError.*run the sweep again"):
        run_sweep(sweep, tmp_path / "sweep", progress=False)
    assert "sweep run model=pinn_lr=1e+30 failed:\nTraceback" in caplog.text
    rows = json.loads((tmp_path / "sweep" / "results.json").read_text())["rows"]
    assert len(rows) == 1 and math.isfinite(rows[0]["rel_l2"])


def test_cli_lists_the_runs_of_the_lpinn_sweep() -> None:
    out = subprocess.run([FLOWSCI, "sweep", str(REPO / "domains" / "lpinn.yaml"), "--list"],
                         capture_output=True, text=True, env=subprocess_env(), check=True).stdout.split()
    assert len(out) == 2 * 7 * 3 and "seed=0_beta=30_method=lpinn" in out  # lpinn, lpinn_lab, pinn
    assert "seed=1_beta=80_method=lpinn_lab" in out


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_the_sweep_ends_its_workers(tmp_path) -> None:
    long = {**BASE, "train": {**BASE["train"], "steps": 1_000_000, "eval_every": 0, "checkpoint_every": 0}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({**long, "sweep": {"grid": {"domain.beta": [1, 2]}}}))
    sweep = subprocess.Popen([FLOWSCI, "sweep", str(path), "--workers", "2", "--out", str(tmp_path / "out")],
                             env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "out" / "runs").glob("*/metrics.csv"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = _children(sweep.pid)
    assert len(list((tmp_path / "out" / "runs").glob("*/metrics.csv"))) == 2 and workers
    sweep.send_signal(signal.SIGTERM)
    sweep.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive
