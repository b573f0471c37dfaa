"""Reading a data file: ``validate`` / ``read_meta`` check a file against the schema, ``load_split`` loads it.

Validation checks structure, not values: the root attrs and groups, coordinates, boundary
conditions, global scalars and every split's fields and per-sample scalars, applying the shared
rules of ``schema`` and returning a ``DatasetMeta``; any fault, including an unreadable or
truncated file, raises a DataError that names the file and the offending member.
``default_data_dir`` says where generated data sets live.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from flowsci.data.schema import (
    BC_TYPES,
    FIELD_GROUPS,
    GRID_TYPES,
    JSON_ATTRS,
    NUMERIC_KINDS,
    RESERVED_ATTRS,
    ROOT_GROUPS,
    SCHEMA_VERSION,
    SPLIT_GROUPS,
    BoundaryCondition,
    DatasetMeta,
    PathLike,
    SplitLayout,
    check_bc,
    check_names,
    check_root,
    check_same_layout,
    check_sample_scalar,
    data_error,
    field_info,
    is_count,
)
from flowsci.errors import DataError, did_you_mean


def _from_h5(value: Any) -> Any:
    """An attribute value as plain Python (numpy scalars and arrays -> numbers and lists, bytes -> str)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_from_h5(v) for v in value]
    return value


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _attr(path: Path, where: str, obj: h5py.HLObject, key: str, check: Callable[[Any], bool],
          valid: str) -> Any:
    if key not in obj.attrs:
        raise data_error(path, where, f"attr '{key}' missing; it must be {valid}")
    value = _from_h5(obj.attrs[key])
    if not check(value):
        raise data_error(path, where, f"attr '{key}' is {value!r}; it must be {valid}")
    return value


def _flag(path: Path, where: str, obj: h5py.HLObject, key: str) -> bool:
    value = _from_h5(obj.attrs.get(key, False))
    if not isinstance(value, bool):
        raise data_error(path, where, f"attr '{key}' is {value!r}; it must be true or false")
    return value


def _join(where: str, name: str) -> str:
    return f"{where.rstrip('/')}/{name}"


def _check_members(path: Path, where: str, group: h5py.Group, expected: tuple[str, ...]) -> None:
    for name in expected:
        if name not in group:
            raise data_error(path, _join(where, name), "group missing")
        if not isinstance(group[name], h5py.Group):
            raise data_error(path, _join(where, name), "must be a group")
    for name in group:
        if name not in expected:
            raise data_error(path, _join(where, name),
                             f"unexpected; {where} holds only {', '.join(expected)}")


def _dataset(path: Path, where: str, obj: h5py.HLObject) -> h5py.Dataset:
    if not isinstance(obj, h5py.Dataset):
        raise data_error(path, where, "must be a dataset")
    if obj.dtype.kind not in NUMERIC_KINDS:
        raise data_error(path, where, f"dtype {obj.dtype} is not supported; "
                                      "data must be bool, integer, float or complex")
    return obj


def _read_dimensions(path: Path, group: h5py.Group) -> dict[str, np.ndarray]:
    dimensions = {}
    for dim, obj in group.items():
        where = f"/dimensions/{dim}"
        ds = _dataset(path, where, obj)
        if ds.ndim != 1 or ds.dtype.kind not in "iuf":
            raise data_error(path, where, f"shape {ds.shape}, {ds.dtype}: coordinates must be "
                                          "a 1-D real array")
        if _flag(path, where, ds, "sample_varying") or _flag(path, where, ds, "time_varying"):
            raise data_error(path, where, "sample- or time-varying coordinates are not supported; "
                                          "set both attrs false")
        dimensions[dim] = ds[()]
    return dimensions


