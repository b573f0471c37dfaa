"""sparse_flow models: the Delaunay graph, the Fourier features, System 1 + System 2, the
autoregressive GNN baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from flowsci_domains.sparse_flow.continuous_model import ContinuousObserverModel
from flowsci_domains.sparse_flow.gnn import AutoregressiveGNN, GraphLayer
from flowsci_domains.sparse_flow.graph import delaunay_graph
from flowsci_domains.sparse_flow.observer import FourierFeatures


def _grid_subset(n: int, count: int, seed: int) -> torch.Tensor:
    """count distinct points of the n x n grid on the unit torus, (count, 2)."""
    index = torch.randperm(n * n, generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return torch.stack([index // n, index % n], dim=1).double() / n


@pytest.mark.parametrize("kind", ["random", "grid_subset", "full_grid"])
def test_delaunay_graph_is_a_planar_triangulation(kind):
    if kind == "random":
        positions = torch.rand(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    elif kind == "grid_subset":
        positions = _grid_subset(16, 60, seed=1)
    else:
        positions = _grid_subset(8, 64, seed=2)  # every point of an 8 x 8 grid: co-circular ties
    edge_index, triangles = delaunay_graph(positions)
    n = positions.shape[0]
    assert edge_index.dtype == torch.long and triangles.dtype == torch.long
    assert set(edge_index.flatten().tolist()) == set(range(n))
    pairs = list(map(tuple, edge_index.T.tolist()))
    assert pairs == sorted(set(pairs))                      # unique and sorted
    assert all(s != r for s, r in pairs)                    # no self-loops
    assert set(pairs) == {(r, s) for s, r in pairs}         # symmetric
    sides = {frozenset(side) for tri in triangles.tolist() for side in ((tri[0], tri[1]), (tri[1], tri[2]),
                                                                         (tri[2], tri[0]))}
    assert sides == {frozenset(p) for p in pairs}           # the edges are the triangles' sides
    assert n - len(pairs) // 2 + triangles.shape[0] == 1    # Euler: V - E + F = 1 (outer face excluded)
    p = positions.numpy()[triangles.numpy()]                # (T, 3, 2)
    cross = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
             - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
    assert (cross > 0).all()                                # counter-clockwise, none degenerate
    np.testing.assert_allclose(cross.sum() / 2, ConvexHull(positions.numpy()).volume, rtol=1e-12)


def test_delaunay_empty_circumcircles():
    points = np.random.default_rng(3).random((50, 2))
    _, triangles = delaunay_graph(torch.from_numpy(points))
    for tri in triangles.tolist():
        a, b, c = points[tri]
        # circumcentre: |o - a|^2 = |o - b|^2 = |o - c|^2, a 2 x 2 linear system
        o = np.linalg.solve(2 * np.array([b - a, c - a]), [b @ b - a @ a, c @ c - a @ a])
        radius2 = np.sum((a - o) ** 2)
        others = np.delete(points, tri, axis=0)
        assert (np.sum((others - o) ** 2, axis=1) > radius2 * (1 + 1e-9)).all()


def test_delaunay_rejects_degenerate_input():
    with pytest.raises(ValueError, match="collinear"):
        delaunay_graph(torch.tensor([[0.0, 0.0], [0.25, 0.25], [0.5, 0.5], [0.75, 0.75]]))
    with pytest.raises(ValueError, match="at least 3"):
        delaunay_graph(torch.tensor([[0.0, 0.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="duplicate"):
        delaunay_graph(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        delaunay_graph(torch.zeros(5, 3))


def test_fourier_features_periodic_in_space_not_in_time():
    torch.manual_seed(0)
    features = FourierFeatures(dim=16, max_frequency=6, time_frequencies=8).double()
    with torch.no_grad():
        for parameter in features.parameters():
            parameter.normal_()
    coords = torch.rand(200, 3, dtype=torch.float64)
    reference = features(coords)
    for shift in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-2.0, 3.0, 0.0]):
        shifted = features(coords + torch.tensor(shift, dtype=torch.float64))
        torch.testing.assert_close(shifted, reference, atol=1e-5, rtol=0)
    later = features(coords + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert (later - reference).abs().max() > 0.1
    # no two spatial frequencies are equal or opposite (the half-plane set is not redundant)
    pairs = features.spatial_frequencies.tolist()
    assert len({tuple(p) for p in pairs} | {(-a, -b) for a, b in pairs}) == 2 * len(pairs) == 13 ** 2 - 1


def _problem(n: int = 24, batch: int = 2, queries: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    positions = _grid_subset(16, n, seed).float()
    edge_index, _ = delaunay_graph(positions)
    values = torch.randn(batch, n, generator=g)
    query = torch.rand(batch, queries, 3, generator=g)
    return values, positions, edge_index, query


def test_continuous_model_is_invariant_to_node_permutation():
    torch.manual_seed(0)
    model = ContinuousObserverModel(latent=16, gnn_density=2, heads=4, max_frequency=3, time_frequencies=4,
                                    mean=0.5, std=2.0).eval()
    values, positions, edge_index, queries = _problem()
    times = torch.tensor([0.0, 0.25, 0.5])
    perm = torch.randperm(values.shape[1], generator=torch.Generator().manual_seed(1))
    relabel = torch.empty_like(perm)
    relabel[perm] = torch.arange(perm.numel())              # old index -> new index
    with torch.no_grad():
        prediction, forecast = model(values, positions, edge_index, times, queries)
        prediction_p, forecast_p = model(values[:, perm], positions[perm], relabel[edge_index], times,
                                         queries)
        prediction_other, _ = model(values.flip(0), positions, edge_index, times, queries)
    assert prediction.shape == (2, 7) and forecast.shape == (2, 3, 24)
    torch.testing.assert_close(prediction_p, prediction, atol=1e-5, rtol=0)
    torch.testing.assert_close(forecast_p, forecast[:, :, perm], atol=1e-5, rtol=0)
    assert (prediction_other - prediction).abs().max() > 1e-4  # the prediction does depend on the values


def test_graph_layer_batched_matches_items_and_a_loop():
    torch.manual_seed(0)
    layer = GraphLayer(8)
    positions = _grid_subset(8, 15, seed=4).float()
    edge_index, _ = delaunay_graph(positions)
    h = torch.randn(3, 15, 8)
    e = torch.randn(edge_index.shape[1], 8)
    h_new, e_new = layer(h, e, edge_index)
    assert h_new.shape == (3, 15, 8) and e_new.shape == (3, edge_index.shape[1], 8)
    for b in range(3):
        h_b, e_b = layer(h[b], e, edge_index)
        torch.testing.assert_close(h_new[b], h_b, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(e_new[b], e_b, atol=1e-6, rtol=1e-6)
    # the incoming messages of node r are the updated edges s -> r, edge by edge
    h_0, e_0 = h[0], e
    incoming = torch.zeros(15, 8)
    for k, (s, r) in enumerate(edge_index.T.tolist()):
        updated = e_0[k] + layer.edge_mlp(torch.cat([h_0[s], h_0[r], e_0[k]]))
        torch.testing.assert_close(e_new[0, k], updated, atol=1e-6, rtol=1e-6)
        incoming[r] += updated
    torch.testing.assert_close(h_new[0], h_0 + layer.node_mlp(torch.cat([h_0, incoming], -1)),
                               atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = ContinuousObserverModel(latent=8, gnn_density=2, heads=4, max_frequency=2, time_frequencies=3,
                                    gru_layers=2)
    values, positions, edge_index, queries = _problem(n=12, queries=5)
    prediction, forecast = model(values, positions, edge_index, torch.tensor([0.0, 0.5, 1.0]), queries)
    (prediction.square().mean() + forecast.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_autoregressive_rollout():
    torch.manual_seed(0)
    model = AutoregressiveGNN(latent=8, gnn_density=2, mean=0.3, std=1.7)
    values, positions, edge_index, _ = _problem(n=12, batch=3)
    with torch.no_grad():
        states = model.rollout(values, positions, edge_index, steps=4)
        assert states.shape == (3, 5, 12)
        current = values
        for k in range(5):
            torch.testing.assert_close(states[:, k], current, atol=1e-6, rtol=1e-6)
            current = model(current, positions, edge_index)
        assert (states[:, 1] - values).abs().max() > 1e-4
        model.system1.decoder[-1].weight.zero_()
        model.system1.decoder[-1].bias.zero_()
        torch.testing.assert_close(model(values, positions, edge_index), values)  # residual: zero update


def test_models_reject_bad_input():
    values, positions, edge_index, queries = _problem(n=12)
    with pytest.raises(ValueError, match="std"):
        ContinuousObserverModel(std=0.0)
    with pytest.raises(ValueError, match="heads"):
        ContinuousObserverModel(latent=10, heads=4)
    model = ContinuousObserverModel(latent=8, heads=2, max_frequency=1, time_frequencies=1)
    with pytest.raises(ValueError, match="positions"):
        model(values, positions[:5], edge_index, torch.zeros(2), queries)
    with pytest.raises(ValueError, match="edge_index"):
        model(values, positions, edge_index + 100, torch.zeros(2), queries)
    with pytest.raises(ValueError, match="queries"):
        model(values, positions, edge_index, torch.zeros(2), queries[..., :2])
