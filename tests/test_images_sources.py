"""The images domain's extra sources: the idx reader and Fashion-MNIST-style folders (on small
idx files written here), scikit-learn's 8×8 digits, scikit-image's LFW subset, the dispatch of
``load_source`` and a data file built from each kind of new source."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from conftest import REPO

from flowsci.config import load_config
from flowsci.data import ensure_data, load_split, read_meta
from flowsci.errors import DataError
from flowsci.registry import create_domain
from flowsci_domains.images.domain import source_digest
from flowsci_domains.images.sources import (
    FASHION_CLASSES,
    FASHION_MNIST,
    IDX_SPLITS,
    digits8,
    fashion_mnist,
    from_idx_folder,
    is_idx_folder,
    lfw,
    load_source,
    read_idx,
)

IMAGES_YAML = REPO / "domains" / "images.yaml"
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as an idx file: 00 00 <type> <ndim>, the dims (big-endian uint32), the values."""
    header = bytes([0, 0, TYPE_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    data = idx_bytes(array)
    path.with_name(path.name + ".gz" if gz else path.name).write_bytes(gzip.compress(data) if gz else data)


def idx_folder(folder, n_train: int = 30, n_test: int = 10, size: int = 4, classes: int = 10,
               gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic Fashion-MNIST-style idx files in ``folder``: uint8 (n, size, size) and labels cycling
    over ``classes``; returns all images (train then t10k) and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_train + n_test, size, size), dtype=np.uint8)
    labels = (np.arange(n_train + n_test) % classes).astype(np.uint8)
    for (image_stem, label_stem), rows in zip(IDX_SPLITS.values(),
                                              (slice(0, n_train), slice(n_train, None))):
        write_idx(folder / image_stem, images[rows], gz)
        write_idx(folder / label_stem, labels[rows], gz)
    return images, labels


# --- the idx reader ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, gz, dtype):
    array = (np.random.default_rng(0).normal(size=(3, 5, 2)) * 100).astype(dtype)
    write_idx(tmp_path / "a-idx3-ubyte", array, gz)
    got = read_idx(tmp_path / ("a-idx3-ubyte.gz" if gz else "a-idx3-ubyte"))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and np.array_equal(got, array)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "l-idx1-ubyte", labels, gz)
    assert read_idx(tmp_path / ("l-idx1-ubyte.gz" if gz else "l-idx1-ubyte")).tolist() == list(range(7))