def _read_bcs(path: Path, group: h5py.Group,
              dimension_names: tuple[str, ...]) -> dict[str, BoundaryCondition]:
    bcs = {}
    for name, g in group.items():
        where = f"/boundary_conditions/{name}"
        if not isinstance(g, h5py.Group):
            raise data_error(path, where, "must be a group with attrs bc_type and associated_dims")
        bc_type = _attr(path, where, g, "bc_type", _is_str, f"one of {', '.join(BC_TYPES)}")
        associated = tuple(_attr(path, where, g, "associated_dims", _is_str_list,
                                 "a list of dimension names"))
        check_bc(path, where, bc_type, associated, dimension_names)
        for member in g:
            if member not in ("mask", "values"):
                raise data_error(path, _join(where, member),
                                 "unexpected; a boundary condition holds only mask, values")
        arrays = {k: _dataset(path, _join(where, k), g[k])[()] if k in g else None
                  for k in ("mask", "values")}
        bcs[name] = BoundaryCondition(bc_type, associated, arrays["mask"], arrays["values"])
    return bcs


def _read_scalars(path: Path, group: h5py.Group) -> dict[str, float]:
    scalars = {}
    for name, obj in group.items():
        ds = _dataset(path, f"/scalars/{name}", obj)
        if ds.shape != () or ds.dtype.kind == "c":
            raise data_error(path, f"/scalars/{name}", f"shape {ds.shape}, {ds.dtype}: "
                                                       "a global scalar is one real number")
        scalars[name] = float(ds[()])
    return scalars


def _check_n(path: Path, where: str, shape: tuple[int, ...], n_samples: int) -> None:
    if shape[0] != n_samples:
        raise data_error(path, where, f"{shape[0]} samples, but the split's n_samples is {n_samples}; "
                                      "every array of a split needs the same N")


def _read_split(path: Path, split: str, g: h5py.HLObject,
                lengths: Mapping[str, int]) -> tuple[int, SplitLayout]:
    where = f"/splits/{split}"
    if not isinstance(g, h5py.Group):
        raise data_error(path, where, "must be a group")
    n = _attr(path, where, g, "n_samples", is_count, "the number of samples (an integer >= 0)")
    _check_members(path, where, g, SPLIT_GROUPS)
    layout = SplitLayout({}, (), {})
    for group_name in SPLIT_GROUPS:
        for name, obj in g[group_name].items():
            member = f"{where}/{group_name}/{name}"
            ds = _dataset(path, member, obj)
            if name in layout.dtypes:
                raise data_error(path, member, f"the name {name!r} is used twice in {where}; "
                                               "names must be unique")
            if group_name == "scalars":
                check_sample_scalar(path, member, ds.shape)
                layout.scalars += (name,)
            else:
                dims = tuple(_attr(path, member, ds, "dims", _is_str_list,
                                   "the list of names of the axes between the sample and component axes"))
                layout.fields[name] = field_info(
                    path, member, name, FIELD_GROUPS.index(group_name), dims, ds.shape,
                    _flag(path, member, ds, "symmetric"), _flag(path, member, ds, "antisymmetric"), lengths)
            _check_n(path, member, ds.shape, n)
            layout.dtypes[name] = ds.dtype
    return n, layout


def _decode_attrs(path: Path, f: h5py.File) -> dict[str, Any]:
    as_json = _from_h5(f.attrs.get(JSON_ATTRS, []))
    if not _is_str_list(as_json):
        raise data_error(path, "/", f"attr '{JSON_ATTRS}' is {as_json!r}; it must be a list of attr names")
    attrs = {}
    for key in f.attrs:
        if key in RESERVED_ATTRS:
            continue
        attrs[key] = _from_h5(f.attrs[key])
        if key in as_json:
            try:
                attrs[key] = json.loads(attrs[key])
            except (TypeError, json.JSONDecodeError) as exc:
                raise data_error(path, "/", f"attr {key!r} is listed in '{JSON_ATTRS}' but is "
                                            f"not JSON ({exc})") from exc
    return attrs


