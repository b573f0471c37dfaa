"""Reflow pair generation: reproducible, resumable, filtered, and stored in the flowsci schema."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowsci.data import load_split, validate
from flowsci.flow_matching import Sampler
from flowsci.reflow import distillation_times, generate_pairs
from flowsci.solvers import Euler
from flowsci.sources import StandardNormal


class Shift(torch.nn.Module):
    """v = (1, -2): the flow maps x0 to x0 + (1, -2) exactly with Euler."""

    def forward(self, x, t):
        return torch.tensor([1.0, -2.0]).expand_as(x)


def _pairs(path, **kw):
    return generate_pairs(Shift(), StandardNormal((2,)), 250, path, sampler=Sampler(Euler(), 4),
                          batch_size=100, seed=3, progress=False, **kw)


def test_pairs_follow_the_flow_and_the_schema(tmp_path):
    path = _pairs(tmp_path / "pairs.h5")
    meta = validate(path)
    assert meta.splits == {"train": 250} and set(meta.fields) == {"x0", "x1"}
    pairs = load_split(path, "train")
    assert torch.allclose(pairs["x1"] - pairs["x0"], torch.tensor([1.0, -2.0]).expand(250, 2), atol=1e-6)
    assert not (tmp_path / "pairs.h5.partial").exists()
    again = load_split(_pairs(tmp_path / "again.h5"), "train")
    assert torch.equal(again["x0"], pairs["x0"])  # reproducible from the seed


def test_interrupted_generation_resumes_to_the_same_pairs(tmp_path):
    reference = load_split(_pairs(tmp_path / "ref.h5"), "train")
    with pytest.raises(RuntimeError, match="only 100 of 250"):
        _pairs(tmp_path / "cut.h5", max_batches=1)  # stops after one stored batch
    assert (tmp_path / "cut.h5.partial" / "batch-000000.npz").exists()
    resumed = load_split(_pairs(tmp_path / "cut.h5"), "train")
    assert torch.equal(resumed["x0"], reference["x0"]) and torch.equal(resumed["x1"], reference["x1"])


def test_partial_store_of_other_settings_is_refused(tmp_path):
    with pytest.raises(RuntimeError):
        _pairs(tmp_path / "p.h5", max_batches=1)
    with pytest.raises(ValueError, match="holds batches of another run"):
        generate_pairs(Shift(), StandardNormal((2,)), 250, tmp_path / "p.h5", sampler=Sampler(Euler(), 4),
                       batch_size=50, seed=3, progress=False)


def test_filter_keeps_only_accepted_pairs(tmp_path):
    pairs = load_split(_pairs(tmp_path / "f.h5", accept=lambda x0, x1: x1[:, 0] > 1.0), "train")
    assert len(pairs["x1"]) == 250 and bool((pairs["x1"][:, 0] > 1.0).all())


def test_distillation_times():
    assert distillation_times(1) == [0.0]
    assert np.allclose(distillation_times(4), [0, 0.25, 0.5, 0.75])
    with pytest.raises(ValueError):
        distillation_times(0)
