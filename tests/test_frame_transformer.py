"""FrameTransformer: shapes, SE(3) equivariance, chart consistency, padding, trainability.

Frames and global rotations come from scipy.spatial.transform.Rotation (an independent
quaternion/matrix implementation; scipy writes quaternions scalar-last).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from flowsci_domains.rotations.frame_transformer import FrameTransformer

SMALL = {"dim": 32, "depth": 2, "heads": 4, "pair_dim": 16, "n_rbf": 8, "time_dim": 16}


def random_frames(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, Rotation]:
    """Translations (B, N, 3) ~ N(0, 1) and B*N uniformly random rotations."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(*shape, 3)), Rotation.random(shape[0] * shape[1], random_state=rng)


def as_point(translations: np.ndarray, rotations: Rotation, chart: str) -> torch.Tensor:
    """(B, N, 3) translations and B*N rotations -> (B, N, 7) or (B, N, 12) float64 points."""
    b, n, _ = translations.shape
    if chart == "quaternion":
        rot = rotations.as_quat()[:, [3, 0, 1, 2]]  # scipy (x, y, z, w) -> (w, x, y, z)
    else:
        rot = rotations.as_matrix().reshape(-1, 9)
    return torch.from_numpy(np.concatenate([translations, rot.reshape(b, n, -1)], axis=-1))


def randomised_model(chart: str, seed: int = 0, **kwargs) -> FrameTransformer:
    """A float64 model whose zero-initialised output layer is replaced by random weights."""
    torch.manual_seed(seed)
    model = FrameTransformer(chart, **{**SMALL, **kwargs}).double()
    torch.nn.init.normal_(model.output.weight)
    torch.nn.init.normal_(model.output.bias)
    return model


@pytest.mark.parametrize("chart", ["quaternion", "matrix"])
def test_output_shape_and_zero_initial_field(chart: str) -> None:
    x = as_point(*random_frames((3, 11), seed=1), chart).float()
    model = FrameTransformer(chart, **SMALL)
    out = model(x, torch.rand(3))
    assert out.shape == (3, 11, 6)
    assert torch.equal(out, torch.zeros_like(out))
    scalar_t = randomised_model(chart).float()(x, torch.tensor(0.3))
    assert torch.allclose(scalar_t, randomised_model(chart).float()(x, torch.full((3,), 0.3)))


@pytest.mark.parametrize("chart", ["quaternion", "matrix"])
def test_equivariant_under_global_rigid_motion(chart: str) -> None:
    translations, rotations = random_frames((2, 13), seed=2)
    q = Rotation.random(random_state=3)
    shift = np.array([0.7, -1.2, 2.5])
    moved = as_point(q.apply(translations.reshape(-1, 3)).reshape(translations.shape) + shift,
                     q * rotations, chart)
    x = as_point(translations, rotations, chart)
    model = randomised_model(chart)
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    out, out_moved = model(x, t), model(moved, t)
    q_matrix = torch.from_numpy(q.as_matrix())
    assert out[..., :3].abs().max() > 0.1 and out[..., 3:].abs().max() > 0.1
    torch.testing.assert_close(out_moved[..., :3], out[..., :3] @ q_matrix.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_moved[..., 3:], out[..., 3:], atol=1e-5, rtol=0)


def test_rotating_each_frame_changes_the_output() -> None:
    """Control for the equivariance test: a per-residue (non-global) rotation is seen."""
    translations, rotations = random_frames((1, 9), seed=4)
    model = randomised_model("matrix")
    t = torch.tensor([0.5], dtype=torch.float64)
    out = model(as_point(translations, rotations, "matrix"), t)
    perturbed = Rotation.random(9, random_state=5) * rotations
    assert (model(as_point(translations, perturbed, "matrix"), t) - out).abs().max() > 1e-3


def test_invariant_to_quaternion_sign() -> None:
    x = as_point(*random_frames((2, 10), seed=6), "quaternion")
    flip = torch.ones(2, 10, 7, dtype=torch.float64)
    flip[..., 3:] = torch.where(torch.rand(2, 10, 1) < 0.5, -1.0, 1.0).double()
    model = randomised_model("quaternion")
    t = torch.tensor([0.1, 0.6], dtype=torch.float64)
    torch.testing.assert_close(model(x * flip, t), model(x, t), atol=1e-10, rtol=0)


