"""The observation graph: the Delaunay triangulation of the observed points in the plane.

The triangulation is planar (no periodic wrap): points near opposite sides of the unit torus are not
joined. Grid points are co-circular in groups of four (degenerate ties); Qhull still returns a valid
triangulation, one of the equally valid ones, deterministically for a given input.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError


def delaunay_graph(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Delaunay graph of points in the plane.

    positions (N, 2) float -> (edge_index (2, E) long, triangles (T, 3) long).
    edge_index holds every side of every triangle in both directions, once, without self-loops,
    sorted by (row 0, row 1); row 0 is the message source, row 1 the target (torch_geometric's
    ``source_to_target``). triangles lists each triangle's vertices counter-clockwise.
    Both live on the device of ``positions``.
    """
    if positions.dim() != 2 or positions.shape[1] != 2 or not positions.is_floating_point():
        raise ValueError(f"positions must be a float tensor of shape (N, 2), got shape "
                         f"{tuple(positions.shape)} and dtype {positions.dtype}")
    n = positions.shape[0]
    if n < 3:
        raise ValueError(f"positions needs at least 3 points for a triangulation, got {n}")
    points = positions.detach().cpu().double().numpy()
    if not np.isfinite(points).all():
        raise ValueError("positions must be finite")
    try:
        simplices = Delaunay(points).simplices
    except QhullError as error:
        raise ValueError(f"positions are degenerate (all collinear or coincident): no triangulation "
                         f"of the {n} points exists ({str(error).splitlines()[0]})") from error
    missing = np.setdiff1d(np.arange(n), simplices)
    if missing.size:
        raise ValueError(f"positions holds duplicate points: points {missing[:10].tolist()} coincide "
                         f"with others and are not vertices of the triangulation")
    a, b, c = (points[simplices[:, k]] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    simplices = np.where((cross < 0)[:, None], simplices[:, [0, 2, 1]], simplices)
    triangles = torch.as_tensor(simplices, dtype=torch.long)
    sides = torch.cat([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    sides = torch.cat([sides, sides.flip(1)])
    keys = torch.unique(sides[:, 0] * n + sides[:, 1])  # sorted ascending: by source, then target
    edge_index = torch.stack([keys // n, keys % n])
    return edge_index.to(positions.device), triangles.to(positions.device)
