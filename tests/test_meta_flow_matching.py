"""Meta Flow Matching: the objective's couplings, padding invariance and the conditioned velocity."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from flowsci.meta_flow_matching import MetaFlowMatching
from flowsci.nn.population_velocity import PopulationConditionedVelocity
from flowsci.population import pad_populations
from flowsci.timesteps import UniformTime


class Zero(torch.nn.Module):
    """v = 0: the loss is then the mean squared displacement of the drawn pairs."""

    def forward(self, x, t, **cond):
        return torch.zeros_like(x)


def objective(pairing: str, seed: int = 0, points: int = 64, base: str = "source") -> MetaFlowMatching:
    return MetaFlowMatching(UniformTime(), pairing=pairing, points=points, base=base,
                            generator=torch.Generator().manual_seed(seed))


def shifted_populations(sizes=(30, 45, 12), d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = [torch.randn(n, d, generator=g) for n in sizes]
    shifts = torch.randn(len(sizes), d, generator=g) * 3
    return x0, [a + s for a, s in zip(x0, shifts)], shifts


def padded_batch(x0, x1, n_max=None, scatter_seed=None):
    """The populations padded to n_max; with ``scatter_seed`` the valid points keep their order
    but sit at random positions among the padding (the same for x0 and x1, as natural pairs need)."""
    p0, m0 = pad_populations(x0, n_max)
    p1, m1 = pad_populations(x1, n_max)
    if scatter_seed is not None:
        g = torch.Generator().manual_seed(scatter_seed)
        for b in range(len(x0)):
            n = int(m0[b].sum())
            slots = torch.randperm(p0.shape[1], generator=g)[:n].sort().values
            rest = torch.ones(p0.shape[1], dtype=torch.bool)
            rest[slots] = False
            perm = torch.empty(p0.shape[1], dtype=torch.long)
            perm[slots], perm[rest] = torch.arange(n), torch.arange(n, p0.shape[1])
            p0[b], m0[b], p1[b], m1[b] = p0[b, perm], m0[b, perm], p1[b, perm], m1[b, perm]
    return {"x0": p0, "mask0": m0, "x1": p1, "mask1": m1, "population_id": torch.arange(len(x0))}


def test_zero_field_loss_is_the_mean_squared_shift_for_natural_pairs():
    x0, x1, shifts = shifted_populations()
    loss, _ = objective("natural").loss(Zero(), padded_batch(x0, x1))
    assert loss.item() == pytest.approx(shifts.pow(2).sum(1).mean().item(), rel=1e-5)


@pytest.mark.parametrize("pairing", ["natural", "random", "ot"])
def test_padding_never_changes_the_loss(pairing):
    x0, x1, _ = shifted_populations()
    model = PopulationConditionedVelocity(2, "population",
                                          {"name": "deepsets_embedder", "hidden": 16, "out_dim": 8},
                                          width=32, depth=2)
    tight = objective(pairing, seed=3).loss(model, padded_batch(x0, x1))[0]
    loose = objective(pairing, seed=3).loss(model, padded_batch(x0, x1, n_max=90, scatter_seed=1))[0]
    assert loose.item() == pytest.approx(tight.item(), rel=1e-5)


def test_ot_pairing_reaches_the_assignment_optimum_of_the_drawn_points():
    x0, x1, _ = shifted_populations(sizes=(40, 25))
    x1 = [y[torch.randperm(len(y))] for y in x1]   # unpaired: the order carries no information
    batch = padded_batch(x0, x1)
    a_random, b_random = objective("random", seed=5, points=20).pairs(batch)
    a_ot, b_ot = objective("ot", seed=5, points=20).pairs(batch)   # same draws, then re-paired
    assert torch.equal(a_ot, a_random)
    for a, b_drawn, b_paired in zip(a_random, b_random, b_ot):
        cost = torch.cdist(a.double(), b_drawn.double()).pow(2)
        rows, cols = linear_sum_assignment(cost.numpy())
        optimum = cost[rows, cols].sum().item()
        assert (a - b_paired).double().pow(2).sum().item() == pytest.approx(optimum, rel=1e-6)
        assert (a - b_paired).pow(2).sum() <= (a - b_drawn).pow(2).sum() + 1e-6
        # the re-pairing is a permutation of the drawn targets
        assert torch.equal(b_paired.sort(0).values, b_drawn.sort(0).values)


def test_natural_pairing_refuses_unpaired_populations():
    x0, x1, _ = shifted_populations(sizes=(10, 12))
    batch = padded_batch(x0, [x1[1], x1[0]])   # sizes no longer match point by point
    with pytest.raises(ValueError, match="natural"):
        objective("natural").pairs(batch)


def test_gaussian_base_replaces_the_source_points():
    x0, x1, _ = shifted_populations(sizes=(400, 400))
    x0 = [a + 50 for a in x0]
    a, _ = objective("natural", points=4000, base="gaussian").pairs(padded_batch(x0, x1))
    assert a.mean().abs() < 0.05 and (a.std() - 1).abs() < 0.05


def test_conditioned_velocity_uses_the_population_the_way_its_method_says():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 7, 3, generator=g), torch.rand(2, generator=g)
    source, mask = torch.randn(2, 20, 3, generator=g), torch.ones(2, 20, dtype=torch.bool)
    other = torch.randn(2, 20, 3, generator=g) * 2 + 1
    ids = torch.tensor([0, 1])
    mfm = PopulationConditionedVelocity(3, "population", {"name": "deepsets_embedder"}, width=32, depth=2)
    fm = PopulationConditionedVelocity(3, "none", width=32, depth=2)
    cgfm = PopulationConditionedVelocity(3, "identity", n_ids=2, width=32, depth=2)
    # MFM reads the population, invariantly to its order; FM ignores it
    assert not torch.allclose(mfm(x, t, source_points=source, source_mask=mask),
                              mfm(x, t, source_points=other, source_mask=mask))
    perm = torch.randperm(20, generator=g)
    assert torch.allclose(mfm(x, t, source_points=source, source_mask=mask),
                          mfm(x, t, source_points=source[:, perm], source_mask=mask), atol=1e-5)
    assert torch.equal(fm(x, t, source_points=source), fm(x, t, source_points=other))
    # CGFM: every unseen id reads the same (zero) vector, different from a trained id's
    unseen = cgfm(x, t, population_id=torch.tensor([-1, 7]))
    assert torch.equal(unseen[0], cgfm(x, t, population_id=torch.tensor([5, 5]))[0])
    assert not torch.allclose(unseen, cgfm(x, t, population_id=ids))
    assert torch.equal(cgfm.population_vector(population_id=torch.tensor([-1]))[0], torch.zeros(64))


def test_conditioned_velocity_time_shapes_and_errors():
    model = PopulationConditionedVelocity(2, "none", n_conditions=3, width=16, depth=1)
    x, c = torch.randn(4, 5, 2), torch.eye(3)[[0, 1, 2, 0]]
    per_population = model(x, torch.full((4,), 0.3), condition=c)
    assert torch.allclose(per_population, model(x, torch.tensor(0.3), condition=c))
    assert torch.allclose(per_population, model(x, torch.full((4, 5), 0.3), condition=c))
    with pytest.raises(ValueError, match="condition"):
        model(x, torch.tensor(0.3))
    with pytest.raises(ValueError, match="conditioning"):
        PopulationConditionedVelocity(2, "cells")
    with pytest.raises(ValueError, match="embedder"):
        PopulationConditionedVelocity(2, "population")
    with pytest.raises(ValueError, match="pairing"):
        MetaFlowMatching(UniformTime(), pairing="nearest")
