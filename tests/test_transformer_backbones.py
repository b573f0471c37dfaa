"""DiT and MM-DiT image backbones: shapes, zero initialisation, adaLN-Zero, label and context
conditioning, and the joint attention of an MM-DiT block against a hand-built reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowsci.nn.dit import DiT, DiTBlock
from flowsci.nn.mmdit import JointBlock, MMDiT

WIDTH, HEADS, CTX_DIM = 32, 4, 8


def _dit(**kw) -> DiT:
    return DiT(**{"channels": 2, "patch": 2, "width": WIDTH, "depth": 2, "heads": HEADS, "time_dim": 16,
                  **kw})


def _mmdit(**kw) -> MMDiT:
    return MMDiT(**{"channels": 2, "patch": 2, "width": WIDTH, "depth": 2, "heads": HEADS,
                    "context_dim": CTX_DIM, "time_dim": 16, **kw})


def _randomise_zero_layers(module: torch.nn.Module, std: float = 0.2) -> None:
    """Give every all-zero parameter (the zero-initialised modulations and head) random values."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                torch.nn.init.normal_(p, std=std)


def _context(b: int, length: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(b, length, CTX_DIM, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, -2:] = False  # sample 0 has 3 real tokens
    return ctx, mask


@pytest.mark.parametrize("size", [8, 14])
def test_shapes_and_zero_output_at_init(size):
    torch.manual_seed(0)
    x, t = torch.randn(3, 2, size, size), torch.rand(3)
    dit = _dit(num_classes=4)
    out = dit(x, t, y=torch.tensor([0, 3, -1]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))
    ctx, mask = _context(3)
    out = _mmdit()(x, t, context=ctx, context_mask=mask)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))


def test_errors():
    x, t = torch.randn(2, 2, 7, 7), torch.rand(2)
    with pytest.raises(ValueError, match="patch"):
        _dit()(x, t)
    with pytest.raises(ValueError, match="patch"):
        _mmdit()(x, t, context=torch.randn(2, 3, CTX_DIM))
    x = torch.randn(2, 2, 8, 8)
    with pytest.raises(ValueError, match="context"):
        _mmdit()(x, t)
    with pytest.raises(ValueError, match="labels"):
        _dit(num_classes=3)(x, t)
    with pytest.raises(ValueError, match="divide"):
        DiT(width=30, heads=4)
    with pytest.raises(ValueError, match="divide"):
        MMDiT(width=30, heads=4)


@pytest.mark.parametrize("which", ["dit", "mmdit"])
def test_gradients_reach_every_parameter(which):
    torch.manual_seed(1)
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)
    y = torch.tensor([1, -1])
    if which == "dit":
        model = _dit(num_classes=3)
        cond = {"y": y}
    else:
        model = _mmdit(num_classes=3)
        ctx, mask = _context(2)
        cond = {"y": y, "context": ctx, "context_mask": mask}
    _randomise_zero_layers(model)
    model(x, t, **cond).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mmdit_without_context_stream():
    torch.manual_seed(2)
    model = _mmdit(context_dim=0)
    assert all(block.context is None for block in model.blocks)
    _randomise_zero_layers(model)
    x = torch.randn(2, 2, 8, 8)
    out = model(x, torch.rand(2))
    assert out.shape == x.shape and out.abs().sum() > 0
    with pytest.raises(ValueError, match="context"):
        model(x, torch.rand(2), context=torch.randn(2, 3, 4))


def test_adaln_zero_block_is_identity():
    torch.manual_seed(3)
    block = DiTBlock(WIDTH, HEADS)
    x, c = torch.randn(2, 10, WIDTH), torch.randn(2, WIDTH)
    assert torch.equal(block(x, c), x)
    img, ctx = torch.randn(2, 10, WIDTH), torch.randn(2, 4, WIDTH)
    out_img, out_ctx = JointBlock(WIDTH, HEADS)(img, ctx, c)
    assert torch.equal(out_img, img) and torch.equal(out_ctx, ctx)


