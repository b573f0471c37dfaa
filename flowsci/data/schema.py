"""The flowsci HDF5 data schema: its constants and types, and the checks the writer and reader share.

One file holds every split of a data set (modelled on The Well); ``data/README.md`` documents
the schema and its conventions. This module defines the names and types the layout below uses,
and the structural rules (root attrs, names, boundary conditions, field shapes, per-sample
scalars, one layout across splits) that ``writer`` applies before writing and ``reader``
applies when validating, so that both raise the same DataError for the same fault::

    /                              attrs flowsci_schema, dataset_name, n_spatial_dims, grid_type, user attrs
    /dimensions/<name>             1-D coordinates (time, x, y, ...)
    /boundary_conditions/<name>    attrs bc_type, associated_dims; optional datasets mask, values
    /scalars/<name>                0-d global parameters
    /splits/<split>/               attr n_samples
        t0_fields/<name>           (N, *dims)        attr dims
        t1_fields/<name>           (N, *dims, D)     attr dims
        t2_fields/<name>           (N, *dims, D, D)  attrs dims, symmetric, antisymmetric
        scalars/<name>             (N,)              per-sample scalars
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowsci.errors import DataError

SCHEMA_VERSION: int = 1
BC_TYPES = ("periodic", "wall", "open", "none")
GRID_TYPES = ("cartesian", "none")
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")  # index = tensor order
SPLIT_GROUPS = FIELD_GROUPS + ("scalars",)
ROOT_GROUPS = ("dimensions", "boundary_conditions", "scalars", "splits")
JSON_ATTRS = "flowsci_json_attrs"  # root attr listing the user attrs stored as JSON strings
RESERVED_ATTRS = ("flowsci_schema", "dataset_name", "n_spatial_dims", "grid_type", JSON_ATTRS)
NUMERIC_KINDS = "biufc"  # numpy dtype kinds: bool, int, uint, float, complex

PathLike = str | os.PathLike


@dataclass(frozen=True)
class FieldInfo:
    """One field: tensor order, names of its grid axes and its per-sample shape (*dims, D, ...)."""

    name: str
    order: int
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    symmetric: bool = False
    antisymmetric: bool = False


@dataclass(frozen=True, eq=False)
class BoundaryCondition:
    """A boundary condition on the dimensions ``associated_dims``; ``bc_type`` is one of BC_TYPES.

    ``mask`` and ``values`` are optional arrays; instances compare by identity (they hold arrays).
    """

    bc_type: str
    associated_dims: tuple[str, ...]
    mask: np.ndarray | None = None
    values: np.ndarray | None = None


@dataclass(eq=False)
class DatasetMeta:
    """Everything in a data file except the split arrays; compares by identity (it holds arrays)."""

    path: Path
    name: str
    n_spatial_dims: int
    grid_type: str
    fields: dict[str, FieldInfo]
    sample_scalars: tuple[str, ...]
    dimensions: dict[str, np.ndarray]
    boundary_conditions: dict[str, BoundaryCondition]
    scalars: dict[str, float]
    attrs: dict[str, Any]
    splits: dict[str, int]


@dataclass
class SplitLayout:
    """What one split holds; every split of a file must hold the same."""

    fields: dict[str, FieldInfo]
    scalars: tuple[str, ...]
    dtypes: dict[str, np.dtype]


# --- shared checks (writer and reader apply the same rules) -------------------------------


def data_error(path: Path, where: str, message: str) -> DataError:
    """The DataError for a fault at member ``where`` of the file ``path``."""
    return DataError(f"{path}: {where}: {message}")


def is_count(value: Any) -> bool:
    """Whether value is an integer >= 0 (numpy integers included, bool excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def check_root(path: Path, name: Any, n_spatial_dims: Any, grid_type: Any) -> None:
    """Check the root attrs dataset_name, n_spatial_dims and grid_type."""
    if not isinstance(name, str) or not name:
        raise data_error(path, "/", f"dataset_name must be a non-empty string, got {name!r}")
    if not is_count(n_spatial_dims):
        raise data_error(path, "/", "n_spatial_dims must be an integer >= 0 (0 for point data), "
                                    f"got {n_spatial_dims!r}")
    if grid_type not in GRID_TYPES:
        raise data_error(path, "/", f"grid_type {grid_type!r} is not valid; valid: {', '.join(GRID_TYPES)}")
    if grid_type == "cartesian" and n_spatial_dims == 0:
        raise data_error(path, "/", "grid_type 'cartesian' needs n_spatial_dims >= 1; "
                                    "use grid_type 'none' for point data")


def check_bc(path: Path, where: str, bc_type: str, associated_dims: tuple[str, ...],
             dimension_names: tuple[str, ...]) -> None:
    """Check a boundary condition's type and that its dims are coordinates of the file."""
    if bc_type not in BC_TYPES:
        raise data_error(path, where, f"bc_type {bc_type!r} is not valid; valid: {', '.join(BC_TYPES)}")
    unknown = [d for d in associated_dims if d not in dimension_names]
    if dimension_names and unknown:
        raise data_error(path, where, f"associated_dims names {unknown}, which are not in /dimensions "
                                      f"({', '.join(dimension_names)})")


def field_info(path: Path, where: str, name: str, order: Any, dims: tuple[str, ...],
               shape: tuple[int, ...], symmetric: bool, antisymmetric: bool,
               lengths: Mapping[str, int]) -> FieldInfo:
    """Check a field of full shape (N, *dims, D, ...) against its order, dims and the coordinates;
    returns its FieldInfo."""
    if not isinstance(order, int) or isinstance(order, bool) or order not in (0, 1, 2):
        raise data_error(path, where, f"tensor order {order!r} is not valid; "
                                      "valid: 0 (scalar), 1 (vector), 2 (tensor)")
    if len(set(dims)) != len(dims):
        raise data_error(path, where, f"dims {list(dims)} repeat a name")
    expected = 1 + len(dims) + order
    if len(shape) != expected:
        layout = ", ".join(["N", *dims, *["D"] * order])
        raise data_error(path, where, f"shape {tuple(shape)} does not fit a t{order} field with dims "
                                      f"{list(dims)}: expected {expected} axes ({layout}); "
                                      "fix its dims or its order")
    if order == 2 and shape[-1] != shape[-2]:
        raise data_error(path, where, f"shape {tuple(shape)}: the two component axes of a t2 field "
                                      "must be equal (D, D)")
    if (symmetric or antisymmetric) and order != 2:
        raise data_error(path, where, "only t2 fields can be symmetric or antisymmetric; "
                                      f"this one is t{order}")
    if symmetric and antisymmetric:
        raise data_error(path, where, "a field cannot be both symmetric and antisymmetric")
    for axis, dim in enumerate(dims, start=1):
        if lengths and dim not in lengths:
            raise data_error(path, where, f"dims names {dim!r}, which is not in /dimensions "
                                          f"({', '.join(lengths)})")
        if lengths and shape[axis] != lengths[dim]:
            raise data_error(path, where, f"axis {axis} ({dim!r}) has length {shape[axis]} but "
                                          f"/dimensions/{dim} has {lengths[dim]} coordinates")
    return FieldInfo(name, order, tuple(dims), tuple(int(s) for s in shape[1:]), symmetric, antisymmetric)


def check_sample_scalar(path: Path, where: str, shape: tuple[int, ...]) -> None:
    """Check that a per-sample scalar has shape (N,)."""
    if len(shape) != 1:
        raise data_error(path, where, f"shape {tuple(shape)}: a per-sample scalar has shape (N,); "
                                      "store larger per-sample arrays as fields")


def _properties(info: FieldInfo | None, dtype: np.dtype) -> dict[str, Any]:
    if info is None:
        return {"kind": "per-sample scalar", "dtype": str(dtype)}
    return {"kind": f"t{info.order} field", "dims": list(info.dims), "per-sample shape": info.shape,
            "dtype": str(dtype), "symmetric": info.symmetric, "antisymmetric": info.antisymmetric}


def check_same_layout(path: Path, split: str, layout: SplitLayout, ref_split: str, ref: SplitLayout) -> None:
    """Every split must hold the same fields and sample scalars as the first one."""
    where = {n: f"/splits/{split}/t{i.order}_fields/{n}" for n, i in {**ref.fields, **layout.fields}.items()}
    where.update({n: f"/splits/{split}/scalars/{n}" for n in (*ref.scalars, *layout.scalars)})
    for name in ref.dtypes:
        if name not in layout.dtypes:
            raise data_error(path, where[name], f"missing; split '{ref_split}' has it and every split "
                                                "must hold the same fields and per-sample scalars")
    for name, dtype in layout.dtypes.items():
        if name not in ref.dtypes:
            raise data_error(path, where[name], f"not in split '{ref_split}'; every split must hold the same "
                                                f"fields and per-sample scalars ({', '.join(ref.dtypes)})")
        here = _properties(layout.fields.get(name), dtype)
        there = _properties(ref.fields.get(name), ref.dtypes[name])
        diffs = [f"{k} {here.get(k)} here but {there.get(k)} in split '{ref_split}'"
                 for k in {**here, **there} if here.get(k) != there.get(k)]
        if diffs:
            raise data_error(path, where[name], "; ".join(diffs) + "; a field has the same order, "
                                                "dims, per-sample shape and dtype in every split")


def check_names(path: Path, where: str, value: Any, what: str) -> tuple[str, ...]:
    """Check that value is a list (any non-string iterable) of names ``what``; returns them as a tuple."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise data_error(path, where, f"{what} must be a list of names, got {value!r}")
    names = tuple(value)
    if not all(isinstance(v, str) for v in names):
        raise data_error(path, where, f"{what} must be a list of names, got {value!r}")
    return names
