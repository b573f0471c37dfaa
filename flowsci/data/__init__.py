"""The flowsci HDF5 data schema (modelled on The Well): write, validate, load; torch Datasets.

``schema`` holds the constants and types, ``writer`` writes a data set, ``reader`` validates and
loads one, ``datasets`` wraps splits as torch Datasets, and ``lifecycle`` makes a domain's data
file on first use and refuses one made with other settings; ``data/README.md`` documents the
schema. Import the public names from here (``from flowsci.data import write_dataset, DataSplits``).
"""

from flowsci.data.datasets import DataSplits, InMemoryDataset, LazyH5Dataset
from flowsci.data.lifecycle import data_file, ensure_data
from flowsci.data.reader import default_data_dir, load_split, read_meta, validate
from flowsci.data.schema import (
    BC_TYPES,
    FIELD_GROUPS,
    GRID_TYPES,
    JSON_ATTRS,
    RESERVED_ATTRS,
    ROOT_GROUPS,
    SCHEMA_VERSION,
    SPLIT_GROUPS,
    BoundaryCondition,
    DatasetMeta,
    FieldInfo,
    PathLike,
)
from flowsci.data.writer import write_dataset

__all__ = [
    "BC_TYPES",
    "FIELD_GROUPS",
    "GRID_TYPES",
    "JSON_ATTRS",
    "RESERVED_ATTRS",
    "ROOT_GROUPS",
    "SCHEMA_VERSION",
    "SPLIT_GROUPS",
    "BoundaryCondition",
    "DataSplits",
    "DatasetMeta",
    "FieldInfo",
    "InMemoryDataset",
    "LazyH5Dataset",
    "PathLike",
    "data_file",
    "default_data_dir",
    "ensure_data",
    "load_split",
    "read_meta",
    "validate",
    "write_dataset",
]
