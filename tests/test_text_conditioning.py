"""The tiny text encoder and pooled-text conditioning of the DiT and U-Net: padding never
matters, the null caption is the no-text embedding, captions change the output, and gradients
reach the encoder through an MM-DiT."""

from __future__ import annotations

import pytest
import torch

from flowsci.nn.dit import DiT
from flowsci.nn.mmdit import MMDiT
from flowsci.nn.text_encoder import TextConditioned, TextEncoder
from flowsci.nn.unet import UNet

VOCAB, WIDTH = 12, 16


def _randomise_zero_layers(module: torch.nn.Module, std: float = 0.2) -> None:
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                torch.nn.init.normal_(p, std=std)


def test_encoder_ignores_padding_and_zeroes_the_null_caption():
    torch.manual_seed(0)
    encoder = TextEncoder(VOCAB, WIDTH, depth=2, heads=4, max_length=8).eval()
    tokens = torch.tensor([[3, 4, 5, 0, 0], [0, 0, 0, 0, 0]])
    context, mask = encoder(tokens)
    assert context.shape == (2, 5, WIDTH)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [False] * 5]
    assert torch.isfinite(context).all() and not context[0, 3:].any() and not context[1].any()
    # more padding changes nothing about the real tokens (a padding leak would)
    longer, _ = encoder(torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]]))
    torch.testing.assert_close(longer[0, :3], context[0, :3])
    # and word order is seen: the same words in another order encode differently
    swapped, _ = encoder(torch.tensor([[5, 4, 3, 0, 0]]))
    assert not torch.allclose(swapped[0, :3].mean(0), context[0, :3].mean(0), atol=1e-4)


def test_encoder_errors():
    encoder = TextEncoder(VOCAB, WIDTH, max_length=4)
    with pytest.raises(ValueError, match="max_length"):
        encoder(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        encoder(torch.tensor([[1, 12]]))
    with pytest.raises(ValueError, match="integer"):
        encoder(torch.ones(1, 3))


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_pooled_text_conditioning(backbone):
    torch.manual_seed(0)
    model = (DiT(channels=1, width=32, depth=1, heads=4, time_dim=16, context_dim=WIDTH) if backbone == "dit"
             else UNet(channels=1, width=8, multipliers=[1, 2], heads=2, time_dim=16, context_dim=WIDTH))
    _randomise_zero_layers(model)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    context = torch.randn(2, 3, WIDTH)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = model(x, t, context=context, context_mask=mask)
    # a masked token does not matter; a real one does
    poked = context.clone()
    poked[0, 2] += 5.0
    torch.testing.assert_close(model(x, t, context=poked, context_mask=mask), out)
    poked[0, 0] += 5.0
    assert not torch.allclose(model(x, t, context=poked, context_mask=mask)[0], out[0])
    # the null caption (no token) is the embedding of a zero pooled vector
    none = torch.zeros(2, 3, dtype=torch.bool)
    torch.testing.assert_close(model(x, t, context=context, context_mask=none),
                               model(x, t, context=torch.zeros_like(context)))
    with pytest.raises(ValueError, match="context"):
        model(x, t)


def test_text_conditioned_mmdit_learns_through_the_encoder():
    torch.manual_seed(0)
    model = TextConditioned({"name": "mmdit", "params": {"channels": 1, "width": 32, "depth": 2,
                                                         "heads": 4, "time_dim": 16}},
                            VOCAB, max_length=6, text_width=WIDTH, text_depth=1)
    assert isinstance(model.model, MMDiT) and model.model.context_dim == WIDTH
    _randomise_zero_layers(model.model)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    a = model(x, t, tokens=torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]]))
    b = model(x, t, tokens=torch.tensor([[2, 3, 7, 0], [5, 6, 0, 0]]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)
    a.square().mean().backward()
    assert model.encoder.tokens.weight.grad[[2, 3, 4]].abs().sum() > 0
    assert not model.encoder.tokens.weight.grad[0].any()  # the padding embedding never learns
