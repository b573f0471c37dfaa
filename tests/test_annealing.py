"""Annealing reflow (SlimFlow): the beta schedule, the perturbed source, the joint flip, and
the Trainer's set_progress hook (beta follows the step, also across a resume)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from conftest import SMALL, TOY2D_YAML

from flowsci.checkpoint import list_checkpoints, load_checkpoint
from flowsci.config import load_config
from flowsci.couplings import ANNEAL_SCHEDULES, AnnealedPairedCoupling, anneal_beta
from flowsci.flow_matching import FlowMatching, Sampler
from flowsci.reflow import generate_pairs
from flowsci.registry import COUPLINGS, create_domain
from flowsci.solvers import Euler
from flowsci.sources import StandardNormal
from flowsci.training import train


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _at(coupling: AnnealedPairedCoupling, step: int, total: int) -> AnnealedPairedCoupling:
    coupling.set_progress(step, total)
    return coupling


# --- the schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ANNEAL_SCHEDULES)
@pytest.mark.parametrize("total, fraction", [(100, 0.6), (7, 0.6), (50, 1.0), (1000, 0.05)])
def test_schedule_endpoints_and_monotone(schedule, total, fraction):
    betas = [anneal_beta(k, total, fraction, schedule) for k in range(total + 1)]
    end = math.ceil(fraction * total)  # the first step with step >= fraction * total
    assert betas[0] == 1.0
    assert all(b == 0.0 for b in betas[end:]) and betas[end - 1] > 0
    assert all(a > b for a, b in zip(betas[:end], betas[1:end + 1]))  # strictly down, then flat at 0


def test_schedule_formulas():
    # step 30 of 100 with fraction 0.6 is halfway through the annealing phase (p = 1/2)
    assert anneal_beta(30, 100, 0.6, "linear") == pytest.approx(0.5)
    assert anneal_beta(30, 100, 0.6, "cosine") == pytest.approx(0.5)
    assert anneal_beta(15, 100, 0.6, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    r = 3.0
    expected = (math.exp(-r / 2) - math.exp(-r)) / (1 - math.exp(-r))
    assert anneal_beta(30, 100, 0.6, "exp", rate=r) == pytest.approx(expected)


def test_beta_is_a_function_of_the_step_only():
    """Resume: a new coupling told the same step has the same beta and, with the same
    generator, perturbs the pairs identically."""
    x0, x1 = torch.randn(64, 3), torch.randn(64, 3)
    first = AnnealedPairedCoupling(schedule="cosine", flip_p=0.5)
    for step in range(40):  # a run that went on before it was interrupted
        first.set_progress(step, 100)
    _at(first, 17, 100)
    resumed = _at(AnnealedPairedCoupling(schedule="cosine", flip_p=0.5), 17, 100)
    assert first.beta == resumed.beta == anneal_beta(17, 100, 0.6, "cosine")
    a, b = first(x0, x1, {}, _gen(5)), resumed(x0, x1, {}, _gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- the perturbed pairs ---------------------------------------------------------------------


@pytest.mark.parametrize("step", [0, 20, 45, 60])
def test_perturbed_source_has_unit_variance(step):
    """x0 ~ N(0, I): z0' = sqrt(1 - beta^2) x0 + beta eps is N(0, I) for every beta, with
    correlation sqrt(1 - beta^2) to x0. n = 200 000: the standard error of a variance is
    sqrt(2 / n) = 0.003 and of a correlation <= 1 / sqrt(n) = 0.002; tolerance 0.015."""
    n = 200_000
    coupling = _at(AnnealedPairedCoupling(), step, 100)
    beta = coupling.beta
    x0, x1 = torch.randn(n, 2, 3, generator=_gen(0)), torch.randn(n, 2, 3, generator=_gen(1))
    z0, y1, _ = coupling(x0, x1, {}, _gen(2))
    assert torch.equal(y1, x1)
    var = z0.var(0)
    assert var.shape == (2, 3) and torch.allclose(var, torch.ones(2, 3), atol=0.015)
    assert torch.allclose(z0.mean(0), torch.zeros(2, 3), atol=0.015)
    corr = ((z0 - z0.mean(0)) * (x0 - x0.mean(0))).mean(0) / (z0.std(0) * x0.std(0))
    assert torch.allclose(corr, torch.full((2, 3), math.sqrt(1 - beta * beta)), atol=0.015)


def test_zero_beta_is_reflow_and_extras_follow():
    coupling = _at(AnnealedPairedCoupling(anneal_fraction=0.5), 5, 10)
    x0, x1, y = torch.randn(8, 2), torch.randn(8, 2), torch.arange(8)
    z0, y1, extras = coupling(x0, x1, {"y": y})
    assert coupling.beta == 0.0
    assert torch.equal(z0, x0) and torch.equal(y1, x1) and torch.equal(extras["y"], y)


def test_joint_flip_of_x0_and_x1():
    x0, x1 = torch.randn(2000, 3, 4), torch.randn(2000, 3, 4)
    z0, y1, _ = _at(AnnealedPairedCoupling(flip_p=1.0), 99, 100)(x0, x1, {})
    assert torch.equal(z0, x0.flip(-1)) and torch.equal(y1, x1.flip(-1))
    z0, y1, _ = _at(AnnealedPairedCoupling(flip_p=0.3), 99, 100)(x0, x1, {}, _gen(0))
    flipped = (y1 == x1.flip(-1)).flatten(1).all(1)
    kept = (y1 == x1).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each pair is either flipped or not
    assert torch.equal(z0[flipped], x0[flipped].flip(-1)) and torch.equal(z0[kept], x0[kept])
    assert abs(flipped.float().mean().item() - 0.3) < 0.04  # 4 standard errors


def test_bad_parameters_are_value_errors():
    for kwargs in ({"anneal_fraction": 0.0}, {"anneal_fraction": 1.5}, {"schedule": "quadratic"},
                   {"rate": 0.0}, {"flip_p": -0.1}, {"flip_p": 1.5}):
        with pytest.raises(ValueError):
            AnnealedPairedCoupling(**kwargs)
    with pytest.raises(ValueError, match="schedule must be one of linear, cosine, exp"):
        COUPLINGS.create({"name": "annealed_paired", "schedule": "quadratic"}, "objective.coupling")
    coupling = AnnealedPairedCoupling()
    for step, total in ((-1, 10), (0, 0), (1.5, 10)):
        with pytest.raises(ValueError, match="step and total"):
            coupling.set_progress(step, total)
    with pytest.raises(RuntimeError, match="call set_progress"):
        coupling(torch.randn(4, 2), torch.randn(4, 2), {})
    with pytest.raises(ValueError, match="last axis"):
        _at(AnnealedPairedCoupling(flip_p=0.5), 0, 10)(torch.randn(4), torch.randn(4), {})
    with pytest.raises(ValueError, match="batch sizes differ"):
        _at(coupling, 0, 10)(torch.randn(4, 2), torch.randn(3, 2), {})


# --- the Trainer's hook ----------------------------------------------------------------------


class Shift(torch.nn.Module):
    """v = (1, -2): a teacher whose pairs are x1 = x0 + (1, -2)."""

    def forward(self, x, t):
        return torch.tensor([1.0, -2.0]).expand_as(x)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "pairs.h5"
    return generate_pairs(Shift(), StandardNormal((2,)), 512, out, sampler=Sampler(Euler(), 2),
                          batch_size=256, seed=0, progress=False)


def _annealed(pairs, *extra):
    return load_config(TOY2D_YAML, [*SMALL, f"data.pairs={pairs}", "objective.coupling=annealed_paired",
                                    "train.steps=10", "train.checkpoint_every=5", "train.keep_checkpoints=0",
                                    *extra])


def test_flow_matching_pairs_inline_and_forwards_the_progress(pairs):
    objective = create_domain("toy2d").build_objective(_annealed(pairs))
    assert not objective.costly_pairing  # the Trainer pairs inside the step, after set_progress
    objective.set_progress(3, 10)
    assert objective.coupling.beta == anneal_beta(3, 10)


def test_trainer_sets_the_progress_and_a_resumed_run_is_identical(pairs, tmp_path, monkeypatch):
    seen = []
    real = AnnealedPairedCoupling.set_progress

    def spy(self, step, total):
        seen.append((step, total))
        real(self, step, total)

    monkeypatch.setattr(AnnealedPairedCoupling, "set_progress", spy)
    reference = train(_annealed(pairs), tmp_path / "reference", progress=False).run_dir
    assert seen == [(k, 10) for k in range(10)]

    # resume from the step-5 checkpoint of a copy: the same betas, then the same weights
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    (resumed / "checkpoints" / "step-00000010.pt").unlink()
    seen.clear()
    train(_annealed(pairs), resumed, resume=True, progress=False)
    assert seen == [(k, 10) for k in range(5, 10)]
    final = [load_checkpoint(list_checkpoints(run / "checkpoints")[-1][1]) for run in (reference, resumed)]
    assert final[0]["step"] == final[1]["step"] == 10
    for key, value in final[0]["model"].items():
        assert torch.equal(value, final[1]["model"][key]), key


def test_a_progress_coupling_that_pairs_ahead_is_refused():
    class Ahead(AnnealedPairedCoupling):
        solves_plan = True

    objective = create_domain("toy2d").build_objective(load_config(TOY2D_YAML, SMALL))
    with pytest.raises(ValueError, match="must pair inline"):
        FlowMatching(objective.path, objective.timesteps, Ahead(), objective.loss_fn)
