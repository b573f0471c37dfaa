"""Tests of RF-Edit's value sharing (flowsci.editing) on tiny random DiT / MM-DiT models: the
unset hook changes nothing, injected values reproduce recorded forward passes bit for bit and
change only the hooked blocks, the injection horizon, classifier-free guidance's doubled batch
against its formula, and convergence of the same-condition edit to the source."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowsci.editing import ValueSharing, rf_edit
from flowsci.flow_matching import Sampler
from flowsci.guidance import GuidedVelocity
from flowsci.nn.dit import DiT
from flowsci.nn.mmdit import MMDiT
from flowsci.nn.unet import UNet
from flowsci.solvers import RK4, Midpoint

F64 = torch.float64
B = 3


def _randomised(model: nn.Module) -> nn.Module:
    """Every parameter drawn from N(0, 0.15^2): the zero-initialised gates and output layer of
    a fresh model would make every block the identity and the velocity 0."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.15)
    return model.eval()


def _dit(depth: int = 2, dtype: torch.dtype = F64) -> DiT:
    return _randomised(DiT(channels=1, patch=2, width=32, depth=depth, heads=4, num_classes=3,
                           time_dim=16).to(dtype))


def _mmdit() -> MMDiT:
    return _randomised(MMDiT(channels=1, patch=2, width=32, depth=2, heads=4, context_dim=8,
                             time_dim=16).to(F64))


