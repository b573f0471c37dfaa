"""Tests for flowsci.data: the HDF5 schema, its validation and the Dataset classes."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flowsci.data import (
    BC_TYPES,
    SCHEMA_VERSION,
    BoundaryCondition,
    DataSplits,
    FieldInfo,
    InMemoryDataset,
    LazyH5Dataset,
    default_data_dir,
    load_split,
    read_meta,
    validate,
    write_dataset,
)
from flowsci.errors import DataError, UserError

T, X, Y = 3, 8, 6
SIZES = {"train": 5, "val": 2, "test": 3}
ATTRS = {
    "solver": {"dt": 1e-3, "scheme": "rk4", "sizes": [1, 2], "nested": {"ok": True}},
    "alphas": [-1.0, -2.5],
    "names": ["a", "b"],
    "steps": [10, 20],
    "seed": 3,
    "L": 6.25,
    "note": "Kolmogorov flow",
    "flag": True,
    "mixed": [1, "a"],
}


def _sym(a: np.ndarray) -> np.ndarray:
    return (a + np.swapaxes(a, -1, -2)) / 2


def grid_splits(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        split: {
            "vorticity": rng.standard_normal((n, T, X, Y)).astype(np.float32),
            "velocity": rng.standard_normal((n, T, X, Y, 2)).astype(np.float32),
            "stress": _sym(rng.standard_normal((n, T, X, Y, 2, 2))),  # float64: must stay float64
            "nu": rng.uniform(1e-3, 1e-2, n).astype(np.float32),
            "seed": np.arange(n, dtype=np.int64),
        }
        for split, n in SIZES.items()
    }


GRID_KW = dict(
    name="kolmogorov",
    orders={"vorticity": 0, "velocity": 1, "stress": 2},
    dims={"vorticity": ["time", "x", "y"], "velocity": ["time", "x", "y"], "stress": ["time", "x", "y"]},
    symmetric=["stress"],
    sample_scalars=["nu", "seed"],
    dimensions={"time": np.linspace(0.0, 1.0, T), "x": np.linspace(0, 1, X, endpoint=False),
                "y": torch.linspace(0, 1, Y)},
    boundary_conditions={
        "xy_periodic": BoundaryCondition("periodic", ("x", "y")),
        "lid": BoundaryCondition("wall", ("y",), mask=np.arange(Y) == Y - 1, values=np.ones(Y, np.float32)),
    },
    scalars={"beta": 0.8, "L": 10},
    attrs=ATTRS,
    n_spatial_dims=2,
    grid_type="cartesian",
)


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "grid.h5", splits=grid_splits(), **GRID_KW)


@pytest.fixture
def point_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    splits = {s: {"x": rng.standard_normal((n, 2)).astype(np.float32),
                  "label": rng.integers(0, 3, n)} for s, n in SIZES.items()}
    return write_dataset(tmp_path / "points.h5", name="moons", splits=splits, orders={"x": 1},
                         sample_scalars=["label"])


def raises_data_error(path: Path, *parts: str):
    """pytest.raises(DataError) whose message must name the file and contain every part."""
    return pytest.raises(DataError, match=".*".join(re.escape(p) for p in (str(path), *parts)))


# --- round trips ------------------------------------------------------------------------------


def test_round_trip_grid(grid_file: Path):
    splits = grid_splits()
    meta = validate(grid_file)
    assert read_meta(grid_file).fields == meta.fields
    assert ((meta.path, meta.name, meta.n_spatial_dims, meta.grid_type)
            == (grid_file, "kolmogorov", 2, "cartesian"))
    dims = ("time", "x", "y")
    assert meta.fields == {
        "vorticity": FieldInfo("vorticity", 0, dims, (T, X, Y)),
        "velocity": FieldInfo("velocity", 1, dims, (T, X, Y, 2)),
        "stress": FieldInfo("stress", 2, dims, (T, X, Y, 2, 2), symmetric=True),
    }
    assert meta.sample_scalars == ("nu", "seed")
    assert meta.splits == SIZES
    assert list(meta.dimensions) == list(dims)
    np.testing.assert_array_equal(meta.dimensions["time"], np.linspace(0.0, 1.0, T))
    np.testing.assert_array_equal(meta.dimensions["y"], torch.linspace(0, 1, Y).numpy())
    assert meta.dimensions["y"].dtype == np.float32
    periodic, lid = meta.boundary_conditions["xy_periodic"], meta.boundary_conditions["lid"]
    assert (periodic.bc_type, periodic.associated_dims, periodic.mask, periodic.values) == \
           ("periodic", ("x", "y"), None, None)
    assert (lid.bc_type, lid.associated_dims) == ("wall", ("y",))
    np.testing.assert_array_equal(lid.mask, np.arange(Y) == Y - 1)
    np.testing.assert_array_equal(lid.values, np.ones(Y, np.float32))
    assert meta.scalars == {"beta": 0.8, "L": 10.0}
    assert meta.attrs == ATTRS
    for split in SIZES:
        loaded = load_split(grid_file, split)
        assert list(loaded) == ["vorticity", "velocity", "stress", "nu", "seed"]
        for name, tensor in loaded.items():
            expected = splits[split][name]
            assert tensor.numpy().dtype == expected.dtype
            np.testing.assert_array_equal(tensor.numpy(), expected)
    part = load_split(grid_file, "val", ["nu", "velocity"])
    assert list(part) == ["nu", "velocity"]


def test_round_trip_torch_tensors_and_nan(tmp_path: Path):
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    path = write_dataset(tmp_path / "t.h5", name="t", splits={"train": {"x": x * 2, "y": y}},
                         orders={"x": 1, "y": 0})
    loaded = load_split(path, "train")
    assert torch.equal(loaded["x"], (x * 2).detach())
    assert torch.allclose(loaded["y"], y, equal_nan=True) and loaded["y"].isnan().sum() == 1


def test_point_data(point_file: Path):
    meta = validate(point_file)
    assert meta.fields == {"x": FieldInfo("x", 1, (), (2,))}
    assert ((meta.n_spatial_dims, meta.grid_type, meta.dimensions, meta.boundary_conditions)
            == (0, "none", {}, {}))
    loaded = load_split(point_file, "test")
    assert loaded["x"].shape == (3, 2) and loaded["label"].shape == (3,)
    assert loaded["label"].dtype == torch.int64


def test_writes_parent_dirs_and_file_permissions(tmp_path: Path):
    path = write_dataset(tmp_path / "a" / "b" / "p.h5", name="p", splits={"train": {"x": np.zeros((2, 2))}},
                         orders={"x": 1})
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.is_file() and path.stat().st_mode == plain.stat().st_mode


# --- atomic writes ----------------------------------------------------------------------------


def test_failed_write_leaves_no_file(tmp_path: Path):
    splits = grid_splits()
    splits["test"]["velocity"] = splits["test"]["velocity"][..., :1]
    with raises_data_error(tmp_path / "grid.h5", "/splits/test/t1_fields/velocity"):
        write_dataset(tmp_path / "grid.h5", splits=splits, **GRID_KW)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_file(grid_file: Path):
    before = grid_file.read_bytes()
    with pytest.raises(DataError):
        write_dataset(grid_file, splits=grid_splits(1), **{**GRID_KW, "orders": {"vorticity": 0}})
    assert grid_file.read_bytes() == before
    assert list(grid_file.parent.iterdir()) == [grid_file]


def test_crash_while_writing_leaves_no_temp_file(grid_file: Path, monkeypatch: pytest.MonkeyPatch):
    before = grid_file.read_bytes()
    original = h5py.Group.create_dataset
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 10:  # inside the first split
            raise RuntimeError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset(grid_file, splits=grid_splits(1), **GRID_KW)
    assert grid_file.read_bytes() == before
    assert list(grid_file.parent.iterdir()) == [grid_file]


# --- validation on write ----------------------------------------------------------------------


def _bad_write_cases():
    def split_with(**changes):
        splits = grid_splits()
        for key, value in changes.items():
            split, name = key.split("__")
            if value is None:
                del splits[split][name]
            else:
                splits[split][name] = value
        return splits

    ok = grid_splits()["train"]
    return [
        ("no order", {"orders": {"vorticity": 0, "velocity": 1}}, None, ["/splits", "'stress'", "orders"]),
        ("bad order", {"orders": {"vorticity": 0, "velocity": 3, "stress": 2}}, None,
         ["/splits/train/t3_fields/velocity", "valid: 0"]),
        ("stray order", {"orders": {**GRID_KW["orders"], "pressure": 0}}, None,
         ["'pressure'", "valid: vorticity"]),
        ("t2 not square", {}, split_with(train__stress=np.zeros((5, T, X, Y, 2, 3))),
         ["/splits/train/t2_fields/stress", "(D, D)"]),
        ("dims too short", {"dims": {**GRID_KW["dims"], "velocity": ["x", "y"]}}, None,
         ["/splits/train/t1_fields/velocity", "expected 4 axes (N, x, y, D)"]),
        ("dims as string", {"dims": {**GRID_KW["dims"], "velocity": "txy"}}, None,
         ["/splits/train/t1_fields/velocity", "list of names"]),
        ("unknown dim", {"dims": {**GRID_KW["dims"], "vorticity": ["time", "x", "z"]}}, None,
         ["/splits/train/t0_fields/vorticity", "'z'", "not in /dimensions (time, x, y)"]),
        ("axis length", {}, split_with(train__vorticity=np.zeros((5, T, X, Y + 1), np.float32)),
         ["/splits/train/t0_fields/vorticity", "axis 3 ('y') has length 7", "/dimensions/y has 6"]),
        ("symmetric t1", {"symmetric": ["stress", "velocity"]}, None,
         ["/splits/train/t1_fields/velocity", "only t2 fields"]),
        ("both flags", {"antisymmetric": ["stress"]}, None,
         ["/splits/train/t2_fields/stress", "both symmetric and antisymmetric"]),
        ("not symmetric", {},
         split_with(val__stress=np.arange(2 * T * X * Y * 4.0).reshape(2, T, X, Y, 2, 2)),
         ["/splits/val/t2_fields/stress", "flagged symmetric"]),
        ("missing in split", {}, split_with(val__velocity=None),
         ["/splits/val/t1_fields/velocity", "missing", "split 'train' has it"]),
        ("extra in split", {"orders": {**GRID_KW["orders"], "extra": 0}}, split_with(test__extra=np.zeros(3)),
         ["/splits/test/t0_fields/extra", "not in split 'train'"]),
        ("shape across splits", {}, split_with(val__velocity=np.zeros((2, T, X, Y, 3), np.float32)),
         ["/splits/val/t1_fields/velocity", "per-sample shape (3, 8, 6, 3) here but "
                                            "(3, 8, 6, 2) in split 'train'"]),
        ("dtype across splits", {}, split_with(val__nu=np.zeros(2, np.float64)),
         ["/splits/val/scalars/nu", "dtype float64 here but float32 in split 'train'"]),
        ("unequal N", {}, split_with(val__nu=np.zeros(3, np.float32)),
         ["/splits/val", "disagree on the number of samples", "'nu': 3"]),
        ("inf", {}, split_with(train__vorticity=np.where(ok["vorticity"] > 1, np.inf, ok["vorticity"])),
         ["/splits/train/t0_fields/vorticity", "±inf"]),
        ("string array", {}, split_with(train__nu=np.array(["a"] * 5)),
         ["/splits/train/scalars/nu", "dtype <U1"]),
        ("list not array", {}, split_with(train__nu=[0.1] * 5), ["/splits/train/scalars/nu", "numpy array"]),
        ("sample scalar shape", {}, split_with(train__nu=np.zeros((5, 1), np.float32)),
         ["/splits/train/scalars/nu", "shape (N,)"]),
        ("bad bc", {"boundary_conditions": {"x": BoundaryCondition("periodc", ("x",))}}, None,
         ["/boundary_conditions/x", "'periodc'", "valid: " + ", ".join(BC_TYPES)]),
        ("bc dims", {"boundary_conditions": {"x": BoundaryCondition("open", ("q",))}}, None,
         ["/boundary_conditions/x", "['q']"]),
        ("bad coords", {"dimensions": {**GRID_KW["dimensions"], "x": np.zeros((X, 2))}}, None,
         ["/dimensions/x", "1-D"]),
        ("global scalar array", {"scalars": {"beta": np.ones(3)}}, None,
         ["/scalars/beta", "one real number"]),
        ("reserved attr", {"attrs": {"grid_type": "x"}}, None, ["/", "'grid_type'", "not allowed"]),
        ("bad attr", {"attrs": {"solver": {"f": object()}}}, None, ["attrs['solver']", "JSON"]),
        ("grid type", {"grid_type": "mesh"}, None, ["grid_type 'mesh'", "cartesian, none"]),
        ("bad split name", {}, {"a/b": grid_splits()["train"]}, ["/splits", "'a/b'"]),
    ]


@pytest.mark.parametrize("overrides, splits, parts", [c[1:] for c in _bad_write_cases()],
                         ids=[c[0] for c in _bad_write_cases()])
def test_write_rejects(tmp_path: Path, overrides, splits, parts):
    path = tmp_path / "bad.h5"
    with raises_data_error(path, *parts):
        write_dataset(path, splits=splits if splits is not None else grid_splits(),
                      **{**GRID_KW, **overrides})
    assert list(tmp_path.iterdir()) == []


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)


# --- validation on read -----------------------------------------------------------------------


def _edit(path: Path, change) -> Path:
    with h5py.File(path, "a") as f:
        change(f)
    return path


def _replace(f: h5py.File, name: str, data: np.ndarray, **attrs) -> None:
    old = dict(f[name].attrs)
    del f[name]
    f[name] = data
    f[name].attrs.update({**old, **attrs})


READ_CASES = [
    ("no schema attr", lambda f: f.attrs.__delitem__("flowsci_schema"), ["/", "'flowsci_schema' missing"]),
    ("new schema", lambda f: f.attrs.__setitem__("flowsci_schema", 2), ["/", "reads schema version 1"]),
    ("no group", lambda f: f.__delitem__("boundary_conditions"), ["/boundary_conditions", "group missing"]),
    ("no split group", lambda f: f.__delitem__("splits/test/t2_fields"),
     ["/splits/test/t2_fields", "missing"]),
    ("unexpected", lambda f: f.create_group("splits/val/t3_fields"), ["/splits/val/t3_fields", "unexpected"]),
    ("field missing in split", lambda f: f.__delitem__("splits/val/t1_fields/velocity"),
     ["/splits/val/t1_fields/velocity", "missing"]),
    ("trailing shape", lambda f: _replace(f, "splits/train/t1_fields/velocity", np.zeros((5, T, X, Y))),
     ["/splits/train/t1_fields/velocity", "does not fit a t1 field"]),
    ("t2 not square", lambda f: _replace(f, "splits/train/t2_fields/stress", np.zeros((5, T, X, Y, 2, 3))),
     ["/splits/train/t2_fields/stress", "(D, D)"]),
    ("dims attr length", lambda f: f["splits/test/t0_fields/vorticity"].attrs.__setitem__("dims", ["x", "y"]),
     ["/splits/test/t0_fields/vorticity", "dims ['x', 'y']"]),
    ("dims attr missing", lambda f: f["splits/test/t0_fields/vorticity"].attrs.__delitem__("dims"),
     ["/splits/test/t0_fields/vorticity", "attr 'dims' missing"]),
    ("bc type", lambda f: f["boundary_conditions/lid"].attrs.__setitem__("bc_type", "slip"),
     ["/boundary_conditions/lid", "'slip'", "valid: periodic, wall, open, none"]),
    ("n_samples", lambda f: f["splits/val"].attrs.__setitem__("n_samples", 7),
     ["/splits/val/t0_fields/vorticity", "2 samples", "n_samples is 7"]),
    ("shape across splits",
     lambda f: _replace(f, "splits/test/t1_fields/velocity", np.zeros((3, T, X, Y, 3), "f4")),
     ["/splits/test/t1_fields/velocity", "per-sample shape (3, 8, 6, 3) here but "
                                         "(3, 8, 6, 2) in split 'train'"]),
    ("dtype across splits", lambda f: _replace(f, "splits/test/t0_fields/vorticity", np.zeros((3, T, X, Y))),
     ["/splits/test/t0_fields/vorticity", "dtype float64 here but float32 in split 'train'"]),
    ("flags across splits", lambda f: f["splits/test/t2_fields/stress"].attrs.__setitem__("symmetric", False),
     ["/splits/test/t2_fields/stress", "symmetric False here but True in split 'train'"]),
    ("flag type", lambda f: f["splits/val/t2_fields/stress"].attrs.__setitem__("symmetric", 1),
     ["/splits/val/t2_fields/stress", "true or false"]),
    ("varying coords", lambda f: f["dimensions/time"].attrs.__setitem__("time_varying", True),
     ["/dimensions/time", "not supported"]),
    ("global scalar", lambda f: _replace(f, "scalars/beta", np.ones(2)),
     ["/scalars/beta", "one real number"]),
    ("no splits", lambda f: [f["splits"].__delitem__(s) for s in SIZES], ["/splits", "no splits"]),
    ("string data", lambda f: _replace(f, "splits/train/scalars/nu", np.array([b"a"] * 5)),
     ["/splits/train/scalars/nu", "dtype |S1"]),
]


@pytest.mark.parametrize("change, parts", [c[1:] for c in READ_CASES], ids=[c[0] for c in READ_CASES])
def test_validate_rejects(grid_file: Path, change, parts):
    _edit(grid_file, change)
    with raises_data_error(grid_file, *parts):
        validate(grid_file)
    with raises_data_error(grid_file, *parts):
        LazyH5Dataset(grid_file, "train")


def test_missing_file(tmp_path: Path):
    with raises_data_error(tmp_path / "nope.h5", "no such file", "flowsci data make"):
        load_split(tmp_path / "nope.h5", "train")


def test_not_hdf5(tmp_path: Path):
    path = tmp_path / "x.h5"
    path.write_text("hello")
    with raises_data_error(path, "not a readable HDF5 file"):
        validate(path)


def test_truncated_file(grid_file: Path):
    data = grid_file.read_bytes()
    grid_file.write_bytes(data[: len(data) // 2])
    with raises_data_error(grid_file, "not a readable HDF5 file"):
        validate(grid_file)


def test_unknown_split_and_field(grid_file: Path):
    with raises_data_error(grid_file, "/splits/valid", "did you mean 'val'", "available: train, val, test"):
        load_split(grid_file, "valid")
    with raises_data_error(grid_file, "/splits/train/velocty",
                           "available: vorticity, velocity, stress, nu, seed"):
        InMemoryDataset.from_file(grid_file, "train", ["velocty"])
    with raises_data_error(grid_file, "/splits/train", "list of names"):
        load_split(grid_file, "train", "velocity")


def test_schema_version_constant():
    assert SCHEMA_VERSION == 1


# --- Datasets ---------------------------------------------------------------------------------


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        assert torch.equal(a[name], b[name]), name


def test_in_memory_and_lazy_agree(grid_file: Path):
    memory, lazy = InMemoryDataset.from_file(grid_file, "train"), LazyH5Dataset(grid_file, "train")
    assert len(memory) == len(lazy) == SIZES["train"]
    for i in (0, 3, -1):
        _assert_same(memory[i], lazy[i])
    for indices in ([4, 0, 2], [1, 1, 3], [], list(range(5))):
        _assert_same(memory.__getitems__(indices), lazy.__getitems__(indices))
    assert memory[2]["stress"].shape == (T, X, Y, 2, 2) and memory[2]["nu"].shape == ()
    with pytest.raises(IndexError):
        lazy[5]
    with pytest.raises(IndexError):
        lazy.__getitems__([0, -6])


def test_lazy_field_subset(point_file: Path):
    lazy = LazyH5Dataset(point_file, "val", ["label"])
    assert list(lazy[0]) == ["label"] and lazy.meta.name == "moons"


def test_lazy_pickles_without_handle(point_file: Path):
    lazy = LazyH5Dataset(point_file, "train")
    first = lazy[0]
    clone = pickle.loads(pickle.dumps(lazy))
    assert clone._file is None
    _assert_same(clone[0], first)


def test_lazy_in_dataloader_workers(point_file: Path):
    lazy = LazyH5Dataset(point_file, "train")
    lazy[0]  # the parent opens its handle before the workers start
    loader = DataLoader(lazy, batch_size=2, shuffle=True, num_workers=2, collate_fn=dict, timeout=60,
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [len(b["x"]) for b in batches] == [2, 2, 1]
    got = torch.cat([b["x"] for b in batches])
    expected = load_split(point_file, "train")["x"]
    assert torch.equal(got[got[:, 0].argsort()], expected[expected[:, 0].argsort()])


def test_in_memory_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same first dimension"):
        InMemoryDataset({"a": torch.zeros(3, 2), "b": torch.zeros(4)})
    with pytest.raises(ValueError, match="at least one"):
        InMemoryDataset({})
    with pytest.raises(TypeError, match="sample axis"):
        InMemoryDataset({"a": torch.tensor(1.0)})


def test_data_splits_from_file(grid_file: Path, point_file: Path):
    for lazy in (False, True):
        data = DataSplits.from_file(grid_file, lazy=lazy, fields=["velocity"])
        assert [len(d) for d in (data.train, data.val, data.test)] == list(SIZES.values())
        assert list(data.val[0]) == ["velocity"] and data.meta.name == "kolmogorov"
    one_split = write_dataset(point_file.with_name("one.h5"), name="one",
                              splits={"train": {"x": np.zeros((2, 2))}}, orders={"x": 1})
    with raises_data_error(one_split, "/splits", "missing split(s) ['val', 'test']"):
        DataSplits.from_file(one_split)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("FLOWSCI_DATA", raising=False)
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("FLOWSCI_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_corrupted_bytes_give_data_error(grid_file: Path):
    good = grid_file.read_bytes()
    for start in range(0, 4000, 61):
        grid_file.write_bytes(good[:start] + bytes(range(7, 231, 7)) + good[start + 32:])
        try:
            validate(grid_file)
        except DataError as exc:
            assert str(grid_file) in str(exc)
