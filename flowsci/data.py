"""The flowsci HDF5 data schema (modelled on The Well): write, validate, load; torch Datasets.

One file holds every split of a data set::

    /                              attrs flowsci_schema, dataset_name, n_spatial_dims, grid_type, user attrs
    /dimensions/<name>             1-D coordinates (time, x, y, ...)
    /boundary_conditions/<name>    attrs bc_type, associated_dims; optional datasets mask, values
    /scalars/<name>                0-d global parameters
    /splits/<split>/               attr n_samples
        t0_fields/<name>           (N, *dims)        attr dims
        t1_fields/<name>           (N, *dims, D)     attr dims
        t2_fields/<name>           (N, *dims, D, D)  attrs dims, symmetric, antisymmetric
        scalars/<name>             (N,)              per-sample scalars

``data/README.md`` documents the schema and its conventions.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from flowsci.atomic import atomic_path
from flowsci.errors import DataError, did_you_mean

SCHEMA_VERSION: int = 1
BC_TYPES = ("periodic", "wall", "open", "none")
GRID_TYPES = ("cartesian", "none")
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")  # index = tensor order
SPLIT_GROUPS = FIELD_GROUPS + ("scalars",)
ROOT_GROUPS = ("dimensions", "boundary_conditions", "scalars", "splits")
JSON_ATTRS = "flowsci_json_attrs"  # root attr listing the user attrs stored as JSON strings
RESERVED_ATTRS = ("flowsci_schema", "dataset_name", "n_spatial_dims", "grid_type", JSON_ATTRS)
_NUMERIC = "biufc"  # numpy dtype kinds: bool, int, uint, float, complex

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
class _SplitLayout:
    """What one split holds; every split of a file must hold the same."""

    fields: dict[str, FieldInfo]
    scalars: tuple[str, ...]
    dtypes: dict[str, np.dtype]


# --- shared checks (writer and reader apply the same rules) -------------------------------


def _error(path: Path, where: str, message: str) -> DataError:
    return DataError(f"{path}: {where}: {message}")


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_name(path: Path, where: str, name: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name == ".":
        raise _error(path, where, f"name {name!r} is not valid; names are non-empty strings without '/'")


def _check_root(path: Path, name: Any, n_spatial_dims: Any, grid_type: Any) -> None:
    if not isinstance(name, str) or not name:
        raise _error(path, "/", f"dataset_name must be a non-empty string, got {name!r}")
    if not _is_count(n_spatial_dims):
        raise _error(path, "/", f"n_spatial_dims must be an integer >= 0 (0 for point data), got {n_spatial_dims!r}")
    if grid_type not in GRID_TYPES:
        raise _error(path, "/", f"grid_type {grid_type!r} is not valid; valid: {', '.join(GRID_TYPES)}")
    if grid_type == "cartesian" and n_spatial_dims == 0:
        raise _error(path, "/", "grid_type 'cartesian' needs n_spatial_dims >= 1; use grid_type 'none' for point data")


def _check_bc(path: Path, where: str, bc_type: str, associated_dims: tuple[str, ...],
              dimension_names: tuple[str, ...]) -> None:
    if bc_type not in BC_TYPES:
        raise _error(path, where, f"bc_type {bc_type!r} is not valid; valid: {', '.join(BC_TYPES)}")
    unknown = [d for d in associated_dims if d not in dimension_names]
    if dimension_names and unknown:
        raise _error(path, where, f"associated_dims names {unknown}, which are not in /dimensions "
                                  f"({', '.join(dimension_names)})")


def _field_info(path: Path, where: str, name: str, order: Any, dims: tuple[str, ...],
                shape: tuple[int, ...], symmetric: bool, antisymmetric: bool,
                lengths: Mapping[str, int]) -> FieldInfo:
    """Check a field of full shape (N, *dims, D, ...) against its order, dims and the coordinates."""
    if not isinstance(order, int) or isinstance(order, bool) or order not in (0, 1, 2):
        raise _error(path, where, f"tensor order {order!r} is not valid; valid: 0 (scalar), 1 (vector), 2 (tensor)")
    if len(set(dims)) != len(dims):
        raise _error(path, where, f"dims {list(dims)} repeat a name")
    expected = 1 + len(dims) + order
    if len(shape) != expected:
        layout = ", ".join(["N", *dims, *["D"] * order])
        raise _error(path, where, f"shape {tuple(shape)} does not fit a t{order} field with dims {list(dims)}: "
                                  f"expected {expected} axes ({layout}); fix its dims or its order")
    if order == 2 and shape[-1] != shape[-2]:
        raise _error(path, where, f"shape {tuple(shape)}: the two component axes of a t2 field must be equal (D, D)")
    if (symmetric or antisymmetric) and order != 2:
        raise _error(path, where, f"only t2 fields can be symmetric or antisymmetric; this one is t{order}")
    if symmetric and antisymmetric:
        raise _error(path, where, "a field cannot be both symmetric and antisymmetric")
    for axis, dim in enumerate(dims, start=1):
        if lengths and dim not in lengths:
            raise _error(path, where, f"dims names {dim!r}, which is not in /dimensions ({', '.join(lengths)})")
        if lengths and shape[axis] != lengths[dim]:
            raise _error(path, where, f"axis {axis} ({dim!r}) has length {shape[axis]} but /dimensions/{dim} "
                                      f"has {lengths[dim]} coordinates")
    return FieldInfo(name, order, tuple(dims), tuple(int(s) for s in shape[1:]), symmetric, antisymmetric)


def _check_sample_scalar(path: Path, where: str, shape: tuple[int, ...]) -> None:
    if len(shape) != 1:
        raise _error(path, where, f"shape {tuple(shape)}: a per-sample scalar has shape (N,); "
                                  "store larger per-sample arrays as fields")


def _check_n(path: Path, where: str, shape: tuple[int, ...], n_samples: int) -> None:
    if shape[0] != n_samples:
        raise _error(path, where, f"{shape[0]} samples, but the split's n_samples is {n_samples}; "
                                  "every array of a split needs the same N")


def _properties(info: FieldInfo | None, dtype: np.dtype) -> dict[str, Any]:
    if info is None:
        return {"kind": "per-sample scalar", "dtype": str(dtype)}
    return {"kind": f"t{info.order} field", "dims": list(info.dims), "per-sample shape": info.shape,
            "dtype": str(dtype), "symmetric": info.symmetric, "antisymmetric": info.antisymmetric}


def _check_same_layout(path: Path, split: str, layout: _SplitLayout, ref_split: str, ref: _SplitLayout) -> None:
    """Every split must hold the same fields and sample scalars as the first one."""
    where = {n: f"/splits/{split}/t{i.order}_fields/{n}" for n, i in {**ref.fields, **layout.fields}.items()}
    where.update({n: f"/splits/{split}/scalars/{n}" for n in (*ref.scalars, *layout.scalars)})
    for name in ref.dtypes:
        if name not in layout.dtypes:
            raise _error(path, where[name], f"missing; split '{ref_split}' has it and every split must hold "
                                            "the same fields and per-sample scalars")
    for name, dtype in layout.dtypes.items():
        if name not in ref.dtypes:
            raise _error(path, where[name], f"not in split '{ref_split}'; every split must hold the same fields "
                                            f"and per-sample scalars ({', '.join(ref.dtypes)})")
        here = _properties(layout.fields.get(name), dtype)
        there = _properties(ref.fields.get(name), ref.dtypes[name])
        diffs = [f"{k} {here.get(k)} here but {there.get(k)} in split '{ref_split}'"
                 for k in {**here, **there} if here.get(k) != there.get(k)]
        if diffs:
            raise _error(path, where[name], "; ".join(diffs) + "; a field has the same order, dims, "
                                                               "per-sample shape and dtype in every split")


# --- writing --------------------------------------------------------------------------------


def _as_array(path: Path, where: str, value: Any) -> np.ndarray:
    """A numpy view of a numeric array or tensor; NaN is allowed (a missing value), ±inf is not."""
    if isinstance(value, torch.Tensor):
        try:
            value = value.detach().cpu().numpy()
        except TypeError as exc:
            raise _error(path, where, f"cannot convert a {value.dtype} tensor to numpy ({exc}); "
                                      "convert it to float32 first") from exc
    if not isinstance(value, np.ndarray):
        raise _error(path, where, f"must be a numpy array or a torch tensor, got {type(value).__name__}")
    if value.dtype.kind not in _NUMERIC:
        raise _error(path, where, f"dtype {value.dtype} is not stored; use bool, integer, float or complex")
    if value.dtype.kind in "fc" and np.isinf(value).any():
        raise _error(path, where, "contains ±inf; values must be finite or NaN (NaN marks a missing value)")
    return value


def _names(path: Path, where: str, value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _error(path, where, f"{what} must be a list of names, got {value!r}")
    names = tuple(value)
    if not all(isinstance(v, str) for v in names):
        raise _error(path, where, f"{what} must be a list of names, got {value!r}")
    return names


def _check_symmetry(path: Path, where: str, array: np.ndarray, antisymmetric: bool) -> None:
    """The data of a field flagged (anti)symmetric must equal its (negative) transpose to 1e-6 relative."""
    a = array.astype(np.result_type(array.dtype, np.float64))
    diff = np.abs(a - (-1 if antisymmetric else 1) * np.swapaxes(a, -1, -2))
    worst = np.max(diff, where=~np.isnan(diff), initial=0.0)
    scale = np.max(np.abs(a), where=~np.isnan(a), initial=0.0)
    if worst > 1e-6 * scale:
        kind = "antisymmetric" if antisymmetric else "symmetric"
        raise _error(path, where, f"flagged {kind}, but differs from its {'negative ' * antisymmetric}transpose "
                                  f"by up to {worst:.3g}; fix the data or drop the flag")


def _global_scalar(path: Path, name: str, value: Any) -> float:
    where = f"/scalars/{name}"
    _check_name(path, where, name)
    array = _as_array(path, where, value if isinstance(value, torch.Tensor) else np.asarray(value))
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        raise _error(path, where, "must be one real number; per-sample values go in the splits, "
                                  "named in sample_scalars")
    return float(array)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _native_attr(value: Any) -> Any:
    """``value`` as an HDF5 attribute (a scalar, string or flat one-type list), or None if it needs JSON."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and value:
        for kind, dtype in ((str, h5py.string_dtype()), (bool, np.bool_), (int, np.int64), (float, np.float64)):
            if all(type(v) is kind for v in value):
                return np.array(value, dtype=dtype)
    return None


