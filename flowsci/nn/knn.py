"""k-nearest-neighbour graphs within each population of a padded batch of point clouds.

A batch of populations is padded: points (B, N, d) and mask (B, N) bool (True = real point;
None = all real). Nodes are the flattened ids b * N + i. The edge layout follows
torch_geometric's ``knn_graph`` with its default ``flow="source_to_target"``: row 0 holds the
neighbours (message sources), row 1 the centres (message targets), so a MessagePassing layer
aggregates at each point over its k nearest neighbours.
"""

from __future__ import annotations

import torch

MAX_DISTANCE_ENTRIES = 20_000_000  # pairwise distances held at once; larger batches are chunked


def population_mask(points: torch.Tensor, mask: torch.Tensor | None,
                    allow_empty: bool = True) -> torch.Tensor:
    """Check a padded batch of populations and return its mask.

    points: (B, N, d) float; mask: (B, N) bool (True = real point) or None (all real)
    -> mask (B, N) bool. With ``allow_empty=False`` every population needs a real point.
    """
    if points.dim() != 3 or not points.is_floating_point():
        raise ValueError(f"points must be a float tensor of shape (B, N, d), got shape "
                         f"{tuple(points.shape)} and dtype {points.dtype}")
    if mask is None:
        mask = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    elif mask.dtype != torch.bool or mask.shape != points.shape[:2]:
        raise ValueError(f"mask must be a bool tensor of shape (B, N) = {tuple(points.shape[:2])}, "
                         f"got shape {tuple(mask.shape)} and dtype {mask.dtype}")
    if not allow_empty and not mask.any(dim=1).all():
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"every population needs at least one real point; mask marks "
                         f"populations {empty} as all padding")
    return mask


def _nearest(dist: torch.Tensor, k: int) -> torch.Tensor:
    """dist (b, N, N) -> indices (b, N, k) of the k smallest entries of each row, ordered by
    (distance, index): ties go to the lower index, whatever order topk returns them in."""
    kth = dist.topk(k, dim=-1, largest=False).values[..., -1:]  # (b, N, 1)
    n = dist.shape[-1]
    # rank key: the points closer than the k-th distance (fewer than k) first, then the points
    # at the k-th distance by index; the k smallest keys are the neighbours
    key = torch.arange(n, dtype=dist.dtype, device=dist.device).expand_as(dist)
    key = key.masked_fill(dist > kth, n).masked_fill_(dist < kth, -1)
    index = key.topk(k, dim=-1, largest=False).indices.sort(dim=-1).values
    return index.gather(-1, dist.gather(-1, index).sort(dim=-1, stable=True).indices)


def knn_graph(points: torch.Tensor, mask: torch.Tensor | None, k: int, loop: bool = False, *,
              max_entries: int = MAX_DISTANCE_ENTRIES) -> torch.Tensor:
    """Edges from each real point's k nearest real points in the same population.

    points: (B, N, d) float; mask: (B, N) bool or None -> edge_index (2, E) long over node ids
    b * N + i, row 0 = neighbour (source), row 1 = centre (target). Self is excluded unless
    ``loop``; a centre with fewer than k candidates gets all of them. Edges are grouped by
    centre (ascending id) and ordered by distance; equal distances go to the lower index.
    Distances are held for whole populations, at most ``max_entries`` at a time (but always at
    least one population).
    """
    mask = population_mask(points, mask)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not torch.isfinite(points[mask]).all():
        raise ValueError("points must be finite at the real (mask = True) positions")
    batch, n, _ = points.shape
    device = points.device
    chunk = max(1, max_entries // max(n * n, 1))
    not_self = ~torch.eye(n, dtype=torch.bool, device=device)
    centres = torch.arange(n, device=device)[None, :, None]
    edges = [torch.empty(2, 0, dtype=torch.long, device=device)]
    with torch.no_grad():
        for start in range(0, batch, chunk):
            # at least float32: distances, and indices as keys in _nearest, stay exact
            p = points[start:start + chunk].to(torch.promote_types(points.dtype, torch.float32))
            m = mask[start:start + chunk]
            allowed = m[:, :, None] & m[:, None, :]
            if not loop:
                allowed &= not_self
            # the direct (non-matmul) distance is computed per pair, independent of positions
            dist = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
            dist = dist.masked_fill(~allowed, float("inf"))
            nearest = _nearest(dist, min(k, n))
            keep = allowed.gather(-1, nearest)
            offset = (torch.arange(start, start + p.shape[0], device=device) * n)[:, None, None]
            sources = nearest + offset
            targets = (centres + offset).expand_as(nearest)
            edges.append(torch.stack([sources[keep], targets[keep]]))
    return torch.cat(edges, dim=1)
