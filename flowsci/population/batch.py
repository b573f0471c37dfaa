"""Padded batches of populations: (B, N, d) points with a (B, N) bool mask (True = a real point).

Padding positions may sit anywhere along N; every function here reads only the valid points,
so results do not depend on how much padding there is or where it is. ``mask=None`` means
that every point is real.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_points(points: torch.Tensor, name: str = "points") -> None:
    """Raise a ValueError unless ``points`` is a (B, N, d) tensor."""
    if not isinstance(points, torch.Tensor) or points.ndim != 3:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{name} must be a (B, N, d) tensor, got {shape}")


def check_mask(mask: torch.Tensor | None, batch: int, n: int, name: str = "mask") -> None:
    """Raise a ValueError unless ``mask`` is None or a (batch, n) bool tensor whose every row
    holds at least one valid point."""
    if mask is None:
        if n < 1:
            raise ValueError(f"the populations are empty (N = 0); {name} is None")
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (batch, n):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor of shape ({batch}, {n}), got {got}")
    empty = (~mask.any(1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"{name} marks no valid point in population(s) {empty.tolist()}; "
                         "every population needs at least one point")


def pad_populations(clouds: Sequence[torch.Tensor], n_max: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack clouds (n_i, d) into points (B, N, d), zero-padded at the end, and mask (B, N).

    N = ``n_max`` when given (every cloud must fit), else max n_i. Points keep the dtype
    and device of the first cloud.
    """
    if len(clouds) == 0:
        raise ValueError("clouds is empty; pass at least one (n_i, d) tensor")
    for i, cloud in enumerate(clouds):
        if not isinstance(cloud, torch.Tensor) or cloud.ndim != 2 or cloud.shape[0] < 1:
            shape = tuple(cloud.shape) if isinstance(cloud, torch.Tensor) else type(cloud).__name__
            raise ValueError(f"clouds[{i}] must be a non-empty (n_i, d) tensor, got {shape}")
    d = clouds[0].shape[1]
    dims = sorted({c.shape[1] for c in clouds})
    if len(dims) > 1:
        raise ValueError(f"clouds must share the point dimension d; got d in {dims}")
    largest = max(c.shape[0] for c in clouds)
    if n_max is None:
        n_max = largest
    elif not (isinstance(n_max, int) and n_max >= largest):
        raise ValueError(f"n_max must be an integer >= the largest cloud ({largest} points), got {n_max!r}")
    first = clouds[0]
    points = torch.zeros(len(clouds), n_max, d, dtype=first.dtype, device=first.device)
    mask = torch.zeros(len(clouds), n_max, dtype=torch.bool, device=first.device)
    for b, cloud in enumerate(clouds):
        points[b, :cloud.shape[0]] = cloud
        mask[b, :cloud.shape[0]] = True
    return points, mask


def unpad(points: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    """The valid points of each population, (n_b, d) each, in their stored order."""
    check_points(points)
    check_mask(mask, points.shape[0], points.shape[1])
    if mask is None:
        return list(points.unbind(0))
    return [p[m] for p, m in zip(points, mask)]


def population_sizes(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the number of valid points of each population; mask: (B, N) bool."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (B, N) bool tensor, got {got}")
    return mask.sum(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, *F) mean of values (B, N, *F) over the valid points of each population.

    Padded entries are never read (they may hold NaN or inf).
    """
    if not isinstance(values, torch.Tensor) or values.ndim < 2:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"values must be a (B, N, *F) tensor, got {shape}")
    check_mask(mask, values.shape[0], values.shape[1])
    if mask is None:
        return values.mean(1)
    keep = mask.reshape(*mask.shape, *[1] * (values.ndim - 2))
    total = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(1)
    count = mask.sum(1).to(values.dtype).reshape(-1, *[1] * (values.ndim - 2))
    return total / count


def sample_indices(mask: torch.Tensor | None, m: int, n_points: int | None = None,
                   generator: torch.Generator | None = None, *, batch_size: int | None = None
                   ) -> torch.Tensor:
    """(B, m) long positions: m draws per population, uniform with replacement over its valid points.

    Padding-invariant: draw u = rand(B, m) (float64) and take the floor(u n_b)-th valid
    position in stored order, so with the same generator state the selected *points* are
    the same whatever the padding. ``mask=None`` (every point real) needs ``n_points`` (N)
    and ``batch_size`` (B).
    """
    if not (isinstance(m, int) and m >= 1):
        raise ValueError(f"m must be an integer >= 1 (draws per population), got {m!r}")
    if mask is None:
        if not (isinstance(n_points, int) and n_points >= 1):
            raise ValueError("with mask=None, n_points must be the population size "
                             f"(int >= 1), got {n_points!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"with mask=None, batch_size must be the number of populations (int >= 1), "
                             f"got {batch_size!r}")
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(batch_size, m, generator=generator, dtype=torch.float64, device=device)
        return (u * n_points).long().clamp_max(n_points - 1)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a (B, N) bool tensor, got shape {tuple(mask.shape)}")
    check_mask(mask, mask.shape[0], mask.shape[1])
    sizes = mask.sum(1, keepdim=True)
    u = torch.rand(mask.shape[0], m, generator=generator, dtype=torch.float64, device=mask.device)
    rank = (u * sizes).long().minimum(sizes - 1)                 # 0-based rank among valid points
    seen = mask.long().cumsum(1)                                 # valid points up to each position
    return torch.searchsorted(seen, rank + 1)                    # first position with rank + 1 seen


def gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, m, d): points (B, N, d) at the positions index (B, m) of their own population."""
    check_points(points)
    if not isinstance(index, torch.Tensor) or index.ndim != 2 or index.shape[0] != points.shape[0]:
        shape = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"index must be a ({points.shape[0]}, m) long tensor, got {shape}")
    return torch.gather(points, 1, index.unsqueeze(-1).expand(-1, -1, points.shape[2]))
