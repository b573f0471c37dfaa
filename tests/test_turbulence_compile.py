"""train.compile on the turbulence operators: a compiled IFactFormer-m (cached rotary and Fourier
tables, computed inline while tracing) matches eager outputs and gradients to 1e-5; the FNO
(real batched spectral mixing) too, in the slow tier (each compile takes tens of seconds)."""

from __future__ import annotations

import shutil

import pytest
import torch

from flowsci.compile import compile_model
from flowsci.plugins import build_model

pytestmark = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                reason="torch.compile (inductor) needs a C++ compiler")


def outputs_and_gradients(model: torch.nn.Module, forward, u: torch.Tensor):
    model.zero_grad()
    out = forward(u)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("name,params", [
    ("ifactformer_m", {"in_channels": 1, "out_channels": 1, "dim": 16, "heads": 2, "dim_head": 8,
                       "n_layer": 2}),
    pytest.param("fno", {"in_channels": 1, "out_channels": 1, "modes": 3, "width": 8, "n_layers": 2},
                 marks=pytest.mark.slow),
])
def test_compiled_operator_matches_eager(name, params):
    torch.manual_seed(0)
    model = build_model(name, params)
    u = torch.randn(2, 1, 8, 8)
    eager_out, eager_grads = outputs_and_gradients(model, model, u)
    eager_out_again = model(u).detach()  # from the tables cached by the first call
    compiled, state = compile_model(model, True)
    assert state.active, "torch.compile fell back to eager"
    compiled_out, compiled_grads = outputs_and_gradients(model, compiled, u)
    torch.testing.assert_close(eager_out_again, eager_out, rtol=0, atol=0)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    assert len(compiled_grads) == len(eager_grads) > 0
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-5)
