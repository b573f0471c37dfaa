"""The kinetic domain end to end: tiny closure training through the Trainer, the data file
(written once, split by trajectory), the evaluation against closed-form closures computed here,
resume, and the config errors."""

from __future__ import annotations

import logging
import math
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO
from scipy.optimize import brentq
from scipy.special import ive

from flowsci.checkpoint import list_checkpoints, load_checkpoint, load_model
from flowsci.config import load_config
from flowsci.data import ensure_data
from flowsci.data.lifecycle import default_path
from flowsci.errors import ConfigError
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.kinetic.a_priori import closure_errors
from flowsci_domains.kinetic.orientation import generate_dataset

YAML = REPO / "domains" / "kinetic.yaml"
TINY = ["data.n_trajectories=4", "data.n_train=3",
        "data.n_pieces=8", "data.n_transient_pieces=2",   # 30 snapshots each
        "train.batch_size=30", "train.log_every=5", "train.checkpoint_every=0", "eval.n_samples=50"]
MODELS = {2: ["model={name: learned_closure_2d, hidden: 16, depth: 2}", "data.n_modes=16"],
          3: ["model={name: learned_closure_3d, hidden: 8, gated: 4, depth: 1}", "domain.d=3",
              "data.n_modes=6"]}


def config(*overrides: str, d: int = 2):
    return load_config(YAML, [*TINY, *MODELS[d], *overrides])


def file_snapshots(path, split: str) -> dict[str, np.ndarray]:
    """D, E, SE, SD of every snapshot of ``split``, read with h5py: (N·T, d, d)."""
    with h5py.File(path, "r") as f:
        arrays = {name: f[f"splits/{split}/t2_fields/{name}"][()] for name in ("D", "E", "SE", "SD")}
    return {name: x.reshape(-1, *x.shape[-2:]) for name, x in arrays.items()}


def relative(pred: np.ndarray, true: np.ndarray) -> float:
    return math.sqrt(float(((pred - true) ** 2).sum()) / float((true**2).sum()))


def bingham_2d(D: np.ndarray) -> np.ndarray:
    """S of the 2-D Bingham distribution with second moment D (2, 2), from the eigenframe formulas
    of the 2-D Bingham closure (Maddu, Weady & Shelley 2024) with a bracketing root finder: (2, 2, 2, 2)."""
    lam, vec = np.linalg.eigh(D)
    c = lam.sum()
    m2 = (lam[1] - lam[0]) / c
    b = brentq(lambda x: ive(1, x) / ive(0, x) - m2, 1e-12, 1e4, xtol=1e-14) if m2 > 1e-12 else 0.0
    m4 = ive(2, b) / ive(0, b)
    frame = np.zeros((2, 2, 2, 2))                       # index 1 = major axis (eigh: ascending)
    frame[1, 1, 1, 1] = c * (3 / 8 + m2 / 2 + m4 / 8)
    frame[0, 0, 0, 0] = c * (3 / 8 - m2 / 2 + m4 / 8)
    for a, b_, e, f in [(0, 0, 1, 1), (1, 1, 0, 0), (0, 1, 0, 1), (1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1)]:
        frame[a, b_, e, f] = c * (1 / 8 - m4 / 8)
    return np.einsum("ia,jb,kc,ld,abcd->ijkl", vec, vec, vec, vec, frame)


@pytest.mark.parametrize("d", [2, 3])
def test_training_lowers_the_test_error_and_reports_the_analytic_closures(tmp_path, d) -> None:
    cfg = config(f"train.steps={60 if d == 2 else 200}", "train.lr=0.01", d=d)
    domain = create_domain("kinetic")
    data = domain.build_data(cfg)
    torch.manual_seed(cfg.seed)                                  # the Trainer's initial weights
    before = closure_errors(domain.build_model(cfg), data.test.tensors)
    result = train(cfg, tmp_path / "run", progress=False)
    m = result.metrics
    assert all(math.isfinite(v) for v in m.values()), m
    assert (m["test_SE_learned"] < 0.5 * before["SE"]
            and m["test_SD_learned"] < 0.5 * before["SD"]), (before, m)
    assert m["test_SE_bingham"] < 0.2 * m["test_SE_quadratic"]              # B.3.4: 0.037 vs 0.611
    for term in ("SE", "SD"):
        assert m[f"test_{term}_learned_over_bingham"] == pytest.approx(
            m[f"test_{term}_learned"] / m[f"test_{term}_bingham"], rel=1e-12)

    # oracles from the raw file: the quadratic closure S = D⊗D/c in closed form, the 2-D Bingham
    # closure from its eigenframe formulas, and the checkpointed model's own predictions
    test = file_snapshots(domain.data_file(cfg), "test")
    D, E = test["D"], test["E"]
    c = np.trace(D, axis1=-2, axis2=-1)[:, None, None]
    quadratic_SE = D * np.einsum("nkl,nkl->n", D, E)[:, None, None] / c
    quadratic_SD = D * np.einsum("nkl,nkl->n", D, D)[:, None, None] / c
    assert m["test_SE_quadratic"] == pytest.approx(relative(quadratic_SE, test["SE"]), rel=1e-10)
    assert m["test_SD_quadratic"] == pytest.approx(relative(quadratic_SD, test["SD"]), rel=1e-10)
    if d == 2:
        S = np.stack([bingham_2d(x) for x in D])
        for term, M in (("SE", E), ("SD", D)):
            assert m[f"test_{term}_bingham"] == pytest.approx(
                relative(np.einsum("nijkl,nkl->nij", S, M), test[term]), rel=1e-8)
    model = load_model(result.run_dir)
    with torch.no_grad():
        SE, SD = model(torch.from_numpy(D), torch.from_numpy(E))
    assert m["test_SE_learned"] == pytest.approx(relative(SE.numpy(), test["SE"]), rel=1e-10)
    assert m["test_SD_learned"] == pytest.approx(relative(SD.numpy(), test["SD"]), rel=1e-10)
    assert (result.run_dir / "figures" / "parity.png").is_file()


