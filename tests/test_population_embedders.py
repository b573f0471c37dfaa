"""kNN graphs over padded populations (against scipy's cKDTree) and the population embedders
(GCN, DeepSets, Set Transformer): permutation and padding invariance, batch independence,
sensitivity to the population, gradients to every parameter, unit norm of the GCN embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from flowsci.nn.knn import knn_graph
from flowsci.nn.population_embedders import AttentionEmbedder, DeepSetsEmbedder, GCNEmbedder

TOL = {"atol": 1e-5, "rtol": 1e-5}


def layout(populations: list[torch.Tensor], width: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Place population b's points (n_b, d), in order, at random slots of a padded batch
    (B, width, d); padding slots hold large garbage values. -> points, mask (B, width)."""
    d = populations[0].shape[1]
    points = 100 * torch.randn(len(populations), width, d, generator=generator)
    mask = torch.zeros(len(populations), width, dtype=torch.bool)
    for b, pop in enumerate(populations):
        slots = torch.randperm(width, generator=generator)[:len(pop)].sort().values
        points[b, slots], mask[b, slots] = pop, True
    return points, mask


def permute_slots(points: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shuffle the slots (points and padding) of every population independently.
    -> points, mask, perm (B, N) with new slot j = old slot perm[b, j]."""
    perm = torch.stack([torch.randperm(points.shape[1], generator=generator) for _ in points])
    return points.gather(1, perm[..., None].expand_as(points)), mask.gather(1, perm), perm


# ---------------------------------------------------------------- knn_graph


def expected_neighbours(points: torch.Tensor, mask: torch.Tensor, k: int, loop: bool
                        ) -> dict[int, list[int]]:
    """cKDTree: flat centre id b * N + i -> flat ids of its nearest real points, nearest first."""
    n = points.shape[1]
    expected: dict[int, list[int]] = {}
    for b in range(points.shape[0]):
        real = mask[b].nonzero().flatten().numpy()
        if len(real) == 0:
            continue
        pts = points[b, real].double().numpy()
        count = min(k + (0 if loop else 1), len(real))
        _, found = cKDTree(pts).query(pts, k=count)
        found = np.asarray(found).reshape(len(real), count)
        for row, i in enumerate(real):
            ids = [int(real[j]) for j in found[row] if loop or real[j] != i][:k]
            expected[b * n + int(i)] = [b * n + j for j in ids]
    return expected


def as_neighbour_lists(edges: torch.Tensor) -> dict[int, list[int]]:
    """edge_index (2, E) (row 0 neighbour, row 1 centre) -> centre -> neighbours in edge order."""
    lists: dict[int, list[int]] = {}
    for source, target in edges.t().tolist():
        lists.setdefault(target, []).append(source)
    return lists


@pytest.mark.parametrize("batch, n, d, k, loop", [(1, 30, 2, 1, False), (4, 25, 3, 5, False),
                                                  (3, 40, 2, 8, True), (6, 12, 5, 10, False)])
def test_knn_graph_matches_ckdtree(batch: int, n: int, d: int, k: int, loop: bool) -> None:
    gen = torch.Generator().manual_seed(batch * 100 + k)
    counts = torch.randint(1, n + 1, (batch,), generator=gen).tolist()
    counts[0] = min(k, n)  # fewer than k + 1 real points: every centre gets all the others
    pops = [torch.randn(c, d, generator=gen) for c in counts]
    points, mask = layout(pops, n, gen)
    edges = knn_graph(points, mask, k, loop=loop)
    assert edges.dtype == torch.long and edges.shape[0] == 2
    expected = expected_neighbours(points, mask, k, loop)
    # continuous data has no ties: the neighbours agree in order (nearest first)
    assert as_neighbour_lists(edges) == {c: v for c, v in expected.items() if v}
    assert edges.shape[1] == sum(c * min(k, c - (0 if loop else 1)) for c in counts)
    # grouped by centre, ascending
    assert (edges[1].diff() >= 0).all()


def test_knn_graph_without_mask_and_empty_population() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(3, 9, 2, generator=gen)
    full = torch.ones(3, 9, dtype=torch.bool)
    assert torch.equal(knn_graph(points, None, 3), knn_graph(points, full, 3))
    mask = full.clone()
    mask[1] = False  # an all-padding population has no edges
    edges = knn_graph(points, mask, 3)
    assert not ((edges >= 9) & (edges < 18)).any()
    assert as_neighbour_lists(edges) == expected_neighbours(points, mask, 3, False)


def test_knn_graph_ties_are_deterministic() -> None:
    # all real points coincide: every distance ties and the lowest slots win
    points = torch.zeros(2, 8, 3)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 1, 1], [0, 1, 1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    edges = knn_graph(points, mask, 2)
    lists = as_neighbour_lists(edges)
    assert lists[0] == [2, 3] and lists[2] == [0, 3] and lists[7] == [0, 2]
    assert lists[8 + 1] == [10, 12] and lists[8 + 4] == [9, 10]
    assert torch.equal(edges, knn_graph(points, mask, 2))
    # ties at the k-th distance behind closer points: the closer ones, then the lower slot
    line = torch.tensor([0.0, -2.0, 2.0, -1.0, 1.0])[None, :, None]
    assert as_neighbour_lists(knn_graph(line, None, 3))[0] == [3, 4, 1]
    assert as_neighbour_lists(knn_graph(line, None, 1))[0] == [3]


def test_knn_graph_chunking_gives_the_same_edges() -> None:
    gen = torch.Generator().manual_seed(2)
    points, mask = layout([torch.randn(c, 2, generator=gen) for c in (5, 11, 2, 14, 9)], 16, gen)
    whole = knn_graph(points, mask, 4)
    for max_entries in (1, 16 * 16, 3 * 16 * 16):  # one, one and three populations per chunk
        assert torch.equal(knn_graph(points, mask, 4, max_entries=max_entries), whole)


def test_knn_graph_errors() -> None:
    points = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_graph(points, None, 0)
    with pytest.raises(ValueError, match="points must be a float tensor"):
        knn_graph(points[0], None, 2)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        knn_graph(points, torch.ones(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        knn_graph(points, torch.ones(2, 5), 2)
    bad = points.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        knn_graph(bad, None, 2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False  # a non-finite padding value is fine
    assert knn_graph(bad, mask, 2).shape[1] == 5 * 2 + 4 * 2


# ---------------------------------------------------------------- embedders

DIM = 3
EMBEDDERS = {
    "gcn": lambda: GCNEmbedder(DIM, hidden=32, out_dim=16, layers=3, k=4),
    "gcn_raw": lambda: GCNEmbedder(DIM, hidden=32, out_dim=16, layers=2, k=3, normalize=False),
    "deepsets_mean": lambda: DeepSetsEmbedder(DIM, hidden=32, out_dim=16, pool="mean"),
    "deepsets_sum": lambda: DeepSetsEmbedder(DIM, hidden=32, out_dim=16, layers=3, pool="sum"),
    "deepsets_max": lambda: DeepSetsEmbedder(DIM, hidden=32, out_dim=16, pool="max"),
    "attention": lambda: AttentionEmbedder(DIM, hidden=32, out_dim=16, heads=4, seeds=2,
                                           encoder_blocks=2),
}
COUNTS = (7, 12, 3, 10)  # population 2 is smaller than k + 1 of the GCN embedders


def populations(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(c, DIM, generator=gen) + 0.5 * b for b, c in enumerate(COUNTS)]


@pytest.fixture(params=sorted(EMBEDDERS))
def embedder(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return EMBEDDERS[request.param]()


def test_embedder_shape_and_permutation_invariance(embedder: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    points, mask = layout(populations(0), 14, gen)
    out = embedder(points, mask)
    assert out.shape == (len(COUNTS), embedder.out_dim) and torch.isfinite(out).all()
    for _ in range(2):
        shuffled, shuffled_mask, _ = permute_slots(points, mask, gen)
        torch.testing.assert_close(embedder(shuffled, shuffled_mask), out, **TOL)


def test_embedder_padding_invariance(embedder: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(4)
    pops = populations(1)
    tight = torch.nn.utils.rnn.pad_sequence(pops, batch_first=True)
    ones = [torch.ones(len(p), dtype=torch.bool) for p in pops]
    tight_mask = torch.nn.utils.rnn.pad_sequence(ones, batch_first=True)
    reference = embedder(tight, tight_mask)
    padding = tight.shape[1] - min(COUNTS)
    for width in (tight.shape[1] + padding, tight.shape[1] + 2 * padding):
        points, mask = layout(pops, width, gen)
        torch.testing.assert_close(embedder(points, mask), reference, **TOL)
    # a batch without padding: mask=None and an all-True mask agree
    full = torch.randn(2, 6, DIM, generator=gen)
    torch.testing.assert_close(embedder(full), embedder(full, torch.ones(2, 6, dtype=torch.bool)))


def test_embedder_batch_independence_and_sensitivity(embedder: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(5)
    pops = populations(2)
    points, mask = layout(pops, 13, gen)
    out = embedder(points, mask)
    changed = points.clone()
    changed[1] = torch.randn(13, DIM, generator=gen) * 2 + 1  # another population 1
    out_changed = embedder(changed, mask)
    torch.testing.assert_close(out_changed[[0, 2, 3]], out[[0, 2, 3]], **TOL)
    relative = (out_changed[1] - out[1]).norm() / out[1].norm()
    assert relative > 1e-3, f"embedding barely moved: relative change {relative:.2e}"
    # population 3 on its own
    torch.testing.assert_close(embedder(pops[3][None]), out[3:4], **TOL)


def test_embedder_gradients_reach_every_parameter(embedder: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(6)
    points, mask = layout(populations(3), 14, gen)
    weights = torch.randn(len(COUNTS), embedder.out_dim, generator=gen)
    (embedder(points, mask) * weights).sum().backward()
    grads = [p.grad for p in embedder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    nonzero = sum(bool(g.abs().sum() > 0) for g in grads)
    assert nonzero > 0.8 * len(grads), f"only {nonzero}/{len(grads)} parameters have gradient"


def test_gcn_embedding_has_unit_norm() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    points, mask = layout(populations(4), 12, gen)
    out = GCNEmbedder(DIM, hidden=16, out_dim=8, layers=2, k=3)(points, mask)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(len(COUNTS)))
    raw = GCNEmbedder(DIM, hidden=16, out_dim=8, layers=2, k=3, normalize=False)(points, mask)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(COUNTS)))


def test_embedder_errors() -> None:
    with pytest.raises(ValueError, match="pool must be one of"):
        DeepSetsEmbedder(DIM, pool="median")
    with pytest.raises(ValueError, match="hidden must be divisible by heads"):
        AttentionEmbedder(DIM, hidden=30, heads=4)
    with pytest.raises(ValueError, match="layers must be >= 1"):
        GCNEmbedder(DIM, layers=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        GCNEmbedder(DIM, k=0)
    for model in (GCNEmbedder(DIM), DeepSetsEmbedder(DIM), AttentionEmbedder(DIM)):
        with pytest.raises(ValueError, match="points must have 3 coordinates"):
            model(torch.randn(2, 5, 2))
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[1] = False
        with pytest.raises(ValueError, match=r"populations \[1\] as all padding"):
            model(torch.randn(2, 5, DIM), mask)
