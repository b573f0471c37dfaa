"""The turbulence3d domain end to end at tiny size: the t1 velocity file, per-channel
normalisation against numpy, training of the 3-D IFactFormer-m, evaluation and figures.
(The 3-D spectrum and enstrophy themselves are checked in test_turbulence_isotropic3d.py.)"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO

from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.plugins import create_domain
from flowsci.training import train

YAML = REPO / "domains" / "turbulence3d.yaml"
TINY = ["data.n_trajectories=3", "data.n_val=1", "data.n_test=1", "data.n_snapshots=5",
        "data.spinup_time=1.0", "data.n_dns=16", "data.n_les=8",
        "model.dim=8", "model.heads=2", "model.dim_head=4", "model.n_layer=1",
        "train.steps=3", "train.batch_size=2", "train.log_every=1", "train.warmup_steps=1",
        "train.checkpoint_every=3", "train.threads=1",
        "eval.rollout_steps=4", "eval.error_steps=[1,4]", "eval.timing_repeats=1",
        "eval.dns_timing_time=0.05", "eval.timing_batch=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(load_config(YAML, TINY), tmp_path_factory.mktemp("runs") / "iso", progress=False)


def raw_velocity(split: str) -> np.ndarray:
    with h5py.File(create_domain("turbulence3d").data_file(load_config(YAML, TINY))) as f:
        return f[f"splits/{split}/t1_fields/velocity"][...].astype(np.float64)


def test_file_holds_a_t1_velocity_field_read_back_channels_first(run):
    cfg = load_config(YAML, TINY)
    domain = create_domain("turbulence3d")
    path = domain.data_file(cfg)
    with h5py.File(path) as f:
        shapes = {s: f[f"splits/{s}/t1_fields/velocity"].shape for s in ("train", "val", "test")}
    assert shapes == {"train": (1, 5, 8, 8, 8, 3), "val": (1, 5, 8, 8, 8, 3), "test": (1, 5, 8, 8, 8, 3)}
    info = domain.build_data(cfg).meta.fields["velocity"]
    assert info.order == 1 and tuple(info.dims) == ("time", "x", "y", "z")
    raw = raw_velocity("test")
    test = domain.trajectories(path, "test")
    assert test.shape == (1, 5, 3, 8, 8, 8)
    # channel c at grid point (i, j, l) is component c of the stored vector there
    np.testing.assert_array_equal(test[0, 2, 1, 3, 5, 7].item(), np.float32(raw[0, 2, 3, 5, 7, 1]))
    np.testing.assert_array_equal(test[0, 4, 2].numpy(), raw[0, 4, ..., 2].astype(np.float32))


def test_normalisation_is_per_velocity_component_of_the_training_split(run):
    raw = raw_velocity("train").reshape(-1, 3)
    model = load_model(run.run_dir)
    np.testing.assert_allclose(model.normalizer.mean.numpy(), raw.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.normalizer.std.numpy(), raw.std(0, ddof=1), rtol=1e-5)
    assert len(set(np.round(raw.std(0), 6))) == 3  # three distinct components, so the check can fail


def test_training_evaluation_and_figures_of_the_3d_surrogate(run):
    m = run.metrics
    for key in ("one_step_rel_l2", "persistence_rel_l2", "rollout_rel_l2_step1", "rollout_rel_l2_step4",
                "spectrum_max_rel_error", "enstrophy_ratio", "energy_ratio", "peak_enstrophy_ratio",
                "speedup", "seconds_per_step", "dns_seconds_per_step", "speedup_batch2"):
        assert key in m and np.isfinite(m[key]), key
    assert m["rollout_finite"] == 1.0
    model = load_model(run.run_dir)
    u0 = torch.from_numpy(raw_velocity("test")[:, 0]).float().permute(0, 4, 1, 2, 3)  # (1, 3, 8, 8, 8)
    assert model(u0).shape == (1, 3, 8, 8, 8)
    kernels = model.operator.attention_kernels(model.normalizer.normalize(u0))
    assert [tuple(k.shape) for k in kernels[0]] == [(1, 2, 8, 8)] * 3  # one kernel per axis x, y, z
    figures = sorted(p.name for p in (run.run_dir / "figures").glob("*.png"))
    assert figures == ["attention_kernels.png", "decorrelation.png", "spectrum.png", "statistics.png",
                       "velocity.png"]


def test_flow_matching_surrogate_on_3d_velocity_reports_ensemble_scores(tmp_path):
    cfg = load_config(YAML, [*TINY, "objective.kind=flow_matching", "sample.steps=1", "eval.members=2",
                             "eval.n_samples=4"])
    result = train(cfg, tmp_path / "flow", progress=False)
    for key in ("one_step_crps", "one_step_spread_skill", "rollout_crps_step4", "spectrum_max_rel_error"):
        assert np.isfinite(result.metrics[key]), key
    assert (result.run_dir / "figures" / "ensemble.png").is_file()
    model = load_model(result.run_dir)
    x = torch.zeros(1, 3, 8, 8, 8)
    assert model(x, torch.zeros(1), state=x).shape == (1, 3, 8, 8, 8)
