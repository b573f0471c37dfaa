"""bench/throughput.py in smoke mode: the FLOP count against a hand count, and the record of one
small model (toy2d's MLP, eager, one thread, in this process) has sane fields."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", REPO / "bench" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_linear_flops_are_the_hand_count(bench):
    """y = x W^T + b with x (B, in), W (out, in): B·out dot products of length in, 2·B·in·out
    FLOPs; the backward adds dL/dx (B, in) and dL/dW (out, in), 2·B·in·out each."""
    batch, n_in, n_out = 7, 5, 3
    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=True)
    assert bench.count_flops(lambda: layer(x))["total"] == 2 * batch * n_in * n_out
    assert bench.count_flops(lambda: layer(x).sum().backward())["total"] == 6 * batch * n_in * n_out


def test_smoke_record_of_one_model(bench, tmp_path, restore_threads):
    args = argparse.Namespace(models="mlp_velocity", smoke=True, compile=False, threads=[1],
                              compile_threads=1, device="cpu", bf16=False, budget=120.0,
                              model_timeout=60.0, compile_timeout=60.0)
    measured = bench.measure_all(args, runner=lambda spec, timeout, scratch: bench.measure_eager(spec))
    results = json.loads(json.dumps(measured))  # what the JSON file holds
    assert [row["model"] for row in results["models"]] == ["mlp_velocity"]
    assert results["models"][0]["yaml"] == "toy2d"
    eager = results["models"][0]["eager"]
    assert eager["batch_size"] == 256 and eager["parameters"] > 0
    for key in ("train", "sample"):
        timing = eager[key]["1"]
        assert timing["ms"] > 0 and timing["repeats"] >= 1
        assert 0 < timing["fraction_of_peak"] < 1
        assert eager[f"{key}_flops"]["total"] > 0 and eager[f"{key}_flops"]["fft"] == 0
        assert eager[f"{key}_memory"]["peak_mb"] >= 0
    assert eager["model_calls_per_sample_call"] == 100  # toy2d.yaml: euler, 100 steps
    assert eager["other_coupling"]["coupling"] == "OT"
    assert eager["other_coupling"]["train"]["1"]["ms"] > 0
    assert results["peak_flops"]["1"] > 1e8
    assert math.isfinite(results["load_average_before"])
    table = bench.markdown_table(results)
    assert "mlp_velocity (toy2d, 256)" in table and "load average" in table
    bench.plot(results, tmp_path / "throughput.png")
    assert (tmp_path / "throughput.png").stat().st_size > 0
