"""The interpolation baseline of the sparse_flow domain (cubic in space on the torus, linear in time).

Oracles: a closed-form smooth periodic field (error against it, its ordering across methods and densities),
scipy.interpolate.griddata on the explicitly tiled points, non-periodic griddata near the box edges,
numpy.interp in time, and exactness at the observed points and frames.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.interpolate import griddata

from flowsci_domains.sparse_flow.interpolation import (
    interpolate_space,
    interpolate_time,
    interpolate_trajectories,
)
from flowsci_domains.sparse_flow.observations import grid_positions

N_GRID = 64


def field(p: np.ndarray) -> np.ndarray:
    """A smooth periodic field on the unit torus at points (M, 2)."""
    return np.sin(2 * math.pi * p[:, 0]) * np.cos(2 * math.pi * p[:, 1]) + 0.3 * np.cos(4 * math.pi * p[:, 1])


def observed(density: float, n: int = N_GRID, seed: int = 0) -> np.ndarray:
    """A random sorted subset (N,) of the flat grid indices."""
    return np.sort(np.random.default_rng(seed).choice(n * n, int(density * n * n), replace=False))


def edge_band(n: int = N_GRID, width: int = 2) -> np.ndarray:
    """(n, n) mask of the grid points within ``width`` rows/columns of the box's edges (corners included)."""
    mask = np.zeros((n, n), dtype=bool)
    mask[:width] = mask[-width:] = True
    mask[:, :width] = mask[:, -width:] = True
    return mask


