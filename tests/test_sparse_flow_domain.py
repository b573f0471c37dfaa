"""The sparse_flow domain end to end on a tiny data set (16² grid, 7 frames): the observer, the
interpolation baseline and the flow ensemble trained through the Trainer and scored; scheduled
query sampling against its definition; the error splits on fields built to have known errors;
resuming with the objective's running errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flowsci.checkpoint import list_checkpoints, load_checkpoint
from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.registry import create_domain
from flowsci.training import train
from flowsci_domains.sparse_flow.evaluation import field_errors
from flowsci_domains.sparse_flow.flow_ensemble import masked_inputs
from flowsci_domains.sparse_flow.objectives import ObserverObjective, SparseFlowObjective

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.n_trajectories=8", "data.n_val=1", "data.n_test=2", "data.n=16", "data.n_frames=7",
        "domain.space_sub=0.25", "train.batch_size=3", "train.log_every=2", "train.checkpoint_every=4",
        "train.warmup_steps=0"]
SPLITS = ("mse_in_t_in_s", "mse_in_t_out_s", "mse_out_t_in_s", "mse_out_t_out_s")


def config(name: str, *overrides: str):
    small = {"sparse_flow": ["model.latent=8", "model.gnn_density=1"],
             "sparse_flow_baseline": ["model.latent=8", "model.gnn_density=1"],
             "sparse_flow_ensemble": ["model.backbone={name: unet, params: {width: 8, multipliers: [1, 2], "
                                      "attention: false}}", "eval.members=3", "sample.steps=1"]}[name]
    return load_config(REPO / "domains" / f"{name}.yaml", [*TINY, *small, *overrides])


@pytest.mark.parametrize("name", ["sparse_flow", "sparse_flow_baseline"])
def test_deterministic_models_train_and_report_the_four_errors(name, tmp_path) -> None:
    result = train(config(name, "train.steps=4"), tmp_path / "run", progress=False)
    m = result.metrics
    for key in (*SPLITS, "forecast_mse", "rel_l2", "worst_out_ratio", "truth_interp_mse_in_t_out_s"):
        assert key in m and torch.isfinite(torch.tensor(m[key])), key
    assert m["truth_interp_mse_in_t_in_s"] == pytest.approx(0.0, abs=1e-10)  # exact on the sparse set
    assert m["observed_points"] == round(0.25 * 16 * 16)
    assert (result.run_dir / "figures" / "fields.png").is_file()
    assert (result.run_dir / "figures" / "errors.png").is_file()


def test_the_flow_ensemble_trains_and_reports_its_scores(tmp_path) -> None:
    result = train(config("sparse_flow_ensemble", "train.steps=3"), tmp_path / "run", progress=False)
    m = result.metrics
    for key in (*SPLITS, "crps", "spread_skill", "spread_skill_out_s", "ensemble_std_in_s", "member_rel_l2"):
        assert key in m and torch.isfinite(torch.tensor(m[key])), key
    assert m["crps"] > 0
    assert (result.run_dir / "figures" / "fields.png").is_file()


def test_resume_restores_the_running_query_errors_bit_for_bit(tmp_path) -> None:
    cfg = config("sparse_flow", "train.steps=8", "train.keep_checkpoints=0")
    straight = train(cfg, tmp_path / "a", progress=False)
    shutil.copytree(straight.run_dir, tmp_path / "b")
    for step, path in list_checkpoints(tmp_path / "b" / "checkpoints"):
        if step > 4:
            path.unlink()
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(list_checkpoints(straight.run_dir / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(resumed.run_dir / "checkpoints")[-1][1])
    assert not torch.equal(a["objective"]["errors"], torch.ones_like(a["objective"]["errors"]))
    assert torch.equal(a["objective"]["errors"], b["objective"]["errors"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def _objective(supervision: str = "full") -> tuple[ObserverObjective, torch.Tensor]:
    cfg = config("sparse_flow", f"objective.supervision={supervision}")
    domain = create_domain("sparse_flow")
    obs = domain.observation(cfg, 16, 7)
    objective = ObserverObjective(SparseFlowObjective(queries=64, error_floor=1e-9, supervision=supervision),
                                  obs, n_train=2)
    return objective, obs


class _Recorder(torch.nn.Module):
    """A stand-in model that records the queries the objective asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def anchors(self, values, positions, edges, k):
        return torch.zeros(values.shape[0], k, values.shape[1], 1) + self.weight

    def forecast(self, anchors):
        return anchors[..., 0]

    def observe(self, anchors, positions, times, queries):
        self.queries = queries
        return queries[..., 0] * 0 + self.weight