def test_quaternion_and_matrix_charts_agree() -> None:
    frames = random_frames((2, 12), seed=7)
    model_q = randomised_model("quaternion")
    model_m = FrameTransformer("matrix", **SMALL).double()
    model_m.load_state_dict(model_q.state_dict())
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    out_q = model_q(as_point(*frames, "quaternion"), t)
    torch.testing.assert_close(model_m(as_point(*frames, "matrix"), t), out_q, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chart", ["quaternion", "matrix"])
def test_padding_is_ignored_and_outputs_zero(chart: str) -> None:
    lengths = [10, 7]
    model = randomised_model(chart)
    t = torch.tensor([0.4, 0.7], dtype=torch.float64)
    proteins = [as_point(*random_frames((1, n), seed=8 + n), chart) for n in lengths]
    padded = torch.full((2, 12, proteins[0].shape[-1]), float("nan"), dtype=torch.float64)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    for k, (n, protein) in enumerate(zip(lengths, proteins)):
        padded[k, :n], mask[k, :n] = protein[0], True
    out = model(padded, t, mask=mask)
    for k, (n, protein) in enumerate(zip(lengths, proteins)):
        torch.testing.assert_close(out[k, :n], model(protein, t[k:k + 1])[0], atol=1e-10, rtol=0)
        assert torch.equal(out[k, n:], torch.zeros_like(out[k, n:]))


def test_gradients_with_respect_to_frames_are_finite() -> None:
    x = as_point(*random_frames((2, 8), seed=9), "quaternion").requires_grad_()
    x_coincident = x.detach().clone()
    x_coincident[0, 1, :3] = x_coincident[0, 0, :3]  # two residues at the same position
    model = randomised_model("quaternion")
    for point in (x, x_coincident.requires_grad_()):
        (grad,) = torch.autograd.grad(model(point, torch.rand(2).double()).square().sum(), point)
        assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_adam_fits_an_equivariant_target_field() -> None:
    """One batch, 30 Adam steps: the translation velocity towards the centroid (an equivariant
    field), omega = 0; the squared error must fall by more than half."""
    torch.manual_seed(0)
    x = as_point(*random_frames((4, 16), seed=10), "quaternion").float()
    target = torch.cat([x[..., :3].mean(dim=1, keepdim=True) - x[..., :3],
                        torch.zeros(4, 16, 3)], dim=-1)
    model = FrameTransformer("quaternion", **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    t = torch.rand(4)
    losses = []
    for _ in range(30):
        loss = (model(x, t) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"rotation": "euler"}, "rotation"), ({"dim": 0}, "dim"), ({"depth": 0}, "depth"),
    ({"dim": 30, "heads": 4}, "heads"), ({"n_rbf": 0}, "n_rbf"), ({"time_dim": 15}, "time_dim"),
    ({"max_distance": 0.0}, "max_distance"), ({"max_relpos": 0}, "max_relpos"),
    ({"pair_dim": 2.5}, "pair_dim")])
def test_invalid_arguments_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FrameTransformer(**kwargs)


def test_invalid_inputs_are_named() -> None:
    model = FrameTransformer("quaternion", **SMALL)
    x = torch.zeros(2, 5, 7)
    x[..., 3] = 1.0
    with pytest.raises(ValueError, match="x must"):
        model(torch.zeros(2, 5, 12), torch.rand(2))
    with pytest.raises(ValueError, match="t must"):
        model(x, torch.rand(3))
    with pytest.raises(ValueError, match="mask must"):
        model(x, torch.rand(2), mask=torch.ones(2, 5))


def test_center_of_mass_option_makes_the_translation_velocity_centred() -> None:
    x = as_point(*random_frames((2, 9), seed=11), "quaternion")
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    centred = randomised_model("quaternion")(x, t, mask=mask)
    free = randomised_model("quaternion", center_of_mass=False)(x, t, mask=mask)
    assert free[..., :3].sum(1).abs().max() > 0.1  # the option is not a no-op
    assert centred[..., :3].sum(1).abs().max() < 1e-10
    mean = free[..., :3].sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    torch.testing.assert_close(centred[..., :3], (free[..., :3] - mean) * mask[..., None], atol=1e-12, rtol=0)
    torch.testing.assert_close(centred[..., 3:], free[..., 3:], atol=0, rtol=0)