def interpolate_smooth(density: float, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The smooth field interpolated from the grid points ``observed(density)``: (result (n, n), truth
    (n, n), observed indices)."""
    grid = grid_positions(N_GRID, torch.float64).numpy()
    obs = observed(density)
    out = interpolate_space(torch.tensor(field(grid[obs]))[None], torch.tensor(grid[obs]), N_GRID, method)
    return out[0].numpy(), field(grid).reshape(N_GRID, N_GRID), obs


def rel_error(out: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(out - truth) / np.linalg.norm(truth))


def test_grid_points_follow_the_domain_convention() -> None:
    grid = grid_positions(4, torch.float64).numpy().reshape(4, 4, 2)
    assert np.array_equal(grid[2, 3], [0.5, 0.75]) and np.array_equal(grid[3, 0], [0.75, 0.0])


def test_cubic_beats_linear_and_error_falls_with_density() -> None:
    densities = (0.05, 0.1, 0.25)
    errors = {m: [rel_error(*interpolate_smooth(d, m)[:2]) for d in densities] for m in ("linear", "cubic")}
    assert all(c < lin for c, lin in zip(errors["cubic"], errors["linear"])), errors
    for method, errs in errors.items():
        assert all(a > b for a, b in zip(errs, errs[1:])), (method, errs)
    assert errors["cubic"][-1] < 5e-3, errors


@pytest.mark.parametrize("method", ["linear", "cubic", "nearest"])
def test_exact_at_observed_points_and_no_artefacts_at_the_edges(method: str) -> None:
    out, truth, obs = interpolate_smooth(0.1, method)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.reshape(-1)[obs], truth.reshape(-1)[obs], rtol=0, atol=1e-12)
    err, edge = np.abs(out - truth), edge_band()
    assert err[edge].max() <= 1.5 * err[~edge].max(), (err[edge].max(), err[~edge].max())


def test_periodic_tiling_matters_near_the_edges() -> None:
    """Non-periodic cubic griddata leaves NaN outside the hull and is far worse on the edge band."""
    out, truth, obs = interpolate_smooth(0.1, "cubic")
    grid = grid_positions(N_GRID, torch.float64).numpy()
    plain = griddata(grid[obs], field(grid[obs]), grid, method="cubic").reshape(N_GRID, N_GRID)
    edge = edge_band()
    assert np.isnan(plain[edge]).any()
    finite = edge & np.isfinite(plain)
    assert np.abs(plain - truth)[finite].max() > 3 * np.abs(out - truth)[finite].max()


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_very_sparse_points_still_cover_the_box(method: str) -> None:
    """Three points: their images within the default margin cannot cover the box; no NaN nonetheless."""
    grid = grid_positions(16, torch.float64).numpy()
    obs = np.array([17, 90, 200])
    values = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    out = interpolate_space(values, torch.tensor(grid[obs]), 16, method)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(-1)[obs], values[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("method", "margin", "atol"), [
    ("linear", 1.0, 1e-12), ("cubic", 1.0, 1e-6), ("nearest", 1.0, 0.0),
    # linear on the Delaunay triangulation is local: the far images change no triangle inside the box
    ("linear", 0.25, 1e-12), ("nearest", 0.25, 0.0),
])
def test_batched_call_equals_separate_griddata_calls(method: str, margin: float, atol: float) -> None:
    """Oracle: griddata per field on the points and all 8 periodic images (generic positions, so the
    triangulation is unique; cubic agrees to the tolerance of Clough-Tocher's iterative gradients)."""
    n, batch = 32, 4
    rng = np.random.default_rng(1)
    positions = rng.random((150, 2))
    values = rng.standard_normal((batch, 150))
    tiled = np.concatenate([positions + np.array(s) for s in itertools.product((-1, 0, 1), repeat=2)])
    grid = grid_positions(n, torch.float64).numpy()
    expected = np.stack([griddata(tiled, np.tile(v, 9), grid, method=method).reshape(n, n) for v in values])
    out = interpolate_space(torch.tensor(values), torch.tensor(positions), n, method, margin)
    assert out.shape == (batch, n, n) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=atol)


def test_space_keeps_dtype_and_wraps_positions() -> None:
    """float32 in, float32 out; positions shifted by whole periods give the same field."""
    rng = np.random.default_rng(2)
    positions = rng.random((80, 2))
    values = torch.tensor(rng.standard_normal((2, 80)), dtype=torch.float32)
    out = interpolate_space(values, torch.tensor(positions), 16, "linear")
    shifted = interpolate_space(values, torch.tensor(positions + np.array([1.0, -3.0])), 16, "linear")
    assert out.dtype == torch.float32
    torch.testing.assert_close(shifted, out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("frames", [list(range(0, 21, 2)), [0, 3, 4, 9, 20]])
def test_time_is_exact_for_fields_linear_in_time(frames: list[int]) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 2, 1, 3, 4, generator=g, dtype=torch.float64)
    t = torch.arange(21, dtype=torch.float64).reshape(1, 21, 1, 1)
    observed_frames = torch.tensor(frames)
    values = a + b * observed_frames.double().reshape(1, -1, 1, 1)
    torch.testing.assert_close(interpolate_time(values, observed_frames, 21), a + b * t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("frames", [[2, 5, 6, 13], [0, 10, 20], [7]])
def test_time_agrees_with_numpy_interp(frames: list[int]) -> None:
    """Including the constant hold before the first and after the last observed frame."""
    values = torch.randn(3, len(frames), 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = interpolate_time(values, torch.tensor(frames), 21)
    assert out.shape == (3, 21, 5)
    for b, k in itertools.product(range(3), range(5)):
        expected = np.interp(np.arange(21), frames, values[b, :, k].numpy())
        np.testing.assert_allclose(out[b, :, k].numpy(), expected, rtol=0, atol=1e-12)


def test_trajectories_are_exact_in_space_and_linear_in_time_at_observed_points() -> None:
    """At the observed points the space step is exact, so every frame is numpy.interp of the observations;
    off them, the observed frames are the spatial interpolants of the frames."""
    n, n_frames, frames = 16, 9, [0, 2, 4, 6, 8]
    grid = grid_positions(n, torch.float64).numpy()
    obs = observed(0.25, n)
    rng = np.random.default_rng(3)
    values = torch.tensor(field(grid[obs]) * rng.standard_normal((2, len(frames), 1)) + rng.random((2, 5, 1)))
    out = interpolate_trajectories(values, torch.tensor(grid[obs]), torch.tensor(frames), n, n_frames)
    assert out.shape == (2, n_frames, n, n) and torch.isfinite(out).all()
    flat = out.reshape(2, n_frames, n * n)[:, :, obs].numpy()
    for b, p in itertools.product(range(2), range(len(obs))):
        expected = np.interp(np.arange(n_frames), frames, values[b, :, p].numpy())
        np.testing.assert_allclose(flat[b, :, p], expected, rtol=0, atol=1e-12)
    for k, frame in enumerate(frames):
        space = interpolate_space(values[:, k], torch.tensor(grid[obs]), n)
        torch.testing.assert_close(out[:, frame], space, rtol=0, atol=1e-12)


POS = torch.rand(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
VALS = torch.zeros(2, 10, dtype=torch.float64)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: interpolate_space(VALS, POS, 8, method="quadratic"), "method"),
    (lambda: interpolate_space(VALS, POS, 0), "n must"),
    (lambda: interpolate_space(VALS, POS, 8, margin=0.0), "margin"),
    (lambda: interpolate_space(VALS[0], POS, 8), "values"),
    (lambda: interpolate_space(VALS.long(), POS, 8), "values"),
    (lambda: interpolate_space(VALS, POS[:9], 8), "positions"),
    (lambda: interpolate_space(VALS, POS[:, :1], 8), "positions"),
    (lambda: interpolate_space(VALS, torch.cat([POS[:9], POS[:1] + 1.0]), 8), "distinct"),
    (lambda: interpolate_space(VALS, torch.cat([POS[:9], POS[:1]]), 8), "distinct"),
    (lambda: interpolate_space(VALS, POS.clone().fill_(float("nan")), 8), "finite"),
    (lambda: interpolate_time(VALS, torch.tensor([0, 2]), 3), "frames"),
    (lambda: interpolate_time(VALS[:, :2], torch.tensor([2, 2]), 5), "frames"),
    (lambda: interpolate_time(VALS[:, :2], torch.tensor([0, 5]), 5), "frames"),
    (lambda: interpolate_time(VALS[:, :2], torch.tensor([0.0, 2.0]), 5), "frames"),
    (lambda: interpolate_time(VALS[:, :2], torch.tensor([0, 2]), 0), "n_frames"),
    (lambda: interpolate_trajectories(VALS, POS, torch.tensor([0]), 8, 3), "values"),
])
def test_bad_input_raises(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