def test_idx_bad_magic_truncation_and_broken_gzip_are_clear_errors(tmp_path):
    good = idx_bytes(np.zeros((4, 3, 3), np.uint8))
    (tmp_path / "magic").write_bytes(b"\x08\x03" + good[2:])
    with pytest.raises(DataError, match=r"magic.*0803.*expected 00 00"):
        read_idx(tmp_path / "magic")
    (tmp_path / "type").write_bytes(b"\0\0\x07\x03" + good[4:])
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "type")
    (tmp_path / "short").write_bytes(good[:-5])
    with pytest.raises(DataError, match=r"short: truncated .*need 36 bytes.*has 31"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(good[:9])
    with pytest.raises(DataError, match="truncated idx header"):
        read_idx(tmp_path / "header")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(DataError, match="broken.gz: a damaged or truncated gzip"):
        read_idx(tmp_path / "broken.gz")


# --- Fashion-MNIST-style folders -----------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_concatenates_train_and_t10k_with_fashion_names(tmp_path, gz):
    images, labels = idx_folder(tmp_path / "fashion", gz=gz)
    assert is_idx_folder(tmp_path / "fashion") and not is_idx_folder(tmp_path)
    got, got_labels, names = fashion_mnist(tmp_path / "fashion")
    assert got.shape == (40, 1, 4, 4) and got.dtype == np.uint8 and got_labels.dtype == np.int64
    assert np.array_equal(got[:, 0], images) and np.array_equal(got_labels, labels)
    assert names == FASHION_CLASSES and len(names) == 10 and names[0] == "T-shirt/top"


def test_idx_folder_errors_and_class_names_file(tmp_path):
    with pytest.raises(DataError, match="apt install dataset-fashion-mnist"):
        fashion_mnist(tmp_path)
    idx_folder(tmp_path / "letters", classes=12)
    with pytest.raises(DataError, match=r"labels run 0..11 .* name 10 classes; put class_names.txt"):
        from_idx_folder(tmp_path / "letters")
    (tmp_path / "letters" / "class_names.txt").write_text("\n".join("abcdefghijkl") + "\n")
    assert from_idx_folder(tmp_path / "letters")[2] == list("abcdefghijkl")
    (tmp_path / "letters" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k has t10k-images-idx3-ubyte but not t10k-labels"):
        from_idx_folder(tmp_path / "letters")


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="apt install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    images, labels, names = fashion_mnist()
    assert images.shape == (70000, 1, 28, 28) and np.bincount(labels).tolist() == [7000] * 10
    assert labels[:5].tolist() == [9, 0, 0, 3, 0] and names[9] == "Ankle boot"


# --- scikit-learn's digits and scikit-image's faces ----------------------------------------


def test_digits8_is_sklearns_1797_digits_in_unit_range():
    pytest.importorskip("sklearn")
    images, labels, names = digits8()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == 1 and names == [str(k) for k in range(10)]
    assert labels.dtype == np.int64 and np.bincount(labels).min() >= 170 and len(np.unique(labels)) == 10


def test_lfw_is_100_faces_then_100_non_faces():
    pytest.importorskip("skimage")
    images, labels, names = lfw()
    assert images.shape == (200, 1, 25, 25) and 0 <= images.min() and images.max() <= 1
    assert names == ["non-face", "face"] and labels.tolist() == [1] * 100 + [0] * 100


def test_load_source_dispatches_names_idx_folders_pngs_and_npz(tmp_path, monkeypatch):
    import flowsci_domains.images.sources as sources

    for name in ("mnist5k", "fashion_mnist", "digits8", "lfw"):
        monkeypatch.setitem(sources.NAMED, name, lambda name=name: name)
        assert load_source(name) == name
    images, _ = idx_folder(tmp_path / "idx", gz=False)
    assert np.array_equal(load_source(str(tmp_path / "idx"))[0][:, 0], images)
    monkeypatch.setattr(sources, "from_png_folder", lambda path: ("png", path))
    assert load_source(str(tmp_path)) == ("png", tmp_path)  # a folder without idx files
    with pytest.raises(DataError, match="digits8, lfw, an .npz file, a folder of PNGs or a folder of idx"):
        load_source(str(tmp_path / "none.npz"))


# --- data files from the new sources -------------------------------------------------------


def config(source: str, resolution: int, n: int):
    return load_config(IMAGES_YAML, [f"domain.source={source}", f"domain.resolution={resolution}",
                                     f"data.n_val={n}", f"data.n_test={n}"])


def test_data_files_from_an_idx_folder_follow_its_content(tmp_path):
    idx_folder(tmp_path / "fashion", n_train=60, n_test=20, size=8, classes=4)
    domain, cfg = create_domain("images"), config(str(tmp_path / "fashion"), 4, 8)
    path = ensure_data(domain, cfg)
    assert path.name.startswith("fashion_4px_val8_test8_seed0_")
    meta = read_meta(path)
    assert meta.attrs["class_names"] == FASHION_CLASSES and meta.fields["image"].shape == (1, 4, 4)
    assert len(load_split(path, "train", ["label"])["label"]) == 64
    digest = source_digest(str(tmp_path / "fashion"))
    idx_folder(tmp_path / "fashion", n_train=60, n_test=20, size=8, classes=4, seed=1)
    assert source_digest(str(tmp_path / "fashion")) != digest and ensure_data(domain, cfg) != path


def test_data_file_from_digits8_is_named_by_the_source():
    pytest.importorskip("sklearn")
    domain, cfg = create_domain("images"), config("digits8", 4, 100)
    assert source_digest("digits8") == "digits8" and domain.data_name(cfg).startswith("digits8_4px")
    path = ensure_data(domain, cfg)
    x = load_split(path, "test", ["image"])["image"]
    assert x.shape == (100, 1, 4, 4) and 0 <= float(x.min()) and float(x.max()) <= 1
