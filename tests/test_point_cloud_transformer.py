"""PointCloudTransformer: permuting a population's points permutes its velocities, padding (amount
and position) changes nothing and gets zero velocity, populations in a batch are independent,
time and condition change the field, gradients reach every parameter, bad input is refused."""

from __future__ import annotations

import pytest
import torch

from flowsci.nn.point_cloud_transformer import PointCloudTransformer

TOL = {"atol": 1e-5, "rtol": 1e-5}
DIM, COUNTS = 3, (6, 11, 2, 9)


def populations(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(c, DIM, generator=gen) for c in COUNTS]


def layout(pops: list[torch.Tensor], width: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Place population b's points (n_b, d), in order, at random slots of a padded batch
    (B, width, d); padding slots hold large garbage values. -> points, mask (B, width)."""
    points = 100 * torch.randn(len(pops), width, DIM, generator=generator)
    mask = torch.zeros(len(pops), width, dtype=torch.bool)
    for b, pop in enumerate(pops):
        slots = torch.randperm(width, generator=generator)[:len(pop)].sort().values
        points[b, slots], mask[b, slots] = pop, True
    return points, mask


@pytest.fixture
def model() -> PointCloudTransformer:
    torch.manual_seed(0)
    return PointCloudTransformer(DIM, width=32, depth=2, heads=4, time_dim=16)


def test_shapes_and_permutation_equivariance(model: PointCloudTransformer) -> None:
    gen = torch.Generator().manual_seed(1)
    x, mask = layout(populations(0), 13, gen)
    t = torch.rand(len(COUNTS), generator=gen)
    out = model(x, t, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out[~mask] == 0).all() and (out[mask].abs().sum(-1) > 0).all()
    for _ in range(2):
        perm = torch.stack([torch.randperm(13, generator=gen) for _ in COUNTS])
        gathered = model(x.gather(1, perm[..., None].expand_as(x)), t, mask.gather(1, perm))
        torch.testing.assert_close(gathered, out.gather(1, perm[..., None].expand_as(out)), **TOL)


def test_padding_invariance(model: PointCloudTransformer) -> None:
    gen = torch.Generator().manual_seed(2)
    pops = populations(1)
    t = torch.rand(len(COUNTS), generator=gen)
    tight = torch.nn.utils.rnn.pad_sequence(pops, batch_first=True)
    ones = [torch.ones(len(p), dtype=torch.bool) for p in pops]
    tight_mask = torch.nn.utils.rnn.pad_sequence(ones, batch_first=True)
    reference = model(tight, t, tight_mask)[tight_mask]  # real points, population by population
    padding = tight.shape[1] - min(COUNTS)
    for width in (tight.shape[1] + padding, tight.shape[1] + 2 * padding):
        x, mask = layout(pops, width, gen)
        out = model(x, t, mask)
        torch.testing.assert_close(out[mask], reference, **TOL)
        assert (out[~mask] == 0).all()
    full = torch.randn(2, 5, DIM, generator=gen)
    all_real = torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(model(full, t[:2]), model(full, t[:2], all_real))


def test_batch_independence(model: PointCloudTransformer) -> None:
    gen = torch.Generator().manual_seed(3)
    pops = populations(2)
    x, mask = layout(pops, 12, gen)
    t = torch.rand(len(COUNTS), generator=gen)
    out = model(x, t, mask)
    changed_x, changed_t = x.clone(), t.clone()
    changed_x[1] = 3 * torch.randn(12, DIM, generator=gen)
    changed_t[1] = 1 - t[1]
    changed = model(changed_x, changed_t, mask)
    torch.testing.assert_close(changed[[0, 2, 3]], out[[0, 2, 3]], **TOL)
    assert not torch.allclose(changed[1], out[1], atol=1e-3)
    torch.testing.assert_close(model(pops[3][None], t[3:4]), out[3:4][mask[3:4]][None], **TOL)


def test_time_dependence(model: PointCloudTransformer) -> None:
    gen = torch.Generator().manual_seed(4)
    x, mask = layout(populations(3), 12, gen)
    early, late = model(x, torch.tensor(0.1), mask), model(x, torch.tensor(0.9), mask)
    assert (early - late)[mask].norm() > 1e-2 * early[mask].norm()
    # a scalar time (tensor or float) is broadcast over the batch
    torch.testing.assert_close(model(x, torch.full((len(COUNTS),), 0.1), mask), early)
    torch.testing.assert_close(model(x, 0.1, mask), early)


def test_condition_changes_the_field() -> None:
    torch.manual_seed(0)
    model = PointCloudTransformer(DIM, width=16, depth=1, heads=2, time_dim=8, cond_dim=5)
    gen = torch.Generator().manual_seed(5)
    x, mask = layout(populations(4), 12, gen)
    t, cond = torch.rand(len(COUNTS), generator=gen), torch.randn(len(COUNTS), 5, generator=gen)
    out = model(x, t, mask, cond)
    other = cond.clone()
    other[2] += 1.0
    changed = model(x, t, mask, other)
    torch.testing.assert_close(changed[[0, 1, 3]], out[[0, 1, 3]], **TOL)
    assert (changed[2] - out[2]).norm() > 1e-2 * out[2].norm()
    with pytest.raises(ValueError, match="this model is conditional"):
        model(x, t, mask)
    with pytest.raises(ValueError, match="this model is conditional"):
        model(x, t, mask, cond[:, :4])


def test_gradients_reach_every_parameter(model: PointCloudTransformer) -> None:
    gen = torch.Generator().manual_seed(6)
    x, mask = layout(populations(5), 12, gen)
    out = model(x, torch.rand(len(COUNTS), generator=gen), mask)
    (out * torch.randn(out.shape, generator=gen)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_errors(model: PointCloudTransformer) -> None:
    x, t = torch.randn(2, 5, DIM), torch.rand(2)
    with pytest.raises(ValueError, match="points must be a float tensor"):
        model(x[0], t)
    with pytest.raises(ValueError, match="x must have 3 coordinates"):
        model(torch.randn(2, 5, 2), t)
    with pytest.raises(ValueError, match="t must be a scalar or of shape"):
        model(x, torch.rand(3))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        model(x, t, torch.ones(2, 5))
    with pytest.raises(ValueError, match="all padding"):
        model(x, t, torch.tensor([[True] * 5, [False] * 5]))
    with pytest.raises(ValueError, match="unconditional model"):
        model(x, t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match="width must be divisible by heads"):
        PointCloudTransformer(DIM, width=30, heads=4)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        PointCloudTransformer(DIM, depth=0)
    with pytest.raises(ValueError, match="must be even"):
        PointCloudTransformer(DIM, time_dim=15)
