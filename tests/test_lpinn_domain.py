"""The lpinn domain end to end: Adam then L-BFGS in the Trainer, resume inside the L-BFGS phase,
the convergence stop, evaluation against the reference, figures, and the config errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO

from flowsci.checkpoint import list_checkpoints, load_checkpoint
from flowsci.config import load_config
from flowsci.errors import ConfigError, RunError
from flowsci.metrics_log import read_metrics
from flowsci.training import train

YAML = REPO / "domains" / "lpinn.yaml"
TINY = ["domain.n_x=32", "domain.n_t=8", "eval.n_x=32", "eval.n_t=8", "train.log_every=1",
        "train.eval_every=5", "train.checkpoint_every=4", "train.keep_checkpoints=0"]
LPINN_TINY = ["model={name: lpinn, width: 12, u_depth: 2, x_depth: 1}"]
LPINN_LAB = ["model={name: lpinn, width: 12, u_depth: 2, x_depth: 1, frame_speed: 0}"]  # the lab frame
PINN_TINY = ["model={name: pinn, width: 12, depth: 2}"]


def config(*overrides: str, model=LPINN_TINY):
    return load_config(YAML, [*TINY, *model, *overrides])


@pytest.mark.parametrize("model", [LPINN_TINY, PINN_TINY], ids=["lpinn", "pinn"])
def test_adam_then_lbfgs_lowers_the_loss_and_reports_the_cost(tmp_path, model) -> None:
    cfg = config("train.steps=30", "train.lbfgs.steps=15", "domain.beta=1", model=model)
    result = train(cfg, tmp_path / "run", progress=False)
    m = result.metrics
    assert m["lbfgs_iterations"] == result.step - 30 > 0
    assert m["train_seconds"] > 0 and math.isfinite(m["linf"]) and math.isfinite(m["adam_rel_l2"])
    rows = read_metrics(result.run_dir / "metrics.csv")
    loss = {s: v for s, p, n, v in rows if p == "train" and n == "loss"}
    # the strong-Wolfe line search never accepts an increase; rel-L2 is not what L-BFGS minimises
    # (on this 32 x 8 toy grid it can rise), the slow tier checks it at full scale
    assert all(loss[s + 1] <= loss[s] for s in range(31, result.step))
    assert loss[result.step] < 0.9 * loss[31]
    evaluations = [v for s, p, n, v in rows if n == "lbfgs_evaluations"]
    assert evaluations and evaluations[-1] >= m["lbfgs_iterations"]  # line search: >= 1 evaluation each
    assert any(s == 30 and p == "eval" and n == "rel_l2" for s, p, n, v in rows)  # end of Adam
    figures = {p.name for p in (result.run_dir / "figures").glob("*.png")}
    assert "solution.png" in figures and ("characteristics.png" in figures) == (model is LPINN_TINY)


def test_resume_inside_the_lbfgs_phase_is_bit_for_bit(tmp_path) -> None:
    straight = train(config("train.steps=8", "train.lbfgs.steps=8"), tmp_path / "a", progress=False)
    train(config("train.steps=8", "train.lbfgs.steps=3"), tmp_path / "b", progress=False)
    resumed = train(config("train.steps=8", "train.lbfgs.steps=8"), tmp_path / "b", resume=True,
                    progress=False)
    a = load_checkpoint(list_checkpoints(straight.run_dir / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(resumed.run_dir / "checkpoints")[-1][1])
    assert a["step"] == b["step"] == 16
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert straight.metrics["rel_l2"] == resumed.metrics["rel_l2"]


def test_lbfgs_stops_when_the_loss_stalls_and_the_run_cannot_continue(tmp_path) -> None:
    # a relative tolerance of 1 counts any iteration that does not double the loss as stalled:
    # iteration 1 (a steepest-descent step, no curvature history yet) is found stalled at the
    # second call, which ends the phase without a restart
    cfg = config("train.steps=5", "train.lbfgs.steps=50", "train.lbfgs.tolerance_change=1.0")
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.metrics["lbfgs_converged"] == 1.0 and result.step == 7
    assert result.metrics["lbfgs_restarts"] == 0
    with pytest.raises(RunError, match="converged"):
        train(config("train.steps=5", "train.lbfgs.steps=60", "train.lbfgs.tolerance_change=1.0"),
              tmp_path / "run", resume=True, progress=False)


def test_a_stalled_lbfgs_restarts_with_a_cleared_history_and_resumes_bit_for_bit(tmp_path) -> None:
    # relative tolerance 0.3: an iteration that lowers the loss by less than 30 % counts as stalled
    # (the lab frame: this tiny co-moving LPINN converges before any restart)
    lbfgs = ("train.steps=5", "train.lbfgs.tolerance_change=0.3", "train.eval_every=0", *LPINN_LAB)
    straight = train(config(*lbfgs, "train.lbfgs.steps=50"), tmp_path / "a", progress=False)
    m = straight.metrics
    assert m["lbfgs_restarts"] >= 1 and m["lbfgs_converged"] == 1.0 and m["lbfgs_iterations"] > 3
    loss = [v for s, p, n, v in read_metrics(straight.run_dir / "metrics.csv")
            if p == "train" and n == "loss"]
    assert loss[-1] < 0.5 * loss[5 + 3]  # iterations after the first restart kept lowering the loss
    train(config(*lbfgs, "train.lbfgs.steps=4"), tmp_path / "b", progress=False)  # stops after a restart
    resumed = train(config(*lbfgs, "train.lbfgs.steps=50"), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == straight.step and resumed.metrics["lbfgs_restarts"] == m["lbfgs_restarts"]
    a = load_checkpoint(list_checkpoints(straight.run_dir / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(resumed.run_dir / "checkpoints")[-1][1])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_an_lbfgs_iteration_that_leaves_the_parameters_non_finite_is_undone(tmp_path, monkeypatch) -> None:
    # e.g. a line-search trial point where the Burgers chain rule divides by x_xi = 0
    original, calls = torch.optim.LBFGS.step, []

    def step_then_break(self, closure):
        loss = original(self, closure)
        calls.append(1)
        if len(calls) == 3:
            next(iter(self.param_groups[0]["params"])).data.fill_(float("nan"))
        return loss

    monkeypatch.setattr(torch.optim.LBFGS, "step", step_then_break)
    result = train(config("train.steps=5", "train.lbfgs.steps=8", "train.eval_every=0"), tmp_path / "run",
                   progress=False)
    m = result.metrics
    assert len(calls) == 8 and m["lbfgs_restarts"] >= 1 and math.isfinite(m["rel_l2"])
    state = load_checkpoint(list_checkpoints(result.run_dir / "checkpoints")[-1][1])
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


@pytest.mark.parametrize("model", [LPINN_TINY, PINN_TINY], ids=["lpinn", "pinn"])
def test_burgers_models_start_from_the_offset_of_u0(model) -> None:
    from flowsci.plugins import create_domain

    domain = create_domain("lpinn")
    burgers = domain.build_model(config("domain.equation=burgers", "domain.offset=50", model=model))
    convection = domain.build_model(config("domain.offset=50", model=model))  # C is Burgers' only
    assert burgers.u_offset == 50.0 and convection.u_offset == 0.0
    if model is LPINN_TINY:  # the co-moving frame by default; the lab frame on request
        assert (burgers.frame_speed, burgers.speed_scale) == (50.0, 1.0)
        lab = domain.build_model(config("domain.equation=burgers", "domain.offset=50", model=LPINN_LAB))
        assert (lab.frame_speed, lab.speed_scale) == (0.0, 51.0)


@pytest.mark.parametrize("frame", ["co-moving", "lab"])
def test_in_the_co_moving_frame_the_lpinn_training_problem_does_not_depend_on_beta(frame) -> None:
    """The same weights give the same loss and gradients at β = 1 and 80 in the co-moving frame
    (to float32 rounding of the positions), and not in the lab frame."""
    from flowsci.plugins import create_domain

    domain = create_domain("lpinn")
    model = LPINN_LAB if frame == "lab" else LPINN_TINY
    losses, grads = [], []
    for beta in (1, 80):
        cfg = config(f"domain.beta={beta}", model=model)
        torch.manual_seed(0)
        net = domain.build_model(cfg)
        batch = domain.build_data(cfg).train.tensors
        loss, _ = domain.build_objective(cfg).loss(net, batch)
        losses.append(loss.detach())
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))]))
    if frame == "co-moving":
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=0)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4 * float(grads[0].abs().max()))
    else:
        assert float(losses[1]) > 2 * float(losses[0])  # the x-residual grows with β


def test_reference_file_is_written_once_and_reused(tmp_path) -> None:
    from flowsci.plugins import create_domain

    cfg = config("domain.equation=burgers", "domain.offset=10", "eval.n_modes=256")
    domain = create_domain("lpinn")
    data = domain.build_data(cfg)
    path = domain.data_file(cfg)
    assert path.is_file() and data.meta.boundary_conditions["x_periodic"].bc_type == "periodic"
    assert data.test.tensors["u"].shape == (1, 32, 8) and data.train.tensors["x"].shape == (1, 32 * 8)
    stamp = path.stat().st_mtime_ns
    domain.build_data(cfg)
    assert path.stat().st_mtime_ns == stamp


def test_bad_settings_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match="domain.*equation"):
        config("domain.equation=heat")
    with pytest.raises(ConfigError, match="train.lbfgs.line_search"):
        config("train.lbfgs.line_search=armijo")
    with pytest.raises(ConfigError, match="train.ema"):  # checked when training starts
        train(config("train.ema=0.9", "train.steps=2", "train.lbfgs.steps=2"), tmp_path / "run",
              progress=False)
    with pytest.raises(ConfigError, match="model.depth"):
        config(model=["model={name: lpinn, depth: 3}"])
