"""The shared network blocks: the sinusoidal time embedding (sin^2 + cos^2 = 1 per frequency,
the values at t = 0) and the velocity MLP (shapes, time broadcast, per-sample independence)."""

from __future__ import annotations

import pytest
import torch

from flowsci.nn.embeddings import SinusoidalTimeEmbedding
from flowsci.nn.mlp import VelocityMLP


def test_sinusoidal_embedding_shapes_and_values() -> None:
    emb = SinusoidalTimeEmbedding(16)
    t = torch.rand(7, generator=torch.Generator().manual_seed(0))
    out = emb(t)
    assert out.shape == (7, 16)
    # half sines, half cosines of the same angles: sin^2 + cos^2 = 1 per frequency
    torch.testing.assert_close(out[:, :8] ** 2 + out[:, 8:] ** 2, torch.ones(7, 8))
    assert emb(torch.tensor(0.3)).shape == (1, 16)
    # t = 0 gives zero angles: sines 0, cosines 1
    torch.testing.assert_close(emb(torch.zeros(1)), torch.cat([torch.zeros(1, 8), torch.ones(1, 8)], dim=1))
    # distinct times are distinguishable
    pair = emb(torch.tensor([0.2, 0.2001]))
    assert (pair[0] - pair[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="must be even"):
        SinusoidalTimeEmbedding(15)


def test_velocity_mlp_shapes_and_time_broadcast() -> None:
    torch.manual_seed(0)
    model = VelocityMLP(dim=3, width=32, depth=2, time_dim=8)
    x = torch.randn(5, 3)
    out = model(x, torch.full((5,), 0.4))
    assert out.shape == (5, 3)
    torch.testing.assert_close(model(x, torch.tensor(0.4)), out)
    assert not torch.allclose(model(x, torch.tensor(0.1)), model(x, torch.tensor(0.9)))
    # samples are processed independently: one row alone gives the same output
    torch.testing.assert_close(model(x[2:3], torch.tensor([0.4])), out[2:3])
    with pytest.raises(ValueError, match="depth"):
        VelocityMLP(dim=3, depth=0)


def test_velocity_mlp_conditioning_and_null_label():
    torch.manual_seed(0)
    model = VelocityMLP(dim=2, width=16, depth=1, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    a, b = model(x, t, torch.tensor([0, 0, 0, 0])), model(x, t, torch.tensor([1, 1, 1, 1]))
    assert not torch.allclose(a, b)  # the label changes the field
    null = model(x, t, torch.full((4,), -1))
    extra_row = model.label_embedding.weight[3]  # -1 maps to the extra (null) embedding row
    with torch.no_grad():
        model.label_embedding.weight[3] += 1.0
    assert not torch.allclose(null, model(x, t, torch.full((4,), -1)))
    assert extra_row.shape == (16,)
    with pytest.raises(ValueError, match="pass labels y"):
        model(x, t)
    with pytest.raises(ValueError, match="unconditional model"):
        VelocityMLP(dim=2, width=8, depth=1)(x, t, torch.zeros(4, dtype=torch.long))
