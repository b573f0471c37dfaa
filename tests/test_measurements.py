"""Oracle tests of the measurement operators: dot-product (adjoint) tests, dense-matrix solves,
scipy references and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from flowsci.measurements import (
    Blur,
    Downsample,
    Mask,
    MeasurementOperator,
    Probes,
    box_mask,
    observe,
    random_mask,
)

F64 = torch.float64
IMAGE = (2, 8, 6)  # (C, H, W)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _operators() -> list[tuple[str, MeasurementOperator, tuple[int, ...]]]:
    """(name, operator, the shape D of the states it acts on)."""
    return [
        ("mask", Mask(random_mask(IMAGE, 0.4, _generator(1))), IMAGE),
        ("pixel_mask", Mask(random_mask((1, *IMAGE[1:]), 0.4, _generator(2))), IMAGE),
        ("box_mask", Mask(box_mask(IMAGE, 2, 1, 3, 4)), IMAGE),
        ("blur", Blur(5, 1.3), IMAGE),
        ("blur_wide", Blur(9, 3.0), IMAGE),  # kernel wider than the image is tall in places
        ("downsample", Downsample(2), IMAGE),
        ("probes", Probes(torch.tensor([0, 5, 17, 40, 95]), IMAGE), IMAGE),
        ("probes_field", Probes.from_mask(torch.rand(7, 9, generator=_generator(3)) < 0.3), (7, 9)),
    ]


def _dense(op: MeasurementOperator, shape: tuple[int, ...]) -> torch.Tensor:
    """The operator's matrix (M, N), column j = A e_j, from a batch of all basis states."""
    n = math.prod(shape)
    return op(torch.eye(n, dtype=F64).reshape(n, *shape)).reshape(n, -1).T


@pytest.mark.parametrize("name,op,shape", _operators(), ids=[o[0] for o in _operators()])
def test_adjoint_passes_the_dot_product_test(name: str, op: MeasurementOperator, shape: tuple[int, ...]):
    x = torch.randn(3, *shape, generator=_generator(4), dtype=F64)
    ax = op(x)
    y = torch.randn(ax.shape, generator=_generator(5), dtype=F64)
    aty = op.adjoint(y)
    assert aty.shape == x.shape
    lhs, rhs = (ax * y).flatten(1).sum(1), (x * aty).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-12)
    # the same on the matrix: the adjoint's matrix is the transpose
    matrix = _dense(op, shape)
    m = matrix.shape[0]
    adjoint_matrix = op.adjoint(torch.eye(m, dtype=F64).reshape(m, *ax.shape[1:])).reshape(m, -1)
    torch.testing.assert_close(adjoint_matrix, matrix, rtol=0, atol=1e-12)


def test_mask_is_idempotent_and_its_baseline_is_the_least_squares_answer():
    op = Mask(random_mask(IMAGE, 0.3, _generator(6)))
    x = torch.randn(2, *IMAGE, generator=_generator(7), dtype=F64)
    torch.testing.assert_close(op(op(x)), op(x), rtol=0, atol=0)
    y = op(x)
    # the minimum-norm least-squares solution A^+ y, from the dense matrix
    matrix = _dense(op, IMAGE)
    lstsq = (torch.linalg.pinv(matrix) @ y.flatten(1).T).T.reshape(y.shape)
    torch.testing.assert_close(op.baseline(y), lstsq, rtol=0, atol=1e-12)


def test_box_and_random_masks():
    box = box_mask((3, 10, 12), top=2, left=5, height=4, width=3)
    assert box.shape == (3, 10, 12) and int((box == 0).sum()) == 3 * 4 * 3
    assert bool((box[:, 2:6, 5:8] == 0).all())
    kept = random_mask((3, 10, 12), 0.25, _generator(8))
    assert int(kept.sum()) == round(0.25 * 360)
    torch.testing.assert_close(kept, random_mask((3, 10, 12), 0.25, _generator(8)))
    assert not torch.equal(kept, random_mask((3, 10, 12), 0.25, _generator(9)))


def test_blur_matches_scipy_and_keeps_constants_away_from_the_borders():
    op = Blur(5, 1.1)
    assert math.isclose(float(op.kernel.sum()), 1.0, rel_tol=1e-14)
    constant = torch.full((1, 2, 12, 11), 3.0, dtype=F64)
    blurred = op(constant)
    torch.testing.assert_close(blurred[..., 2:-2, 2:-2], constant[..., 2:-2, 2:-2], rtol=1e-14, atol=0)
    assert float(blurred[0, 0, 0, 0]) < 3.0  # zero padding darkens the corners
    x = torch.randn(2, 3, 9, 7, generator=_generator(10), dtype=F64)
    kernel = op.kernel.numpy()
    reference = np.stack([[ndimage.correlate(channel, kernel, mode="constant", cval=0.0) for channel in image]
                          for image in x.numpy()])
    np.testing.assert_allclose(op(x).numpy(), reference, rtol=1e-12, atol=1e-14)


