"""torch Datasets over data files: ``InMemoryDataset``, ``LazyH5Dataset`` and the ``DataSplits`` bundle.

``InMemoryDataset`` holds tensors with a common first dimension (from a file's split or built
directly); ``LazyH5Dataset`` reads one split from disk on demand and is safe in DataLoader
worker processes; ``DataSplits`` is what a domain hands the trainer: its train, val and test
Datasets and, when they came from a file, that file's metadata. Both Dataset classes return
``{name: tensor}`` items and batch whole index lists through ``__getitems__``.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from flowsci.data.reader import load_split, member_paths, reading_errors, validate
from flowsci.data.schema import DatasetMeta, PathLike, data_error


class InMemoryDataset(Dataset):
    """Tensors with a common first dimension N; item i is ``{name: tensor[i]}``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        if not tensors:
            raise ValueError("InMemoryDataset needs at least one tensor")
        for name, value in tensors.items():
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                raise TypeError(f"tensors[{name!r}] must be a tensor with a sample axis (ndim >= 1), "
                                f"got {type(value).__name__}")
        lengths = {name: value.shape[0] for name, value in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"all tensors need the same first dimension N, got {lengths}")
        self.tensors = dict(tensors)
        self._n = next(iter(lengths.values()))

    @classmethod
    def from_file(cls, path: PathLike, split: str, fields: Sequence[str] | None = None) -> InMemoryDataset:
        """Load one split of a data file into memory."""
        return cls(load_split(path, split, fields))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.tensors.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch ``{name: tensor (B, ...)}``; DataLoader calls this instead of B ``__getitem__``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return {name: value[index] for name, value in self.tensors.items()}


class LazyH5Dataset(Dataset):
    """One split of a data file read from disk on demand; works in DataLoader worker processes.

    The HDF5 handle is opened on first access in each process and is never pickled.
    """

    def __init__(self, path: PathLike, split: str, fields: Sequence[str] | None = None):
        self.meta = validate(path)
        self.split = split
        self._members = member_paths(self.meta, split, fields)
        self._n = self.meta.splits[split]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():  # a forked worker opens its own handle
            self._file, self._pid = h5py.File(self.meta.path, "r"), os.getpid()
        return self._file

    def _index(self, index: int) -> int:
        i = operator.index(index)
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} is out of range for split '{self.split}' with {self._n} samples")
        return i % self._n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = self._index(index)
        with reading_errors(self.meta.path):
            f = self._h5()
            return {name: torch.from_numpy(np.asarray(f[p][i])) for name, p in self._members.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch ``{name: tensor (B, ...)}``, read in one sorted pass per array."""
        index = np.array([self._index(i) for i in indices], dtype=np.int64)
        unique, inverse = np.unique(index, return_inverse=True)
        with reading_errors(self.meta.path):
            f = self._h5()
            return {name: torch.from_numpy(f[p][unique][inverse]) for name, p in self._members.items()}


@dataclass
class DataSplits:
    """The train/val/test Datasets of a domain, with the file's metadata when it came from one."""

    train: Dataset
    val: Dataset
    test: Dataset
    meta: DatasetMeta | None = None

    @classmethod
    def from_file(cls, path: PathLike, *, lazy: bool = False,
                  fields: Sequence[str] | None = None) -> DataSplits:
        """The splits 'train', 'val' and 'test' of a data file, in memory or read lazily."""
        meta = validate(path)
        missing = [s for s in ("train", "val", "test") if s not in meta.splits]
        if missing:
            raise data_error(meta.path, "/splits", f"missing split(s) {missing}; "
                                                   f"the file has {', '.join(meta.splits)}")
        make = LazyH5Dataset if lazy else InMemoryDataset.from_file
        return cls(*(make(meta.path, s, fields) for s in ("train", "val", "test")), meta=meta)
