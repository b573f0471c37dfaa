"""Gradients of IFactFormer-m / -o at initialisation, through the analysis of
``bench/turbulence3d_m_vs_o.py`` on tiny models in float64.

The chained (-o) block applies the product of the small initial axis kernels, so in 3-D its
gradients fall orders of magnitude below AdamW's eps while the parallel (-m) block's do not
(Yang, Wang & Wang, arXiv 2412.18840). Oracle: central finite differences of the loss, entry by
entry, reproduce the median and max |grad| that the analysis reports.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import REPO

from flowsci_domains.turbulence.ifactformer import IFactFormer
from flowsci_domains.turbulence.objectives import relative_l2

TINY = dict(dim=8, heads=2, dim_head=4, kernel_multiplier=2, n_layer=2)
GRIDS = {2: (8, 8), 3: (6, 5, 4)}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_turbulence3d_m_vs_o",
                                                  REPO / "bench" / "turbulence3d_m_vs_o.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problem(variant: str, n_dims: int, qk_gain: float = 1.0):
    """A tiny float64 model (seed 0) and its relative-L2 loss on a fixed random batch."""
    torch.manual_seed(0)
    model = IFactFormer(3, 3, n_dims, variant=variant, qk_gain=qk_gain, **TINY).double()
    generator = torch.Generator().manual_seed(1)
    u, target = (torch.randn(2, 3, *GRIDS[n_dims], dtype=torch.float64, generator=generator)
                 for _ in range(2))
    return model, lambda: relative_l2(model(u), target).mean()


def _qk(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["group"] == "q/k projections"]


def test_groups_split_the_parameters(bench):
    model, _ = _problem("parallel", 3)
    groups = {name: bench.parameter_group(name) for name, _ in model.named_parameters()}
    assert sorted(n for n, g in groups.items() if g == "q/k projections") == sorted(
        f"block.kernel_nets.{a}.to_{m}.weight" for a in range(3) for m in "qk")
    assert sorted(n for n, g in groups.items() if g == "value and output maps") == [
        "block.mix.weight", "block.out.weight", "block.to_value.weight"]
    assert all(g == "shell" for n, g in groups.items() if not n.startswith("block."))
    assert all(g == "other attention" for n, g in groups.items()
               if n.startswith("block.") and ".to_q." not in n and ".to_k." not in n
               and n.split(".")[1] not in ("to_value", "mix", "out"))


def test_chained_3d_query_key_gradients_are_orders_below_adam_eps_and_parallel_ones(bench):
    rows = {variant: _qk(bench.gradient_magnitudes(model, loss()))
            for variant, (model, loss) in ((v, _problem(v, 3)) for v in ("parallel", "chained"))}
    chained_max = max(r["max"] for r in rows["chained"])
    parallel_median = min(r["median"] for r in rows["parallel"])
    assert chained_max < 1e-2 * bench.ADAM_EPS < 1e-4 * parallel_median
    assert chained_max < 1e-4 * parallel_median


def test_reported_gradients_match_central_finite_differences(bench):
    model, loss = _problem("chained", 3)
    name = "block.kernel_nets.2.to_q.weight"
    row = next(r for r in bench.gradient_magnitudes(model, loss()) if r["parameter"] == name)
    weight, step = dict(model.named_parameters())[name], 0.1  # the loss is linear in it at this scale
    differences = torch.empty(weight.numel(), dtype=torch.float64)
    with torch.no_grad():
        for i in range(weight.numel()):
            original = weight.view(-1)[i].item()
            weight.view(-1)[i] = original + step
            plus = loss()
            weight.view(-1)[i] = original - step
            minus = loss()
            weight.view(-1)[i] = original
            differences[i] = (plus - minus) / (2 * step)
    assert row["max"] == pytest.approx(float(differences.abs().max()), rel=1e-3)
    assert row["median"] == pytest.approx(float(differences.abs().quantile(0.5)), rel=1e-2)
    assert row["max"] < bench.ADAM_EPS


def test_a_larger_query_key_gain_or_two_dimensions_lift_chained_gradients_above_eps(bench):
    model, loss = _problem("chained", 3, qk_gain=20.0)
    assert min(r["median"] for r in _qk(bench.gradient_magnitudes(model, loss()))) > 10 * bench.ADAM_EPS
    model, loss = _problem("chained", 2)
    assert max(r["max"] for r in _qk(bench.gradient_magnitudes(model, loss()))) > 10 * bench.ADAM_EPS