def test_blur_baseline_solves_the_tikhonov_normal_equations():
    op, shape, lam = Blur(3, 1.0), (2, 4, 5), 1e-2
    y = torch.randn(2, *shape, generator=_generator(11), dtype=F64)
    x = op.baseline(y, regularization=lam, tol=1e-12)
    matrix = _dense(op, shape)
    normal = matrix.T @ matrix + lam * torch.eye(matrix.shape[1], dtype=F64)
    reference = torch.linalg.solve(normal, matrix.T @ y.flatten(1).T).T.reshape(y.shape)
    torch.testing.assert_close(x, reference, rtol=0, atol=1e-9)
    # a milder regularisation fits the data better
    looser = op.baseline(y, regularization=1e-4, tol=1e-12)
    assert float((op(looser) - y).norm()) < float((op(x) - y).norm())


def test_downsample_averages_blocks_and_keeps_constants():
    op = Downsample(3)
    x = torch.randn(2, 2, 6, 9, generator=_generator(12), dtype=F64)
    blocks = x.numpy().reshape(2, 2, 2, 3, 3, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(op(x).numpy(), blocks, rtol=1e-13)
    constant = torch.full((1, 1, 6, 9), -1.5, dtype=F64)
    torch.testing.assert_close(op(constant), torch.full((1, 1, 2, 3), -1.5, dtype=F64))
    for mode in ("bicubic", "bilinear"):
        up = op.baseline(op(constant), mode=mode)
        torch.testing.assert_close(up, constant, rtol=1e-12, atol=1e-12)


def test_probe_baselines_interpolate_a_plane_exactly():
    rows, cols = 6, 7
    ii, jj = torch.meshgrid(torch.arange(rows, dtype=F64), torch.arange(cols, dtype=F64), indexing="ij")
    plane = (0.5 * ii - 1.3 * jj + 2.0)[None]
    corners = [0, cols - 1, (rows - 1) * cols, rows * cols - 1]
    op = Probes(torch.tensor([*corners, 9, 17, 23, 30]), (rows, cols))
    y = op(plane)
    torch.testing.assert_close(op.baseline(y, method="linear"), plane, rtol=0, atol=1e-12)
    nearest = op.baseline(y, method="nearest").flatten(1)
    torch.testing.assert_close(nearest[:, op.indices], y)
    zero = op.baseline(y).flatten(1)
    assert float(zero.abs().sum()) == pytest.approx(float(y.abs().sum()))


def test_observe_adds_gaussian_noise_of_the_given_std():
    op = Mask(torch.ones(50, 40))
    x = torch.randn(50, 50, 40, generator=_generator(13), dtype=F64)
    torch.testing.assert_close(observe(op, x), x, rtol=0, atol=0)
    y = observe(op, x, 0.1, _generator(14))
    noise = y - x
    assert abs(float(noise.std()) / 0.1 - 1) < 0.02 and abs(float(noise.mean())) < 3e-3
    torch.testing.assert_close(y, observe(op, x, 0.1, _generator(14)))


BAD_INPUTS = {
    "mask_not_binary": lambda: Mask(torch.full((3, 3), 0.5)),
    "mask_shape": lambda: Mask(torch.ones(2, 3))(torch.ones(1, 3, 2)),
    "box_outside": lambda: box_mask((4, 4), 2, 2, 3, 1),
    "box_empty": lambda: box_mask((4, 4), 0, 0, 0, 1),
    "keep_zero": lambda: random_mask((4, 4), 0.0),
    "keep_above_one": lambda: random_mask((4, 4), 1.5),
    "blur_even_kernel": lambda: Blur(4, 1.0),
    "blur_sigma_zero": lambda: Blur(3, 0.0),
    "blur_not_images": lambda: Blur(3, 1.0)(torch.ones(2, 4, 4)),
    "blur_no_regularization": lambda: Blur(3, 1.0).baseline(torch.ones(1, 1, 4, 4), regularization=0.0),
    "downsample_factor_zero": lambda: Downsample(0),
    "downsample_not_divisible": lambda: Downsample(2)(torch.ones(1, 1, 5, 4)),
    "downsample_mode": lambda: Downsample(2).baseline(torch.ones(1, 1, 2, 2), mode="nearest"),
    "probes_repeated": lambda: Probes(torch.tensor([0, 0]), (3, 3)),
    "probes_out_of_range": lambda: Probes(torch.tensor([9]), (3, 3)),
    "probes_float": lambda: Probes(torch.tensor([0.5]), (3, 3)),
    "probes_shape": lambda: Probes(torch.tensor([0, 1]), (3, 3))(torch.ones(1, 9)),
    "probes_method": lambda: Probes(torch.tensor([0, 1, 5]), (3, 3)).baseline(torch.ones(1, 3),
                                                                              method="cubic"),
    "probes_griddata_3d": lambda: Probes(torch.tensor([0, 1, 5]), (1, 3, 3)).baseline(torch.ones(1, 3),
                                                                                      method="linear"),
    "noise_negative": lambda: observe(Mask(torch.ones(2)), torch.ones(1, 2), -0.1),
}


@pytest.mark.parametrize("make", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise(make):
    with pytest.raises(ValueError):
        make()
