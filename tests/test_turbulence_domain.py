"""The turbulence domain end to end at tiny size: data file, training (one-step and flow
matching), normalisation through the checkpoint, evaluation, figures and the CLI."""

from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest
import torch
from conftest import FLOWSCI, REPO, subprocess_env

from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.data.lifecycle import default_path
from flowsci.errors import ConfigError, DataError
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.turbulence.domain import rollout_statistics

TURBULENCE_YAML = REPO / "domains" / "turbulence.yaml"
TINY = ["data.n_trajectories=4", "data.n_val=1", "data.n_test=1", "data.n_snapshots=12",
        "data.spinup_time=2.0", "data.n_dns=32", "data.n_les=16", "data.spinup_n_dns=null",
        "data.snapshot_dt=0.2",
        "model={name: ifactformer_m, dim: 16, heads: 2, dim_head: 8, n_layer: 2}", "eval.baselines={}",
        "train.steps=8", "train.batch_size=4", "train.log_every=1", "train.warmup_steps=2",
        "train.checkpoint_every=4", "train.threads=1",
        "eval.rollout_steps=12", "eval.error_steps=[1,5,11]", "eval.members=3",
        "eval.timing_repeats=2", "eval.dns_timing_time=0.05", "eval.timing_batch=2"]


def tiny(*extra: str):
    return load_config(TURBULENCE_YAML, [*TINY, *extra])


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    return train(tiny(), tmp_path_factory.mktemp("runs") / "one_step", progress=False)


def test_generated_file_holds_the_split_trajectories_and_every_generator_parameter():
    cfg = tiny()
    domain = create_domain("turbulence")
    data = domain.build_data(cfg)
    path = domain.data_file(cfg)
    with h5py.File(path) as f:
        shapes = {s: f[f"splits/{s}/t0_fields/vorticity"].shape for s in ("train", "val", "test")}
        attrs = dict(f.attrs)
    assert shapes == {"train": (2, 12, 16, 16), "val": (1, 12, 16, 16), "test": (1, 12, 16, 16)}
    for key in ("nu", "drag", "forcing_amplitude", "forcing_wavenumber", "n_dns", "n_les", "snapshot_dt",
                "spinup_time", "seed"):
        assert key in attrs, key
    # training pairs are consecutive snapshots of the training trajectories
    with h5py.File(path) as f:
        train_w = torch.from_numpy(f["splits/train/t0_fields/vorticity"][...]).float()
    assert len(data.train) == 2 * 11
    np.testing.assert_array_equal(data.train.tensors["state"][11, 0].numpy(), train_w[1, 0].numpy())
    np.testing.assert_array_equal(data.train.tensors["next"][11, 0].numpy(), train_w[1, 1].numpy())


def test_another_split_names_another_file():
    """make_data writes the split into the file, so a file of another split must not be reused."""
    domain = create_domain("turbulence")
    paths = {default_path(domain, tiny(*split)) for split in ([], ["data.n_val=2"], ["data.n_test=2"])}
    assert len(paths) == 3


def test_normalisation_is_fitted_on_the_training_split_and_travels_with_the_checkpoint(one_step_run):
    cfg = tiny()
    with h5py.File(create_domain("turbulence").data_file(cfg)) as f:
        train_w = f["splits/train/t0_fields/vorticity"][...].astype(np.float64)
    model = load_model(one_step_run.run_dir)
    np.testing.assert_allclose(model.normalizer.mean.numpy(), [train_w.mean()], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.normalizer.std.numpy(), [train_w.std(ddof=1)], rtol=1e-5)
    # applied to the training split, the stored normalisation gives zero mean and unit std
    z = model.normalizer.normalize(torch.from_numpy(train_w).float().flatten(0, 1).unsqueeze(1)).double()
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std()) == pytest.approx(1.0, rel=1e-5)


def test_one_step_run_reports_errors_rollout_statistics_speed_and_figures(one_step_run):
    m = one_step_run.metrics
    for key in ("one_step_rel_l2", "persistence_rel_l2", "rollout_rel_l2_step1", "rollout_rel_l2_step5",
                "rollout_rel_l2_step11", "spectrum_max_rel_error", "enstrophy_ratio", "energy_ratio",
                "rollout_finite", "speedup", "seconds_per_step", "dns_seconds_per_step", "speedup_batch2",
                "spectrum_max_rel_error_short", "seconds_per_time_unit", "seconds_per_time_unit_batch2",
                "correlation_time", "profile_rel_error_mean_u", "profile_rel_error_reynolds_stress"):
        assert key in m and np.isfinite(m[key]), key
    assert m["seconds_per_time_unit"] == pytest.approx(m["seconds_per_step"] / 0.2)
    # correlation time: within the horizon of the rollouts (11 steps of 0.2 from the first snapshot)
    assert 0 <= m["correlation_time"] <= m["correlation_time_horizon"] == pytest.approx(2.2)
    # the one-step error of the rollout at step 1 is the one-step error of the first test pair
    assert m["rollout_rel_l2_step1"] > 0
    figures = sorted(p.name for p in (one_step_run.run_dir / "figures").glob("*.png"))
    assert figures == ["attention_kernels.png", "decorrelation.png", "profiles.png", "spectrum.png",
                       "statistics.png", "vorticity.png"]


