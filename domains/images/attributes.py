"""Attributes measured from digit images: stroke thickness, slant, size and position.

Every function takes a batch ``images`` (N, H, W) or (N, 1, H, W), float in [0, 1] with the ink
bright (clamp generated samples to [0, 1] first; other values are refused), and measures the
whole batch at once. A pixel is ink when its value is at least ``INK``. Image coordinates: x to
the right along the columns, y down the rows.

An image without ink has thickness 0, slant 0, size 0 and position (0.5, 0.5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INK = 0.3  # a pixel at least this bright is ink (thickness' run counts, size's bounding box)

# Scan lines of the Crofton length in thickness(): the step (dy, dx) along a line and the
# distance between neighbouring lines (rows, columns, and the two diagonals).
_SCANS = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, math.sqrt(0.5)), (1, -1, math.sqrt(0.5)))


def _batch(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) in [0, 1] -> float (N, H, W)."""
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    images = images.float()
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1] with the ink bright, got [{images.min():.3g}, "
                         f"{images.max():.3g}]; map model outputs in [-1, 1] by (x + 1) / 2 and clamp")
    return images


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Intensity-weighted centroid and second central moments of (N, H, W) in pixel units
    (pixel centres at j + 0.5, i + 0.5): cx, cy, mu_xy, mu_yy, each (N,); the centre of the
    image and zeros for an image without ink."""
    height, width = x.shape[1:]
    ys = torch.arange(height, dtype=x.dtype)[:, None] + 0.5
    xs = torch.arange(width, dtype=x.dtype)[None, :] + 0.5
    mass = x.sum((1, 2))
    empty = mass <= 0
    mass = torch.where(empty, 1.0, mass)
    cx = torch.where(empty, width / 2, (x * xs).sum((1, 2)) / mass)
    cy = torch.where(empty, height / 2, (x * ys).sum((1, 2)) / mass)
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    return cx, cy, (x * dx * dy).sum((1, 2)) / mass, (x * dy * dy).sum((1, 2)) / mass


def _runs(mask: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Runs of True in (N, H, W) along the scan lines of step (dy, dx): (N,) float. A diagonal
    scan would miss the lines between the pixels of an 8-connected step across it (down and to
    the side opposite dx); the pixel below the step's first, beside its second, bridges them."""
    height, width = mask.shape[1:]
    padded = F.pad(mask, (1, 1, 1, 1))  # a zero border: every run starts after a False

    def shifted(sy: int, sx: int) -> torch.Tensor:  # padded[i - sy, j - sx] at each pixel
        return padded[:, 1 - sy:1 - sy + height, 1 - sx:1 - sx + width]

    if dx:
        mask = mask | (shifted(1, 0) & shifted(0, dx))
        padded = F.pad(mask, (1, 1, 1, 1))
    return (mask & ~shifted(dy, dx)).sum((1, 2)).float()


def thickness(images: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels (N,): ink mass A over stroke length.

    A is the sum of the intensities: block averaging keeps it at width × length for solid ink,
    however blurred the edges. The length comes from the Cauchy-Crofton formula: the number of
    runs of ink pixels along rows, columns and both diagonals, times the spacing of those scan
    lines, are the ink's projected widths, and (pi / 2) × their mean is half its perimeter P / 2,
    which is L + w for a bar of length L and width w. Solving w L = A, w + L = P / 2 gives
    w = (P/2 - sqrt((P/2)^2 - 4 A)) / 2 (P / 4 for a compact blob, where the root is negative).
    Runs only need the stroke found, not its edges, so strokes one pixel wide and anti-aliased
    ones are measured at 14×14 as at 28×28; a closed loop (no ends, P / 2 = L) reads slightly
    thick, by a factor 1 + w / L. Bars of width 1 to 4 and length >= 12 at 28×28: within 25 %.
    """
    x = _batch(images)
    ink = x >= INK
    projections = [_runs(ink, dy, dx) * spacing for dy, dx, spacing in _SCANS]
    half_perimeter = math.pi / 2 * torch.stack(projections).mean(0)
    root = (half_perimeter ** 2 - 4 * x.sum((1, 2))).clamp(min=0).sqrt()
    return (half_perimeter - root) / 2


def slant(images: torch.Tensor) -> torch.Tensor:
    """Shear of the ink (N,): -mu_xy / mu_yy of the intensity distribution, with y down the rows.
    Positive when the top leans right (x grows going up), negative when it leans left; a
    vertical stroke sheared by x' = x + s × (height above the centre) gives s."""
    _, _, mu_xy, mu_yy = _moments(_batch(images))
    return -mu_xy / mu_yy.clamp(min=1e-12)


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """(N, L) bool -> (N,) float: positions from the first True to the last, 0 when none."""
    length = mask.shape[1]
    index = torch.arange(length)
    first = torch.where(mask, index, length).amin(1)
    last = torch.where(mask, index, -1).amax(1)
    return (last - first + 1).clamp(min=0).float()


def size(images: torch.Tensor) -> torch.Tensor:
    """Area of the ink's bounding box (pixels >= INK) as a fraction of the image area (N,), in
    [0, 1]. MNIST's digits are scaled to one height, so on MNIST this mostly follows the width."""
    x = _batch(images)
    ink = x >= INK
    return _extent(ink.any(2)) * _extent(ink.any(1)) / (x.shape[1] * x.shape[2])


def position(images: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid (N, 2) as (cx, cy) in [0, 1]: (0, 0) the top-left corner of
    the image, (1, 1) the bottom-right."""
    x = _batch(images)
    cx, cy, _, _ = _moments(x)
    return torch.stack([cx / x.shape[2], cy / x.shape[1]], dim=1)