def _encode_attrs(path: Path, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """User attrs as HDF5 attribute values; dicts and mixed or nested lists become JSON strings."""
    encoded: dict[str, Any] = {}
    as_json: list[str] = []
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or key in RESERVED_ATTRS:
            raise _error(path, "/", f"attrs key {key!r} is not allowed; keys are non-empty strings other than "
                                    f"{', '.join(RESERVED_ATTRS)}")
        native = _native_attr(value)
        if native is None:
            try:
                native = json.dumps(value, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise _error(path, "/", f"attrs[{key!r}] cannot be stored ({exc}); use numbers, strings, "
                                        "lists or JSON-serialisable dicts") from exc
            as_json.append(key)
        encoded[key] = native
    if as_json:
        encoded[JSON_ATTRS] = np.array(as_json, dtype=h5py.string_dtype())
    return encoded


def _check_dimensions(path: Path, dimensions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    coords = {}
    for dim, values in dimensions.items():
        where = f"/dimensions/{dim}"
        _check_name(path, where, dim)
        coords[dim] = _as_array(path, where, values)
        if coords[dim].ndim != 1 or coords[dim].dtype.kind not in "iuf" or not np.isfinite(coords[dim]).all():
            raise _error(path, where, "coordinates must be a 1-D array of finite real numbers")
    return coords


def _check_bcs(path: Path, bcs: Mapping[str, BoundaryCondition],
               dimension_names: tuple[str, ...]) -> dict[str, BoundaryCondition]:
    checked = {}
    for name, bc in bcs.items():
        where = f"/boundary_conditions/{name}"
        _check_name(path, where, name)
        if not isinstance(bc, BoundaryCondition):
            raise _error(path, where, f"must be a flowsci.data.BoundaryCondition, got {type(bc).__name__}")
        associated = _names(path, where, bc.associated_dims, "associated_dims")
        _check_bc(path, where, bc.bc_type, associated, dimension_names)
        checked[name] = BoundaryCondition(
            bc.bc_type, associated,
            None if bc.mask is None else _as_array(path, f"{where}/mask", bc.mask),
            None if bc.values is None else _as_array(path, f"{where}/values", bc.values))
    return checked


def _check_splits(path: Path, splits: Mapping[str, Mapping[str, Any]], orders: Mapping[str, int],
                  dims: Mapping[str, Sequence[str]], symmetric: Iterable[str], antisymmetric: Iterable[str],
                  sample_scalars: Iterable[str], lengths: Mapping[str, int]
                  ) -> tuple[_SplitLayout, dict[str, dict[str, np.ndarray]]]:
    """Check the split arrays; returns the common layout and the arrays as numpy."""
    if not splits:
        raise _error(path, "/splits", "no splits given; pass e.g. splits={'train': {...}, 'val': {...}, 'test': {...}}")
    scalar_names = _names(path, "/splits", sample_scalars, "sample_scalars")
    sym = _names(path, "/splits", symmetric, "symmetric")
    anti = _names(path, "/splits", antisymmetric, "antisymmetric")
    names = list(dict.fromkeys(k for arrays in splits.values() for k in arrays))
    fields = [k for k in names if k not in scalar_names]
    no_order = [k for k in fields if k not in orders]
    if no_order:
        raise _error(path, "/splits", f"no tensor order for field(s) {no_order}; add them to orders "
                                      "(0 scalar, 1 vector, 2 tensor) or name per-sample scalars in sample_scalars")
    for what, given, valid in (("orders", orders, fields), ("dims", dims, fields), ("symmetric", sym, fields),
                               ("antisymmetric", anti, fields), ("sample_scalars", scalar_names, names)):
        stray = [n for n in given if n not in valid]
        if stray:
            raise _error(path, "/splits", f"{what} names {stray}, which are not in the splits; "
                                          f"valid: {', '.join(valid)}")
    ref_split, ref, converted = "", None, {}
    for split, arrays in splits.items():
        _check_name(path, "/splits", split)
        if not arrays:
            raise _error(path, f"/splits/{split}", "no arrays given; every split holds the same fields")
        layout = _SplitLayout({}, (), {})
        converted[split] = {}
        for key, value in arrays.items():
            is_scalar = key in scalar_names
            where = f"/splits/{split}/" + ("scalars" if is_scalar else f"t{orders[key]}_fields") + f"/{key}"
            _check_name(path, where, key)
            array = _as_array(path, where, value)
            if is_scalar:
                _check_sample_scalar(path, where, array.shape)
                layout.scalars += (key,)
            else:
                key_dims = _names(path, where, dims.get(key, ()), "dims")
                layout.fields[key] = _field_info(path, where, key, orders[key], key_dims, array.shape,
                                                 key in sym, key in anti, lengths)
                if key in sym or key in anti:
                    _check_symmetry(path, where, array, key in anti)
            layout.dtypes[key] = array.dtype
            converted[split][key] = array
        counts = {k: a.shape[0] for k, a in converted[split].items()}
        if len(set(counts.values())) > 1:
            raise _error(path, f"/splits/{split}", f"arrays disagree on the number of samples (first axis): "
                                                   f"{counts}; every array of a split needs the same N")
        if ref is None:
            ref_split, ref = split, layout
        else:
            _check_same_layout(path, split, layout, ref_split, ref)
    return ref, converted


def _write(f: h5py.File, meta: DatasetMeta, attrs: Mapping[str, Any],
           arrays: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    f.attrs["flowsci_schema"] = SCHEMA_VERSION
    f.attrs["dataset_name"] = meta.name
    f.attrs["n_spatial_dims"] = meta.n_spatial_dims
    f.attrs["grid_type"] = meta.grid_type
    for key, value in attrs.items():
        f.attrs[key] = value
    group = f.create_group("dimensions", track_order=True)
    for dim, coords in meta.dimensions.items():
        ds = group.create_dataset(dim, data=coords)
        ds.attrs["sample_varying"] = False
        ds.attrs["time_varying"] = False
    group = f.create_group("boundary_conditions", track_order=True)
    for name, bc in meta.boundary_conditions.items():
        g = group.create_group(name)
        g.attrs["bc_type"] = bc.bc_type
        g.attrs["associated_dims"] = np.array(bc.associated_dims, dtype=h5py.string_dtype())
        for key, value in (("mask", bc.mask), ("values", bc.values)):
            if value is not None:
                g.create_dataset(key, data=value)
    group = f.create_group("scalars", track_order=True)
    for name, value in meta.scalars.items():
        group.create_dataset(name, data=np.float64(value))
    group = f.create_group("splits", track_order=True)
    for split, n in meta.splits.items():
        g = group.create_group(split)
        g.attrs["n_samples"] = n
        subgroups = [g.create_group(name, track_order=True) for name in SPLIT_GROUPS]
        for name, info in meta.fields.items():
            ds = subgroups[info.order].create_dataset(name, data=arrays[split][name])
            ds.attrs["dims"] = np.array(info.dims, dtype=h5py.string_dtype())
            if info.order == 2:
                ds.attrs["symmetric"] = info.symmetric
                ds.attrs["antisymmetric"] = info.antisymmetric
        for name in meta.sample_scalars:
            subgroups[-1].create_dataset(name, data=arrays[split][name])


def _atomic_h5(path: Path, write: Callable[[h5py.File], None]) -> None:
    """Write an HDF5 file through a temporary file that replaces ``path`` only when complete."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w-", track_order=True) as f:
        write(f)


def write_dataset(path: PathLike, *, name: str,
                  splits: Mapping[str, Mapping[str, np.ndarray | torch.Tensor]],
                  orders: Mapping[str, int],
                  dims: Mapping[str, Sequence[str]] | None = None,
                  symmetric: Iterable[str] = (),
                  antisymmetric: Iterable[str] = (),
                  sample_scalars: Iterable[str] = (),
                  dimensions: Mapping[str, np.ndarray | torch.Tensor] | None = None,
                  boundary_conditions: Mapping[str, BoundaryCondition] | None = None,
                  scalars: Mapping[str, float] | None = None,
                  attrs: Mapping[str, Any] | None = None,
                  n_spatial_dims: int = 0,
                  grid_type: str = "none") -> Path:
    """Check a data set against the schema and write it atomically to ``path``; returns ``path``.

    ``splits`` maps a split name to ``{name: array}``. Arrays named in ``sample_scalars`` have
    shape (N,); every other array is a field of order ``orders[name]`` with shape
    (N, *dims[name], D, ...) (``order`` trailing component axes; ``dims`` defaults to ``[]``).
    Every split holds the same names with the same per-sample shapes and dtypes; N may differ.
    ``dimensions`` maps an axis name to its 1-D coordinates; when given, field dims must name
    them and match their lengths. Arrays are stored with their dtype (tensors via numpy).
    Nothing is written unless everything is valid; a failed write leaves ``path`` untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give the path of an HDF5 file, e.g. {path / 'data.h5'}")
    _check_root(path, name, n_spatial_dims, grid_type)
    encoded_attrs = _encode_attrs(path, attrs or {})
    coords = _check_dimensions(path, dimensions or {})
    bcs = _check_bcs(path, boundary_conditions or {}, tuple(coords))
    global_scalars = {key: _global_scalar(path, key, value) for key, value in (scalars or {}).items()}
    layout, arrays = _check_splits(path, splits, orders, dims or {}, symmetric, antisymmetric, sample_scalars,
                                   {d: len(c) for d, c in coords.items()})
    meta = DatasetMeta(path, name, int(n_spatial_dims), grid_type, layout.fields, layout.scalars, coords, bcs,
                       global_scalars, dict(attrs or {}),
                       {s: next(iter(a.values())).shape[0] for s, a in arrays.items()})
    _atomic_h5(path, lambda f: _write(f, meta, encoded_attrs, arrays))
    return path


# --- reading --------------------------------------------------------------------------------


def _from_h5(value: Any) -> Any:
    """An attribute value as plain Python (numpy scalars and arrays -> numbers and lists, bytes -> str)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_from_h5(v) for v in value]
    return value


def _attr(path: Path, where: str, obj: h5py.HLObject, key: str, check: Callable[[Any], bool], valid: str) -> Any:
    if key not in obj.attrs:
        raise _error(path, where, f"attr '{key}' missing; it must be {valid}")
    value = _from_h5(obj.attrs[key])
    if not check(value):
        raise _error(path, where, f"attr '{key}' is {value!r}; it must be {valid}")
    return value


def _flag(path: Path, where: str, obj: h5py.HLObject, key: str) -> bool:
    value = _from_h5(obj.attrs.get(key, False))
    if not isinstance(value, bool):
        raise _error(path, where, f"attr '{key}' is {value!r}; it must be true or false")
    return value


def _join(where: str, name: str) -> str:
    return f"{where.rstrip('/')}/{name}"


def _check_members(path: Path, where: str, group: h5py.Group, expected: tuple[str, ...]) -> None:
    for name in expected:
        if name not in group:
            raise _error(path, _join(where, name), "group missing")
        if not isinstance(group[name], h5py.Group):
            raise _error(path, _join(where, name), "must be a group")
    for name in group:
        if name not in expected:
            raise _error(path, _join(where, name), f"unexpected; {where} holds only {', '.join(expected)}")


def _dataset(path: Path, where: str, obj: h5py.HLObject) -> h5py.Dataset:
    if not isinstance(obj, h5py.Dataset):
        raise _error(path, where, "must be a dataset")
    if obj.dtype.kind not in _NUMERIC:
        raise _error(path, where, f"dtype {obj.dtype} is not supported; data must be bool, integer, float or complex")
    return obj


def _read_dimensions(path: Path, group: h5py.Group) -> dict[str, np.ndarray]:
    dimensions = {}
    for dim, obj in group.items():
        where = f"/dimensions/{dim}"
        ds = _dataset(path, where, obj)
        if ds.ndim != 1 or ds.dtype.kind not in "iuf":
            raise _error(path, where, f"shape {ds.shape}, {ds.dtype}: coordinates must be a 1-D real array")
        if _flag(path, where, ds, "sample_varying") or _flag(path, where, ds, "time_varying"):
            raise _error(path, where, "sample- or time-varying coordinates are not supported; set both attrs false")
        dimensions[dim] = ds[()]
    return dimensions


def _read_bcs(path: Path, group: h5py.Group, dimension_names: tuple[str, ...]) -> dict[str, BoundaryCondition]:
    bcs = {}
    for name, g in group.items():
        where = f"/boundary_conditions/{name}"
        if not isinstance(g, h5py.Group):
            raise _error(path, where, "must be a group with attrs bc_type and associated_dims")
        bc_type = _attr(path, where, g, "bc_type", _is_str, f"one of {', '.join(BC_TYPES)}")
        associated = tuple(_attr(path, where, g, "associated_dims", _is_str_list, "a list of dimension names"))
        _check_bc(path, where, bc_type, associated, dimension_names)
        for member in g:
            if member not in ("mask", "values"):
                raise _error(path, _join(where, member), "unexpected; a boundary condition holds only mask, values")
        arrays = {k: _dataset(path, _join(where, k), g[k])[()] if k in g else None for k in ("mask", "values")}
        bcs[name] = BoundaryCondition(bc_type, associated, arrays["mask"], arrays["values"])
    return bcs


def _read_scalars(path: Path, group: h5py.Group) -> dict[str, float]:
    scalars = {}
    for name, obj in group.items():
        ds = _dataset(path, f"/scalars/{name}", obj)
        if ds.shape != () or ds.dtype.kind == "c":
            raise _error(path, f"/scalars/{name}", f"shape {ds.shape}, {ds.dtype}: a global scalar is one real number")
        scalars[name] = float(ds[()])
    return scalars


def _read_split(path: Path, split: str, g: h5py.HLObject, lengths: Mapping[str, int]) -> tuple[int, _SplitLayout]:
    where = f"/splits/{split}"
    if not isinstance(g, h5py.Group):
        raise _error(path, where, "must be a group")
    n = _attr(path, where, g, "n_samples", _is_count, "the number of samples (an integer >= 0)")
    _check_members(path, where, g, SPLIT_GROUPS)
    layout = _SplitLayout({}, (), {})
    for group_name in SPLIT_GROUPS:
        for name, obj in g[group_name].items():
            member = f"{where}/{group_name}/{name}"
            ds = _dataset(path, member, obj)
            if name in layout.dtypes:
                raise _error(path, member, f"the name {name!r} is used twice in {where}; names must be unique")
            if group_name == "scalars":
                _check_sample_scalar(path, member, ds.shape)
                layout.scalars += (name,)
            else:
                dims = tuple(_attr(path, member, ds, "dims", _is_str_list,
                                   "the list of names of the axes between the sample and component axes"))
                layout.fields[name] = _field_info(
                    path, member, name, FIELD_GROUPS.index(group_name), dims, ds.shape,
                    _flag(path, member, ds, "symmetric"), _flag(path, member, ds, "antisymmetric"), lengths)
            _check_n(path, member, ds.shape, n)
            layout.dtypes[name] = ds.dtype
    return n, layout


def _decode_attrs(path: Path, f: h5py.File) -> dict[str, Any]:
    as_json = _from_h5(f.attrs.get(JSON_ATTRS, []))
    if not _is_str_list(as_json):
        raise _error(path, "/", f"attr '{JSON_ATTRS}' is {as_json!r}; it must be a list of attr names")
    attrs = {}
    for key in f.attrs:
        if key in RESERVED_ATTRS:
            continue
        attrs[key] = _from_h5(f.attrs[key])
        if key in as_json:
            try:
                attrs[key] = json.loads(attrs[key])
            except (TypeError, json.JSONDecodeError) as exc:
                raise _error(path, "/", f"attr {key!r} is listed in '{JSON_ATTRS}' but is not JSON ({exc})") from exc
    return attrs


def _read_meta(path: Path, f: h5py.File) -> DatasetMeta:
    if "flowsci_schema" not in f.attrs:
        raise _error(path, "/", "attr 'flowsci_schema' missing: not a flowsci data file "
                                "(write one with flowsci.data.write_dataset)")
    version = _from_h5(f.attrs["flowsci_schema"])
    if version != SCHEMA_VERSION:
        raise _error(path, "/", f"attr 'flowsci_schema' is {version!r}; this flowsci reads schema version "
                                f"{SCHEMA_VERSION}")
    name = _attr(path, "/", f, "dataset_name", _is_str, "a non-empty string")
    n_spatial_dims = _attr(path, "/", f, "n_spatial_dims", _is_count, "an integer >= 0")
    grid_type = _attr(path, "/", f, "grid_type", _is_str, f"one of {', '.join(GRID_TYPES)}")
    _check_root(path, name, n_spatial_dims, grid_type)
    _check_members(path, "/", f, ROOT_GROUPS)
    dimensions = _read_dimensions(path, f["dimensions"])
    bcs = _read_bcs(path, f["boundary_conditions"], tuple(dimensions))
    scalars = _read_scalars(path, f["scalars"])
    if len(f["splits"]) == 0:
        raise _error(path, "/splits", "no splits; a file holds at least one (train, val, test are conventional)")
    lengths = {d: len(c) for d, c in dimensions.items()}
    splits, ref_split, ref = {}, "", None
    for split, g in f["splits"].items():
        splits[split], layout = _read_split(path, split, g, lengths)
        if ref is None:
            ref_split, ref = split, layout
        else:
            _check_same_layout(path, split, layout, ref_split, ref)
    return DatasetMeta(path, name, n_spatial_dims, grid_type, ref.fields, ref.scalars, dimensions, bcs, scalars,
                       _decode_attrs(path, f), splits)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
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
    with _reading(path), h5py.File(path, "r") as f:
        return _read_meta(path, f)


def read_meta(path: PathLike) -> DatasetMeta:
    """The metadata of a validated data file (same as ``validate``)."""
    return validate(path)


def _member_paths(meta: DatasetMeta, split: str, names: Sequence[str] | None) -> dict[str, str]:
    """HDF5 paths of the requested fields and sample scalars of ``split`` (all when ``names`` is None)."""
    if split not in meta.splits:
        raise _error(meta.path, f"/splits/{split}", f"no such split{did_you_mean(split, meta.splits)}; "
                                                    f"available: {', '.join(meta.splits)}")
    available = {n: f"/splits/{split}/t{i.order}_fields/{n}" for n, i in meta.fields.items()}
    available.update({n: f"/splits/{split}/scalars/{n}" for n in meta.sample_scalars})
    if names is None:
        return available
    names = _names(meta.path, f"/splits/{split}", names, "fields")
    for n in names:
        if n not in available:
            raise _error(meta.path, f"/splits/{split}/{n}", f"no such field or per-sample scalar"
                                                            f"{did_you_mean(n, available)}; available: "
                                                            f"{', '.join(available)}")
    return {n: available[n] for n in names}


def load_split(path: PathLike, split: str, fields: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Load the fields and per-sample scalars of one split (``fields`` picks some by name).

    Returns ``{name: tensor}`` with shapes (N, *dims, D, ...) for fields and (N,) for scalars.
    """
    meta = validate(path)
    members = _member_paths(meta, split, fields)
    with _reading(meta.path), h5py.File(meta.path, "r") as f:
        return {n: torch.from_numpy(f[p][()]) for n, p in members.items()}


def default_data_dir() -> Path:
    """Where generated data sets live: ``$FLOWSCI_DATA`` if set, else ``./data``."""
    env = os.environ.get("FLOWSCI_DATA")
    return Path(env).expanduser() if env else Path("data")


# --- torch Datasets ---------------------------------------------------------------------------


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
        self._members = _member_paths(self.meta, split, fields)
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
        with _reading(self.meta.path):
            f = self._h5()
            return {name: torch.from_numpy(np.asarray(f[p][i])) for name, p in self._members.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch ``{name: tensor (B, ...)}``, read in one sorted pass per array."""
        index = np.array([self._index(i) for i in indices], dtype=np.int64)
        unique, inverse = np.unique(index, return_inverse=True)
        with _reading(self.meta.path):
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
    def from_file(cls, path: PathLike, *, lazy: bool = False, fields: Sequence[str] | None = None) -> DataSplits:
        """The splits 'train', 'val' and 'test' of a data file, in memory or read lazily."""
        meta = validate(path)
        missing = [s for s in ("train", "val", "test") if s not in meta.splits]
        if missing:
            raise _error(meta.path, "/splits", f"missing split(s) {missing}; the file has {', '.join(meta.splits)}")
        make = LazyH5Dataset if lazy else InMemoryDataset.from_file
        return cls(*(make(meta.path, s, fields) for s in ("train", "val", "test")), meta=meta)