def _images(seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(B, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _times(t: float) -> torch.Tensor:
    return torch.full((B,), t, dtype=F64)


def _caption(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    return {"context": torch.randn(B, 4, 8, dtype=F64, generator=g), "context_mask": mask}


LABELS = {"y": torch.tensor([0, 1, 2])}
OTHER_LABELS = {"y": torch.tensor([2, 0, 1])}
MODELS = {"dit": (_dit, LABELS, OTHER_LABELS), "mmdit": (_mmdit, _caption(1), _caption(2))}


@pytest.mark.parametrize("kind", list(MODELS))
def test_unset_or_passing_hooks_change_nothing(kind: str) -> None:
    make, cond, _ = MODELS[kind]
    model, x, t = make(), _images(0), _times(0.3)
    keys = list(model.state_dict())
    before = model(x, t, **cond)
    with ValueSharing(model, blocks=2) as sharing:
        assert all(block.value_hook is not None for block in sharing.blocks)
        attached = model(x, t, **cond)
        sharing.record(batch=B)
        recording = model(x, t, **cond)
        assert list(model.state_dict()) == keys
    after = model(x, t, **cond)
    assert all(m.value_hook is None for m in model.modules() if hasattr(m, "value_hook"))
    assert list(model.state_dict()) == keys and not any("hook" in k for k in keys)
    for out in (attached, recording, after):
        assert torch.equal(out, before)


@pytest.mark.parametrize("kind", list(MODELS))
def test_injecting_at_the_recorded_times_reproduces_the_recorded_pass(kind: str) -> None:
    make, cond, other = MODELS[kind]
    model, x = make(), _images(0)
    with ValueSharing(model, blocks=2) as sharing:
        sharing.record(batch=B)
        recorded = {t: model(x, _times(t), **cond) for t in (0.2, 0.6)}
        sharing.inject(horizon=math.inf)
        for t, out in recorded.items():
            assert torch.equal(model(x, _times(t), **cond), out)
        # the injected V is the recorded one, not the current one: another input gives another result
        assert not torch.allclose(model(x, _times(0.2), **other), recorded[0.2])
    assert sharing.times == pytest.approx([0.2, 0.6])


@pytest.mark.parametrize("kind", list(MODELS))
def test_replaced_values_change_only_the_hooked_blocks(kind: str) -> None:
    """Sharing the last block of a 3-block model: block 0's output is unchanged, the later ones
    are not."""
    make, cond, other = MODELS[kind]
    model = _dit(depth=3) if kind == "dit" else _randomised(
        MMDiT(channels=1, patch=2, width=32, depth=3, heads=4, context_dim=8, time_dim=16).to(F64))
    outputs: list[torch.Tensor] = []
    handles = [block.register_forward_hook(lambda m, args, out: outputs.append(
        out[0] if isinstance(out, tuple) else out)) for block in model.blocks]
    x, t = _images(1), _times(0.4)
    model(x, t, **other)
    plain, outputs[:] = list(outputs), []
    with ValueSharing(model, blocks=2) as sharing:
        sharing.record(batch=B)
        model(_images(2), t, **cond)
        sharing.inject(horizon=math.inf)
        outputs.clear()
        model(x, t, **other)
    for handle in handles:
        handle.remove()
    assert torch.equal(outputs[0], plain[0])
    for shared, unshared in zip(outputs[1:], plain[1:]):
        assert (shared - unshared).abs().max() > 1e-3


def test_injection_horizon_covers_the_first_steps_only() -> None:
    """float32 RK4 on 5 steps, inject 2: the regeneration's evaluations at t < 0.4 (t_2) give
    other outputs than the plain model at the same input; those at t >= 0.4, including RK4's end
    stage at 0.4, give the plain model's output bit for bit."""
    model = _dit(dtype=torch.float32)
    calls: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append((float(args[1][0]), args[0], out)))
    x = _images(0, torch.float32)
    rf_edit(model, Sampler(RK4(), steps=5), x, LABELS, OTHER_LABELS, steps=5, inject=2, blocks=1)
    handle.remove()
    regeneration = calls[20:]
    assert len(regeneration) == 20 and regeneration[0][0] == 0.0
    for t, x_t, out in regeneration:
        plain = model(x_t, torch.full((B,), t), **OTHER_LABELS)
        injected = t < 0.4 - 1e-6
        assert torch.equal(out, plain) != injected, t
    assert sum(t < 0.4 - 1e-6 for t, _, _ in regeneration) == 7  # 2 steps of 4 stages, t = 0.4 excluded


def test_same_condition_full_injection_converges_to_the_plain_reconstruction() -> None:
    """Source = target condition, V shared at every step: the edit reconstructs the source as
    well as plain inversion + regeneration, and converges with the steps (midpoint's stages sit
    at the same times in both directions, so the shared V differs from the regeneration's own
    by the solver's error only)."""
    model, x = _dit(), _images(1)
    sampler = Sampler(Midpoint(), steps=10)
    errors = []
    for steps in (8, 16):
        edit = rf_edit(model, sampler, x, LABELS, LABELS, steps=steps, inject=steps, blocks=2)
        plain = rf_edit(model, sampler, x, LABELS, LABELS, steps=steps, inject=0, blocks=2)
        errors.append(float((edit - x).pow(2).mean().sqrt()))
        assert errors[-1] < 1.5 * float((plain - x).pow(2).mean().sqrt())
        assert float((edit - plain).abs().max()) < 0.02
    assert errors[0] / errors[1] > 3, errors
    edited = rf_edit(model, sampler, x, LABELS, OTHER_LABELS, steps=16, inject=16, blocks=2)
    unshared = rf_edit(model, sampler, x, LABELS, OTHER_LABELS, steps=16, inject=0, blocks=2)
    assert float((edited - unshared).abs().max()) > 0.05  # sharing matters when conditions differ


def test_guidance_doubled_batch_uses_the_conditional_values_for_both_halves() -> None:
    """CFG evaluates [cond; null] in one batch. Recording keeps the conditional half; injecting
    gives v_null' + w (v_cond - v_null'), where v_null' is the null branch run with the cached V."""
    model, x, t, w = _mmdit(), _images(0), _times(0.3), 3.0
    cond, null = _caption(1), {"context_mask": False}
    guided = GuidedVelocity(model, w, cond, null)
    null_cond = {"context": cond["context"], "context_mask": torch.zeros_like(cond["context_mask"])}
    with ValueSharing(model, blocks=2) as sharing:
        sharing.record(batch=B)
        model(x, t, **cond)
        alone = dict(sharing.values)
        guided(x, t)
        for key, value in alone.items():
            torch.testing.assert_close(sharing.values[key], value, rtol=1e-12, atol=1e-12)
        sharing.inject(horizon=math.inf)
        v_cond, v_null = model(x, t, **cond), model(x, t, **null_cond)
        torch.testing.assert_close(guided(x, t), v_null + w * (v_cond - v_null), rtol=1e-10, atol=1e-10)
    v_null_plain = model(x, t, **null_cond)
    assert (v_null - v_null_plain).abs().max() > 1e-3
    sampler = Sampler(Midpoint(), steps=4, guidance=2.0, null=null)
    edited = rf_edit(model, sampler, x, cond, _caption(2), steps=4, inject=2, blocks=1,
                     inversion_guidance=1.5)
    assert edited.shape == x.shape and bool(edited.isfinite().all())


def test_unet_and_bad_arguments_raise() -> None:
    unet = UNet(channels=1, width=8, multipliers=[1], num_classes=3).to(F64)
    with pytest.raises(ValueError, match=r"value_hook \(dit, mmdit\); UNet has none"):
        ValueSharing(unet, blocks=1)
    sampler, x = Sampler(Midpoint(), steps=4), _images(0)
    with pytest.raises(ValueError, match="UNet has none"):
        rf_edit(unet, sampler, x, LABELS, OTHER_LABELS, steps=2, inject=1, blocks=1)
    assert rf_edit(unet, sampler, x, LABELS, OTHER_LABELS, steps=2, inject=1, blocks=0).shape == x.shape
    model = _dit()
    for kwargs, message in (({"steps": 0, "inject": 0}, "steps must be"), ({"inject": 5}, "inject must be"),
                            ({"inject": -1}, "inject must be"), ({"blocks": -1}, "blocks must be"),
                            ({"blocks": 3}, r"blocks must be an integer in \[1, 2\]")):
        with pytest.raises(ValueError, match=message):
            rf_edit(model, sampler, x, LABELS, LABELS, **{"steps": 4, "inject": 2, "blocks": 1, **kwargs})
    with ValueSharing(model, blocks=1) as sharing:
        with pytest.raises(ValueError, match="nothing recorded"):
            sharing.inject(horizon=1.0)
        with pytest.raises(ValueError, match="batch must be"):
            sharing.record(batch=0)
        with pytest.raises(ValueError, match="one ValueSharing at a time"):
            ValueSharing(model, blocks=1).__enter__()
        sharing.record(batch=B)
        with pytest.raises(ValueError, match="one time for the whole batch"):
            model(x, torch.tensor([0.1, 0.2, 0.3], dtype=F64), **LABELS)
        with pytest.raises(ValueError, match="recording a batch of 3"):
            model(x[:2], _times(0.1)[:2], y=LABELS["y"][:2])
