"""Classifier-free guidance: condition dropout statistics and the guided field's limits."""

from __future__ import annotations

import pytest
import torch

from flowsci.guidance import ConditionDropout, GuidedVelocity


class LabelField(torch.nn.Module):
    """v(x, t | y) = x * (y + 1): the null label -1 gives v = 0, so every branch is known."""

    def forward(self, x, t, y):
        return x * (y.to(x.dtype) + 1).unsqueeze(-1)


def test_dropout_replaces_a_fraction_p_with_the_null_value():
    y = torch.arange(20_000) % 5
    out = ConditionDropout(0.3, {"y": -1})({"y": y}, generator=torch.Generator().manual_seed(0))
    dropped = out["y"] == -1
    assert abs(dropped.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / 20_000) ** 0.5
    assert torch.equal(out["y"][~dropped], y[~dropped])  # kept labels stay with their samples


def test_dropout_drops_all_conditions_of_a_sample_together():
    cond = {"y": torch.arange(1000), "z": torch.ones(1000, 3)}
    out = ConditionDropout(0.5, {"y": -1, "z": 0.0})(cond, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out["y"] == -1, (out["z"] == 0).all(1))


def test_dropout_validates():
    with pytest.raises(ValueError, match="p_uncond"):
        ConditionDropout(1.5, {"y": -1})
    with pytest.raises(KeyError, match="has no"):
        ConditionDropout(0.5, {"y": -1})({"label": torch.zeros(3)})


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guided_velocity_interpolates_between_null_and_conditional(w):
    x, t, y = torch.randn(6, 2), torch.rand(6), torch.tensor([0, 1, 2, 3, 4, 5])
    model = LabelField()
    guided = GuidedVelocity(model, w, {"y": y}, {"y": -1})(x, t)
    conditional, unconditional = model(x, t, y), torch.zeros_like(x)
    assert torch.allclose(guided, unconditional + w * (conditional - unconditional))
    if w == 0.0:
        assert torch.equal(guided, unconditional)
    if w == 1.0:
        assert torch.equal(guided, conditional)
