"""train.compile: torch.compile of the model matches eager, checkpoints load without compiling,
and a failing compile continues eagerly with one warning."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import SMALL, TOY2D_YAML

from flowsci.checkpoint import load_model
from flowsci.cli import build_parser
from flowsci.compile import compile_model
from flowsci.config import load_config
from flowsci.distributed import init_from_env
from flowsci.metrics_log import read_metrics
from flowsci.plugins import build_model
from flowsci.runs import RunDir
from flowsci.training import Trainer, train

# the model and batch of SMALL, so that the toy2d run reuses the graphs compiled first
MODEL = {"dim": 2, "width": 32, "depth": 2}
BATCH = 64
needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="torch.compile (inductor) needs a C++ compiler")


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory):
    """A short eager toy2d run: the reference of the fallback runs."""
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=3"])
    return train(cfg, tmp_path_factory.mktemp("eager") / "run", progress=False)


@needs_compiler
def test_compiled_model_matches_eager_in_outputs_and_gradients():
    torch.manual_seed(0)
    model = build_model("mlp_velocity", MODEL)
    compiled, state = compile_model(model, True)
    x, t = torch.randn(BATCH, 2), torch.rand(BATCH)

    def forward_backward(module: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = module(x, t)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    eager_out, eager_grads = forward_backward(model)
    compiled_out, compiled_grads = forward_backward(compiled)
    assert state.active  # it ran compiled, not through the fallback
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-5)
    assert compiled.flowsci_spec == model.flowsci_spec  # attributes come from the model


@pytest.mark.slow  # two cold compilations (training and evaluation graphs): ~20-40 s
@needs_compiler
def test_compiled_training_checkpoint_loads_eagerly(tmp_path):
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=3", "train.compile=true"])
    trainer = Trainer(cfg, RunDir(tmp_path / "run"), init_from_env("cpu"), progress=False)
    result = trainer.fit()
    assert trainer.compile_state.active and "w2" in result.metrics
    assert result.metrics["compile_seconds"] > 0
    rows = [(step, name) for step, phase, name, _ in read_metrics(result.run_dir / "metrics.csv")
            if phase == "train" and name in ("compile_seconds", "seconds_per_step")]
    assert rows == [(1, "compile_seconds"), (2, "seconds_per_step"), (3, "seconds_per_step")]
    state = torch.load(result.checkpoint, weights_only=True)
    assert not [k for k in (*state["model"], *state["ema"]) if "_orig_mod" in k]

    torch.manual_seed(1)
    x, t = torch.randn(BATCH, 2), torch.rand(BATCH)
    trained = load_model(result.checkpoint, ema=False)
    assert type(trained).__name__ == "VelocityMLP"  # a plain module
    torch.testing.assert_close(trained(x, t), trainer.compiled(x, t), rtol=1e-5, atol=1e-5)
    n = cfg.eval.n_samples  # the evaluation's shapes and mode: the graph compiled for it
    x, t = torch.randn(n, 2), torch.rand(n)
    evaluated = trainer.eval_model().eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(result.checkpoint)(x, t), evaluated(x, t),
                                   rtol=1e-5, atol=1e-5)


class _FailingBackward(torch.autograd.Function):
    """Identity whose backward fails, like a double backward through a compiled graph."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("double backward is not supported by torch.compile")


@pytest.mark.parametrize("failure, reason", [
    ("at_compile", "torch.compile is not supported on this platform"),
    ("first_call", "InvalidCxxCompiler: No working C++ compiler found"),
    ("backward", "double backward is not supported by torch.compile"),
])
def test_failing_compile_trains_eagerly_with_one_warning(tmp_path, monkeypatch, caplog, eager_run,
                                                         failure, reason):
    calls = []

    def fake_compile(model, **kwargs):
        if failure == "at_compile":
            raise RuntimeError(reason)

        def compiled(*args, **kw):
            calls.append(1)
            if failure == "first_call":
                raise RuntimeError(reason)
            return _FailingBackward.apply(model(*args, **kw))
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = load_config(TOY2D_YAML, [*SMALL, "train.steps=3", "train.compile=true"])
    with caplog.at_level(logging.WARNING, logger="flowsci.compile"):
        result = train(cfg, tmp_path / "run", progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "flowsci.compile"]
    assert len(warnings) == 1 and reason in warnings[0] and "continuing eagerly" in warnings[0]
    assert len(calls) == (0 if failure == "at_compile" else 1)  # eager after the failure
    # the same steps as an eager run, the failed one repeated with the same random numbers
    weights = torch.load(result.checkpoint, weights_only=True)["model"]
    reference = torch.load(eager_run.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def flowsci(*argv: str) -> int:
    """A CLI command in this process, without configuring logging."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


def test_eval_and_sample_compile_with_train_compile(monkeypatch, eager_run, tmp_path):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    run = str(eager_run.run_dir)
    outs = [tmp_path / "eager.npz", tmp_path / "compiled.npz"]
    assert flowsci("sample", run, "-n", "50", "--out", str(outs[0])) == 0
    assert not compiled  # the run's config has train.compile=false
    assert flowsci("sample", run, "train.compile=true", "-n", "50", "--out", str(outs[1])) == 0
    assert flowsci("eval", run, "train.compile=true") == 0
    assert [type(m).__name__ for m in compiled] == ["VelocityMLP", "VelocityMLP"]
    with np.load(outs[0]) as eager, np.load(outs[1]) as through_compile:
        np.testing.assert_array_equal(eager["x1"], through_compile["x1"])