@pytest.mark.parametrize("supervision", ["full", "observed"])
def test_queries_follow_the_running_errors(supervision) -> None:
    objective, obs = _objective(supervision)
    objective.errors.zero_()
    objective.errors[1, 2, 5] = 1.0                              # one (frame slot, point) carries all error
    trajectories = torch.randn(2, 7, 256)
    model = _Recorder()
    objective.loss(model, {"trajectory": trajectories, "index": torch.tensor([1, 0])})
    point = objective.points[5]
    expected = torch.tensor([point // 16 / 16, point % 16 / 16, float(obs.frames[2]) / 6])
    assert torch.allclose(model.queries[0], expected.expand(64, 3))
    # after the step the queried entries hold their squared errors: (0 - value)²
    assert objective.errors[1, 2, 5] == pytest.approx(float(trajectories[0, obs.frames[2], point]) ** 2)
    if supervision == "observed":
        assert set(objective.points.tolist()) == set(obs.observed.tolist())
    else:
        assert len(objective.points) == 256


def test_the_error_splits_see_errors_only_where_they_are() -> None:
    cfg = config("sparse_flow")
    obs = create_domain("sparse_flow").observation(cfg, 16, 7)
    truth = torch.randn(2, 7, 256)
    fields = truth.clone()
    unobserved = torch.ones(256, dtype=torch.bool)
    unobserved[obs.observed] = False
    off_frames = torch.ones(7, dtype=torch.bool)
    off_frames[obs.frames] = False
    fields[:, :, unobserved] += 0.5                              # error 0.25 off the observed points
    fields[:, off_frames] += 0.1                                 # and 0.1 more at unobserved frames
    m = field_errors(fields, truth, obs, 16)
    assert m["mse_in_t_in_s"] == pytest.approx(0.0, abs=1e-12)
    assert m["mse_in_t_out_s"] == pytest.approx(0.25, rel=1e-5)
    assert m["mse_out_t_in_s"] == pytest.approx(0.01, rel=1e-5)
    assert m["mse_out_t_out_s"] == pytest.approx(0.36, rel=1e-5)


def test_the_masked_input_carries_the_observation_and_the_time() -> None:
    cfg = config("sparse_flow")
    obs = create_domain("sparse_flow").observation(cfg, 16, 7)
    initial = torch.randn(2, len(obs.observed))
    images = masked_inputs(initial, obs, torch.tensor([0, 3]), mean=1.0, std=2.0).view(2, 2, 3, 256)
    assert torch.allclose(images[1, 1, 0, obs.observed], (initial[1] - 1.0) / 2.0)
    assert images[:, :, 0].abs().sum() == images[:, :, 0, obs.observed].abs().sum()
    assert images[0, 0, 1].sum() == len(obs.observed)
    assert torch.all(images[:, 1, 2] == 0.5) and torch.all(images[:, 0, 2] == 0.0)


def test_anchors_cover_the_trajectory_and_sit_on_observed_frames() -> None:
    obs = create_domain("sparse_flow").observation(config("sparse_flow"), 16, 21)
    assert obs.frames.tolist() == list(range(0, 21, 2))
    assert obs.anchor_frames.tolist() == [0, 4, 8, 12, 16, 20]
    assert obs.anchor_slots.tolist() == [0, 2, 4, 6, 8, 10]
    short = create_domain("sparse_flow").observation(config("sparse_flow"), 16, 7)
    assert short.anchor_frames.tolist() == [0, 4, 8]
    assert short.anchor_slots.tolist() == [0, 2]  # frame 8 is past the end


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="space_sub"):
        config("sparse_flow", "domain.space_sub=0")
    domain = create_domain("sparse_flow")
    with pytest.raises(ConfigError, match="objective.kind=rollout"):
        domain.build_model(config("sparse_flow", "model={name: sparse_autoregressive}"))
    with pytest.raises(ConfigError, match="observation_channels"):
        domain.build_model(config("sparse_flow_ensemble", "model.observation_channels=2"))
