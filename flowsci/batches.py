"""The batch plan of a run: batch k depends only on (seed, k), so that a resumed run sees the
same batches as an uninterrupted one, in one process and under torchrun."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from flowsci.distributed import DistContext
from flowsci.errors import ConfigError


class BatchPlan:
    """Per-process batch indices; batch k of the run depends only on (seed, k).

    Uses :class:`DistributedSampler` (one replica in a single process), so that the union of
    the processes' k-th batches is the k-th batch of a single process with the same global
    batch size.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, ctx: DistContext):
        if batch_size % ctx.world_size:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the number of "
                              f"processes ({ctx.world_size})")
        self.per_rank = batch_size // ctx.world_size
        self.sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.per_epoch = len(self.sampler) // self.per_rank
        if self.per_epoch == 0:
            raise ConfigError(f"train.batch_size={batch_size} is larger than the training set "
                              f"({len(dataset)} samples)")
        self._epoch, self._order = -1, []

    def batch(self, k: int) -> list[int]:
        """The indices of this process's share of batch ``k`` (0-based)."""
        epoch, offset = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order[offset * self.per_rank:(offset + 1) * self.per_rank]


class PlannedBatches(Sampler[list[int]]):
    """Batches ``start, ..., stop - 1`` of a :class:`BatchPlan`, as a DataLoader batch sampler."""

    def __init__(self, plan: BatchPlan, start: int, stop: int):
        self.plan, self.start, self.stop = plan, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        return (self.plan.batch(k) for k in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def collate(items: Any) -> dict[str, torch.Tensor]:
    """A batch dict from ``__getitems__`` passes through; a list of item dicts is stacked."""
    if isinstance(items, dict):
        return items
    return torch.utils.data.default_collate(items)