def test_flow_matching_surrogate_trains_and_reports_ensemble_scores(tmp_path):
    cfg = tiny("objective.kind=flow_matching", "objective.timesteps=logit_normal", "sample.steps=1",
               "eval.n_samples=6")
    result = train(cfg, tmp_path / "fm", progress=False)
    m = result.metrics
    for key in ("one_step_rel_l2", "one_step_crps", "one_step_spread_skill", "rollout_crps_step5",
                "rollout_spread_skill_step5", "spectrum_max_rel_error", "speedup"):
        assert key in m and np.isfinite(m[key]), key
    assert (result.run_dir / "figures" / "ensemble.png").is_file()
    model = load_model(result.run_dir)
    assert model.flowsci_spec["name"] == "flow_surrogate"


def test_rollout_statistics_against_scaling_identities():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 7, 1, 16, 16, generator=g, dtype=torch.float64)
    same = rollout_statistics(reference[None, :, 1:], reference, k_max=4)
    # the same snapshots minus the first: ratios near 1; doubled fields: energy x 4 at every k
    doubled = rollout_statistics(2 * reference[None], reference, k_max=4)
    assert doubled["energy_ratio"] == pytest.approx(4.0, rel=1e-9)
    assert doubled["enstrophy_ratio"] == pytest.approx(4.0, rel=1e-9)
    assert doubled["spectrum_ratio_min"] == pytest.approx(4.0, rel=1e-9)
    assert doubled["spectrum_max_rel_error"] == pytest.approx(3.0, rel=1e-9)
    assert same["rollout_finite"] == 1.0
    blown = rollout_statistics(torch.full((1, 2, 3, 1, 16, 16), float("nan")), reference, k_max=4)
    assert blown["rollout_finite"] == 0.0 and blown["spectrum_max_rel_error"] == float("inf")


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="n_val"):
        load_config(TURBULENCE_YAML, ["data.n_val=14"])
    with pytest.raises(ConfigError, match="model.in_channels"):
        create_domain("turbulence").build_model(tiny("model.in_channels=3"))
    with pytest.raises(DataError, match="does not exist"):
        create_domain("turbulence").build_data(tiny(f"data.path={tmp_path / 'missing.h5'}"))


def test_cli_train_prints_the_one_step_error_and_the_figures(tmp_path):
    out = subprocess.run([FLOWSCI, "train", str(TURBULENCE_YAML), *TINY, "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "one_step_rel_l2=" in out.stdout and "vorticity.png" in out.stdout
    evaluated = subprocess.run([FLOWSCI, "eval", str(tmp_path / "run")], capture_output=True, text=True,
                               env=subprocess_env(), timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "spectrum_max_rel_error=" in evaluated.stdout
    sampled = subprocess.run([FLOWSCI, "sample", str(tmp_path / "run"), "-n", "3",
                              "--out", str(tmp_path / "s.npz")],
                             capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    with np.load(tmp_path / "s.npz") as rollouts:
        assert rollouts["rollout"].shape == (3, 13, 1, 16, 16) and np.isfinite(rollouts["rollout"]).all()


def test_pushforward_windows_and_objective_target_the_true_future_state():
    cfg = tiny("objective.unroll=3")
    data = create_domain("turbulence").build_data(cfg)
    with h5py.File(create_domain("turbulence").data_file(cfg)) as f:
        train_w = torch.from_numpy(f["splits/train/t0_fields/vorticity"][...]).float()
    windows = 12 - 3
    assert len(data.train) == 2 * windows
    future = data.train.tensors["future"]
    assert future.shape == (2 * windows, 3, 1, 16, 16)
    assert torch.equal(future[windows + 4, 2, 0], train_w[1, 4 + 3])  # trajectory 1, start 4, third step

    from flowsci_domains.turbulence.objectives import OneStepObjective

    class Shift(torch.nn.Module):
        """u -> u + 1, with a normaliser that changes nothing: k steps add k."""

        def __init__(self):
            super().__init__()
            from flowsci_domains.turbulence.surrogate import ChannelNormalizer

            self.normalizer = ChannelNormalizer([0.0], [1.0])

        def forward(self, u):
            return u + 1

    state = torch.zeros(4, 1, 2, 2)
    batch = {"state": state, "next": state + 1, "future": torch.stack([state + 1, state + 2, state + 3], 1)}
    torch.manual_seed(0)
    draws = [OneStepObjective(unroll=3).loss(Shift(), batch) for _ in range(20)]
    assert {logs["unroll"] for _, logs in draws} == {1.0, 2.0, 3.0}
    assert all(float(loss) == 0.0 for loss, _ in draws)  # every depth k compares with u(t + kΔ)
    wrong = {**batch, "future": torch.stack([state + 1, state + 1, state + 1], 1)}
    assert max(float(OneStepObjective(unroll=3).loss(Shift(), wrong)[0]) for _ in range(20)) > 0
    with pytest.raises(ConfigError, match="kind: one_step"):
        tiny("objective.unroll=2", "objective.kind=flow_matching")