def test_the_loss_on_the_whole_training_set_is_the_sum_of_squared_relative_errors() -> None:
    cfg = config()
    domain = create_domain("kinetic")
    data = domain.build_data(cfg)
    torch.manual_seed(1)
    model = domain.build_model(cfg)
    loss, logs = domain.build_objective(cfg).loss(model, data.train.tensors)
    errors = closure_errors(model, data.train.tensors)
    assert float(loss.detach()) == pytest.approx(errors["SE"] ** 2 + errors["SD"] ** 2, rel=1e-12)
    assert logs["loss_SE"] == pytest.approx(errors["SE"] ** 2, rel=1e-12)
    # on a batch the sums are over the batch and the scales stay the training set's mean squares
    batch = {name: x[:10] for name, x in data.train.tensors.items()}
    batch_loss, _ = domain.build_objective(cfg).loss(model, batch)
    batch_errors = closure_errors(model, batch)
    expected = sum(batch_errors[name] ** 2 * float((batch[name] ** 2).sum()) / 10
                   / float((data.train.tensors[name] ** 2).sum((-2, -1)).mean()) for name in ("SE", "SD"))
    assert float(batch_loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_data_file_is_written_once_split_by_trajectory_and_reused(caplog) -> None:
    cfg = config("data.seed=5")
    domain = create_domain("kinetic")
    path = domain.data_file(cfg)
    data = domain.build_data(cfg)
    assert path.is_file() and data.meta.path == path and data.meta.fields["SE"].symmetric
    arrays, _ = generate_dataset(2, 4, seed=5, n_modes=16, n_pieces=8, n_transient_pieces=2)
    with h5py.File(path, "r") as f:
        for split, rows in (("train", slice(0, 3)), ("test", slice(3, 4))):
            for name in ("D", "E", "SE", "SD", "A"):
                np.testing.assert_array_equal(f[f"splits/{split}/t2_fields/{name}"][()], arrays[name][rows])
            np.testing.assert_array_equal(f[f"splits/{split}/scalars/zeta"][()], arrays["zeta"][rows])
    assert data.train.tensors["D"].shape == (3 * 30, 2, 2) and data.train.tensors["D"].dtype == torch.float64
    assert data.test.tensors["SD"].shape == (30, 2, 2) and data.val is data.test
    stamp = path.stat().st_mtime_ns
    domain.build_data(cfg)
    assert path.stat().st_mtime_ns == stamp
    assert default_path(domain, config("data.seed=5", "data.zeta_max=0.5")) != path
    assert default_path(domain, config("data.seed=5", "data.n_train=2")) != path
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flowsci"):
        ensure_data(domain, config("data.seed=5"), force=True)  # data.regenerate / data make --force
    assert path.stat().st_mtime_ns != stamp
    assert caplog.text.count("kinetic: generating") == 1


def test_resume_after_an_interruption_is_bit_for_bit(tmp_path) -> None:
    cfg = config("train.steps=12", "train.checkpoint_every=4", "train.keep_checkpoints=0", "train.ema=0.9")
    straight = train(cfg, tmp_path / "a", progress=False)
    shutil.copytree(straight.run_dir, tmp_path / "b")
    for step, path in list_checkpoints(tmp_path / "b" / "checkpoints"):
        if step > 4:
            path.unlink()                                        # as if stopped after step 4
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(list_checkpoints(straight.run_dir / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(resumed.run_dir / "checkpoints")[-1][1])
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert straight.metrics == resumed.metrics | {"train_seconds": straight.metrics["train_seconds"]}


def test_bad_config_values_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"domain.*d must be 2"):
        config("domain.d=4")
    with pytest.raises(ConfigError,
                       match=r"data.*n_train must be an integer in \[1, n_trajectories - 1 = 3\], got 4"):
        config("data.n_train=4")
    with pytest.raises(ConfigError, match=r"data.*n_modes must be null or an even integer >= 4, got 5"):
        config("data.n_modes=5")
    with pytest.raises(ConfigError, match=r"data.*piece_duration must be a finite number > 0"):
        config("data.piece_duration=0")
    with pytest.raises(ConfigError, match=r"did you mean 'data.n_trajectories'"):
        config("data.n_trajectory=3")
    with pytest.raises(ConfigError, match=r"model.hidden"):
        config("model.hidden=wide")
    with pytest.raises(ConfigError,
                       match=r"model.name='learned_closure_3d' works in d = \(3,\), but domain.d = 2"):
        train(config("model={name: learned_closure_3d}", "train.steps=1"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"model.name='mlp_velocity' is not a closure"):
        create_domain("kinetic").build_model(config("model={name: mlp_velocity, dim: 2}"))
