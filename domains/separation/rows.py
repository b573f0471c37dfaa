"""A Dataset of rows that share tensors: each row picks an entry of every table by its own index.

Separation rows share their mixture (two to four rows per mixture, one per voice present), so the
mixture features are stored once and indexed instead of copied per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import Dataset


class IndexedRows(Dataset):
    """Item i is ``{name: table[index[i]]}`` for ``tables = {name: (table (M, ...), index (R,))}``;
    an index of None means the table has one entry per row."""

    def __init__(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]):
        if not tables:
            raise ValueError("IndexedRows needs at least one table")
        lengths = {name: len(table if index is None else index) for name, (table, index) in tables.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"every table needs one entry (or index) per row, got {lengths}")
        for name, (table, index) in tables.items():
            if index is not None and len(index) and (index.min() < 0 or index.max() >= len(table)):
                raise ValueError(f"index of {name!r} outside its table of {len(table)} entries")
        self.tables = dict(tables)
        self._n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._n

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return {name: table[rows if index is None else index[rows]]
                for name, (table, index) in self.tables.items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.__getitems__([i]).items()}