def _read_meta(path: Path, f: h5py.File) -> DatasetMeta:
    if "flowsci_schema" not in f.attrs:
        raise data_error(path, "/", "attr 'flowsci_schema' missing: not a flowsci data file "
                                    "(write one with flowsci.data.write_dataset)")
    version = _from_h5(f.attrs["flowsci_schema"])
    if version != SCHEMA_VERSION:
        raise data_error(path, "/", f"attr 'flowsci_schema' is {version!r}; "
                                    f"this flowsci reads schema version {SCHEMA_VERSION}")
    name = _attr(path, "/", f, "dataset_name", _is_str, "a non-empty string")
    n_spatial_dims = _attr(path, "/", f, "n_spatial_dims", is_count, "an integer >= 0")
    grid_type = _attr(path, "/", f, "grid_type", _is_str, f"one of {', '.join(GRID_TYPES)}")
    check_root(path, name, n_spatial_dims, grid_type)
    _check_members(path, "/", f, ROOT_GROUPS)
    dimensions = _read_dimensions(path, f["dimensions"])
    bcs = _read_bcs(path, f["boundary_conditions"], tuple(dimensions))
    scalars = _read_scalars(path, f["scalars"])
    if len(f["splits"]) == 0:
        raise data_error(path, "/splits", "no splits; a file holds at least one "
                                          "(train, val, test are conventional)")
    lengths = {d: len(c) for d, c in dimensions.items()}
    splits, ref_split, ref = {}, "", None
    for split, g in f["splits"].items():
        splits[split], layout = _read_split(path, split, g, lengths)
        if ref is None:
            ref_split, ref = split, layout
        else:
            check_same_layout(path, split, layout, ref_split, ref)
    return DatasetMeta(path, name, n_spatial_dims, grid_type, ref.fields, ref.scalars, dimensions, bcs,
                       scalars, _decode_attrs(path, f), splits)


@contextmanager
def reading_errors(path: Path) -> Iterator[None]:
    """Turn h5py's errors for unreadable files (truncated, corrupted, not HDF5) into DataError."""
    try:
        yield
    except (OSError, KeyError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated, corrupted or not HDF5): {exc}; "
                        "regenerate it") from exc


def validate(path: PathLike) -> DatasetMeta:
    """Check a file against the schema (structure, not values); raises DataError naming file and field."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; generate it with `flowsci data make CONFIG` "
                        "or write it with flowsci.data.write_dataset")
    if not path.is_file():
        raise DataError(f"{path}: not a file; give the path of an HDF5 data file")
    with reading_errors(path), h5py.File(path, "r") as f:
        return _read_meta(path, f)


def read_meta(path: PathLike) -> DatasetMeta:
    """The metadata of a validated data file (same as ``validate``)."""
    return validate(path)


def member_paths(meta: DatasetMeta, split: str, names: Sequence[str] | None) -> dict[str, str]:
    """HDF5 paths of the requested fields and sample scalars of ``split`` (all when ``names`` is None)."""
    if split not in meta.splits:
        raise data_error(meta.path, f"/splits/{split}", f"no such split{did_you_mean(split, meta.splits)}; "
                                                        f"available: {', '.join(meta.splits)}")
    available = {n: f"/splits/{split}/t{i.order}_fields/{n}" for n, i in meta.fields.items()}
    available.update({n: f"/splits/{split}/scalars/{n}" for n in meta.sample_scalars})
    if names is None:
        return available
    names = check_names(meta.path, f"/splits/{split}", names, "fields")
    for n in names:
        if n not in available:
            raise data_error(meta.path, f"/splits/{split}/{n}", f"no such field or per-sample scalar"
                                                                f"{did_you_mean(n, available)}; available: "
                                                                f"{', '.join(available)}")
    return {n: available[n] for n in names}


def load_split(path: PathLike, split: str, fields: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Load the fields and per-sample scalars of one split (``fields`` picks some by name).

    Returns ``{name: tensor}`` with shapes (N, *dims, D, ...) for fields and (N,) for scalars.
    """
    meta = validate(path)
    members = member_paths(meta, split, fields)
    with reading_errors(meta.path), h5py.File(meta.path, "r") as f:
        return {n: torch.from_numpy(f[p][()]) for n, p in members.items()}


def default_data_dir() -> Path:
    """Where generated data sets live: ``$FLOWSCI_DATA`` if set, else ``./data``."""
    env = os.environ.get("FLOWSCI_DATA")
    return Path(env).expanduser() if env else Path("data")