def test_dit_depends_on_label_and_null_label():
    torch.manual_seed(4)
    model = _dit(num_classes=3)
    _randomise_zero_layers(model)
    x, t = torch.randn(1, 2, 8, 8).expand(3, -1, -1, -1), torch.full((3,), 0.3)
    out = model(x, t, y=torch.tensor([0, 1, -1]))
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert (out[0] - out[2]).abs().max() > 1e-4  # the null label is its own condition


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("pre_only", [False, True])
def test_joint_attention_matches_hand_built_reference(pre_only):
    torch.manual_seed(5)
    block = JointBlock(WIDTH, HEADS, qk_norm=True, context_pre_only=pre_only).double()
    _randomise_zero_layers(block)
    with torch.no_grad():  # non-trivial QK-norm weights
        for s in (block.image, block.context):
            s.k_norm.weight.uniform_(0.5, 1.5)
            if not pre_only:
                s.q_norm.weight.uniform_(0.5, 1.5)
    b, n, length, hd = 2, 6, 4, WIDTH // HEADS
    f64 = torch.float64
    img, ctx = torch.randn(b, n, WIDTH, dtype=f64), torch.randn(b, length, WIDTH, dtype=f64)
    c = torch.randn(b, WIDTH, dtype=f64)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])

    def qkv(stream, x):
        # documented chunk order: (shift_attn, scale_attn, ...)
        shift, scale = stream.modulation(F.silu(c)).chunk(6 if not stream.pre_only else 2, dim=-1)[:2]
        h = F.layer_norm(x, (WIDTH,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        if stream.pre_only:  # keys and values only
            k, v = (h @ stream.kv.weight.T + stream.kv.bias).reshape(b, x.shape[1], 2, HEADS, hd).unbind(2)
            return None, _rms(k, stream.k_norm.weight), v
        q, k, v = (h @ stream.qkv.weight.T + stream.qkv.bias).reshape(b, x.shape[1], 3, HEADS, hd).unbind(2)
        return _rms(q, stream.q_norm.weight), _rms(k, stream.k_norm.weight), v

    with torch.no_grad():
        qc, kc, vc = qkv(block.context, ctx)
        qi, ki, vi = qkv(block.image, img)
        q = qi if pre_only else torch.cat([qc, qi], 1)
        k, v = torch.cat([kc, ki], 1), torch.cat([vc, vi], 1)
        logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        keys = torch.cat([mask, torch.ones(b, n, dtype=torch.bool)], 1)
        logits = logits.masked_fill(~keys[:, None, None, :], float("-inf"))
        out = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v).reshape(b, q.shape[1], WIDTH)
        ref_img = out[:, -n:] @ block.image.out.weight.T + block.image.out.bias
        got_img, got_ctx = block.joint_attention(img, ctx, c, mask)
    torch.testing.assert_close(got_img, ref_img, atol=1e-5, rtol=0)
    if pre_only:
        assert got_ctx is None
    else:
        ref_ctx = out[:, :length] @ block.context.out.weight.T + block.context.out.bias
        torch.testing.assert_close(got_ctx, ref_ctx, atol=1e-5, rtol=0)


def _random_mmdit(seed: int) -> MMDiT:
    torch.manual_seed(seed)
    model = _mmdit()
    _randomise_zero_layers(model)
    return model.eval()


def test_context_permutation_invariance():
    model = _random_mmdit(6)
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)
    ctx, mask = _context(2)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = model(x, t, context=ctx, context_mask=mask)
        b = model(x, t, context=ctx[:, perm], context_mask=mask[:, perm])
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_image_output_depends_on_context_but_not_on_masked_tokens():
    model = _random_mmdit(7)
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)
    ctx, mask = _context(2)
    with torch.no_grad():
        base = model(x, t, context=ctx, context_mask=mask)
        changed = ctx.clone()
        changed[0, 1] += 1.0  # a real token of sample 0
        out = model(x, t, context=changed, context_mask=mask)
        assert (out[0] - base[0]).abs().max() > 1e-4
        torch.testing.assert_close(out[1], base[1], atol=1e-6, rtol=0)  # samples do not mix
        masked = ctx.clone()
        masked[0, -2:] = 100 * torch.randn(2, CTX_DIM)  # the masked-out tokens of sample 0
        torch.testing.assert_close(model(x, t, context=masked, context_mask=mask), base, atol=1e-5, rtol=0)
        # the null condition (all-False mask) ignores the context entirely and differs from it
        null = torch.zeros_like(mask)
        n1 = model(x, t, context=ctx, context_mask=null)
        n2 = model(x, t, context=torch.randn_like(ctx), context_mask=null)
        torch.testing.assert_close(n1, n2, atol=1e-5, rtol=0)
        assert torch.isfinite(n1).all() and (n1 - base).abs().max() > 1e-4


def test_joint_block_has_two_streams_of_weights():
    w, heads = 64, 4
    block = JointBlock(w, heads)
    # per stream: QKV (3w² + 3w), output projection (w² + w), MLP w -> 4w -> w (8w² + 5w),
    # adaLN-Zero modulation w -> 6w (6w² + 6w), RMSNorm weights of q and k (2 · w/heads)
    per_stream = 18 * w * w + 15 * w + 2 * (w // heads)
    assert sum(p.numel() for p in block.parameters()) == 2 * per_stream
    image_params = {id(p) for p in block.image.parameters()}
    context_params = {id(p) for p in block.context.parameters()}
    assert len(image_params) == len(context_params) and not image_params & context_params
    assert block.image.qkv is not block.context.qkv and block.image.mlp is not block.context.mlp
