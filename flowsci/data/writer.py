"""Writing a data set: ``write_dataset`` checks every array and attribute against the schema, then writes.

The checks here convert user input (numpy arrays or torch tensors, user attrs, boundary
conditions, coordinates) to what is stored and apply the shared rules of ``schema``; nothing
is written unless all of it is valid, and the file is written through a temporary file that
replaces the target only when complete, so a failed write leaves an existing file untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from flowsci.atomic import atomic_path
from flowsci.data.schema import (
    JSON_ATTRS,
    NUMERIC_KINDS,
    RESERVED_ATTRS,
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
)
from flowsci.errors import DataError


def _check_name(path: Path, where: str, name: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name == ".":
        raise data_error(path, where, f"name {name!r} is not valid; names are non-empty strings without '/'")


def _as_array(path: Path, where: str, value: Any) -> np.ndarray:
    """A numpy view of a numeric array or tensor; NaN is allowed (a missing value), ±inf is not."""
    if isinstance(value, torch.Tensor):
        try:
            value = value.detach().cpu().numpy()
        except TypeError as exc:
            raise data_error(path, where, f"cannot convert a {value.dtype} tensor to numpy ({exc}); "
                                          "convert it to float32 first") from exc
    if not isinstance(value, np.ndarray):
        raise data_error(path, where, f"must be a numpy array or a torch tensor, got {type(value).__name__}")
    if value.dtype.kind not in NUMERIC_KINDS:
        raise data_error(path, where, f"dtype {value.dtype} is not stored; "
                                      "use bool, integer, float or complex")
    if value.dtype.kind in "fc" and np.isinf(value).any():
        raise data_error(path, where, "contains ±inf; values must be finite or NaN "
                                      "(NaN marks a missing value)")
    return value



def _check_symmetry(path: Path, where: str, array: np.ndarray, antisymmetric: bool) -> None:
    """The data of a field flagged (anti)symmetric must equal its (negative) transpose to 1e-6 relative."""
    a = array.astype(np.result_type(array.dtype, np.float64))
    diff = np.abs(a - (-1 if antisymmetric else 1) * np.swapaxes(a, -1, -2))
    worst = np.max(diff, where=~np.isnan(diff), initial=0.0)
    scale = np.max(np.abs(a), where=~np.isnan(a), initial=0.0)
    if worst > 1e-6 * scale:
        kind = "antisymmetric" if antisymmetric else "symmetric"
        raise data_error(path, where, f"flagged {kind}, but differs from its "
                                      f"{'negative ' * antisymmetric}transpose by up to {worst:.3g}; "
                                      "fix the data or drop the flag")


def _global_scalar(path: Path, name: str, value: Any) -> float:
    where = f"/scalars/{name}"
    _check_name(path, where, name)
    array = _as_array(path, where, value if isinstance(value, torch.Tensor) else np.asarray(value))
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        raise data_error(path, where, "must be one real number; per-sample values go in the splits, "
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
        for kind, dtype in ((str, h5py.string_dtype()), (bool, np.bool_), (int, np.int64),
                            (float, np.float64)):
            if all(type(v) is kind for v in value):
                return np.array(value, dtype=dtype)
    return None


def _encode_attrs(path: Path, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """User attrs as HDF5 attribute values; dicts and mixed or nested lists become JSON strings."""
    encoded: dict[str, Any] = {}
    as_json: list[str] = []
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or key in RESERVED_ATTRS:
            raise data_error(path, "/", f"attrs key {key!r} is not allowed; keys are non-empty strings other "
                                        f"than {', '.join(RESERVED_ATTRS)}")
        native = _native_attr(value)
        if native is None:
            try:
                native = json.dumps(value, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise data_error(path, "/", f"attrs[{key!r}] cannot be stored ({exc}); use numbers, strings, "
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
            raise data_error(path, where, "coordinates must be a 1-D array of finite real numbers")
    return coords


def _check_bcs(path: Path, bcs: Mapping[str, BoundaryCondition],
               dimension_names: tuple[str, ...]) -> dict[str, BoundaryCondition]:
    checked = {}
    for name, bc in bcs.items():
        where = f"/boundary_conditions/{name}"
        _check_name(path, where, name)
        if not isinstance(bc, BoundaryCondition):
            raise data_error(path, where,
                             f"must be a flowsci.data.BoundaryCondition, got {type(bc).__name__}")
        associated = check_names(path, where, bc.associated_dims, "associated_dims")
        check_bc(path, where, bc.bc_type, associated, dimension_names)
        checked[name] = BoundaryCondition(
            bc.bc_type, associated,
            None if bc.mask is None else _as_array(path, f"{where}/mask", bc.mask),
            None if bc.values is None else _as_array(path, f"{where}/values", bc.values))
    return checked


def _check_splits(path: Path, splits: Mapping[str, Mapping[str, Any]], orders: Mapping[str, int],
                  dims: Mapping[str, Sequence[str]], symmetric: Iterable[str], antisymmetric: Iterable[str],
                  sample_scalars: Iterable[str], lengths: Mapping[str, int]
                  ) -> tuple[SplitLayout, dict[str, dict[str, np.ndarray]]]:
    """Check the split arrays; returns the common layout and the arrays as numpy."""
    if not splits:
        raise data_error(path, "/splits", "no splits given; "
                                          "pass e.g. splits={'train': {...}, 'val': {...}, 'test': {...}}")
    scalar_names = check_names(path, "/splits", sample_scalars, "sample_scalars")
    sym = check_names(path, "/splits", symmetric, "symmetric")
    anti = check_names(path, "/splits", antisymmetric, "antisymmetric")
    names = list(dict.fromkeys(k for arrays in splits.values() for k in arrays))
    fields = [k for k in names if k not in scalar_names]
    no_order = [k for k in fields if k not in orders]
    if no_order:
        raise data_error(path, "/splits", f"no tensor order for field(s) {no_order}; add them to orders "
                                          "(0 scalar, 1 vector, 2 tensor) or name per-sample scalars in "
                                          "sample_scalars")
    for what, given, valid in (("orders", orders, fields), ("dims", dims, fields), ("symmetric", sym, fields),
                               ("antisymmetric", anti, fields), ("sample_scalars", scalar_names, names)):
        stray = [n for n in given if n not in valid]
        if stray:
            raise data_error(path, "/splits", f"{what} names {stray}, which are not in the splits; "
                                              f"valid: {', '.join(valid)}")
    ref_split, ref, converted = "", None, {}
    for split, arrays in splits.items():
        _check_name(path, "/splits", split)
        if not arrays:
            raise data_error(path, f"/splits/{split}", "no arrays given; every split holds the same fields")
        layout = SplitLayout({}, (), {})
        converted[split] = {}
        for key, value in arrays.items():
            is_scalar = key in scalar_names
            where = f"/splits/{split}/" + ("scalars" if is_scalar else f"t{orders[key]}_fields") + f"/{key}"
            _check_name(path, where, key)
            array = _as_array(path, where, value)
            if is_scalar:
                check_sample_scalar(path, where, array.shape)
                layout.scalars += (key,)
            else:
                key_dims = check_names(path, where, dims.get(key, ()), "dims")
                layout.fields[key] = field_info(path, where, key, orders[key], key_dims, array.shape,
                                                key in sym, key in anti, lengths)
                if key in sym or key in anti:
                    _check_symmetry(path, where, array, key in anti)
            layout.dtypes[key] = array.dtype
            converted[split][key] = array
        counts = {k: a.shape[0] for k, a in converted[split].items()}
        if len(set(counts.values())) > 1:
            raise data_error(path, f"/splits/{split}", "arrays disagree on the number of samples "
                                                       f"(first axis): {counts}; "
                                                       "every array of a split needs the same N")
        if ref is None:
            ref_split, ref = split, layout
        else:
            check_same_layout(path, split, layout, ref_split, ref)
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
    check_root(path, name, n_spatial_dims, grid_type)
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
