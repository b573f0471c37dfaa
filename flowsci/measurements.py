"""Linear measurement operators y = A x for inverse problems, with their adjoints and baselines.

Every operator acts on a batch x: (B, *D) and returns y: (B, *M); ``adjoint(y)`` applies A^T
(<A x, y> = <x, A^T y> for every x, y) and ``baseline(y)`` is a plain reconstruction without a
prior, the number a generative method has to beat:

- :class:`Mask`: inpainting, y = mask * x; baseline zero fill (the minimum-norm least-squares x);
  masks from :func:`box_mask` and :func:`random_mask`;
- :class:`Blur`: Gaussian blur with zero padding; baseline Tikhonov-regularised least squares
  (A^T A + lam I)^-1 A^T y by conjugate gradients;
- :class:`Downsample`: average pooling; baseline bicubic (or bilinear) interpolation;
- :class:`Probes`: point observations of a field; baseline zero fill, or scipy's ``griddata``
  interpolation on a 2-D grid.

:func:`observe` adds Gaussian measurement noise. Buffers (masks, kernels, indices) follow the
dtype and device of the input at each call.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import griddata


class MeasurementOperator(ABC):
    """A linear map A from states x: (B, *D) to measurements y: (B, *M)."""

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A x: x (B, *D) -> (B, *M)."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y: y (B, *M) -> (B, *D)."""

    @abstractmethod
    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """A reconstruction from y (B, *M) without a prior -> (B, *D)."""


def observe(op: MeasurementOperator, x: torch.Tensor, noise_std: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy measurements A x + noise_std * n, n ~ N(0, I) drawn from ``generator`` (on x's device).
    x: (B, *D) -> (B, *M)."""
    if not (_is_number(noise_std) and 0 <= noise_std < math.inf):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    y = op(x)
    if noise_std == 0:
        return y
    return y + noise_std * torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)


class Mask(MeasurementOperator):
    """y = mask * x, with mask (*D) of zeros and ones (1 = observed), or a shape that broadcasts to
    D (e.g. (1, H, W) to hide whole pixels of a (C, H, W) image). A is an orthogonal projection:
    A^T = A, and y itself is the minimum-norm least-squares answer (zero fill)."""

    def __init__(self, mask: torch.Tensor):
        mask = torch.as_tensor(mask)
        if mask.dim() < 1 or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be a tensor of zeros and ones (1 = observed) with at least one "
                             f"dimension, got shape {tuple(mask.shape)}, values {mask.unique()[:5].tolist()}")
        self.mask = mask

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._mask_for(x, "x") * x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._mask_for(y, "y") * y

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """Zero fill: the observed entries of y, zeros elsewhere."""
        return self.adjoint(y)

    def _mask_for(self, x: torch.Tensor, name: str) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        try:
            fits = x.dim() >= 2 and torch.broadcast_shapes(self.mask.shape, shape) == shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"{name} must be a batch (B, *D) whose D {shape} the mask of shape "
                             f"{tuple(self.mask.shape)} broadcasts to, got shape {tuple(x.shape)}")
        return self.mask.to(dtype=x.dtype, device=x.device)


def box_mask(shape: tuple[int, ...], top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A mask of ``shape`` (*C, H, W) that hides the box rows [top, top + height) and columns
    [left, left + width) of every channel: 0 in the box, 1 (observed) elsewhere. float32."""
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ValueError(f"shape must be (*C, H, W) with positive sizes, got {shape!r}")
    rows, cols = shape[-2:]
    if not (0 <= top and 0 <= left and height >= 1 and width >= 1 and top + height <= rows
            and left + width <= cols):
        raise ValueError(f"the box (top={top}, left={left}, height={height}, width={width}) must be "
                         f"non-empty and inside the {rows}x{cols} image")
    mask = torch.ones(shape)
    mask[..., top:top + height, left:left + width] = 0.0
    return mask


def random_mask(shape: tuple[int, ...], keep: float, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """A mask of ``shape`` observing round(keep * numel) entries chosen uniformly at random, the
    others 0 (random-pixel inpainting; pass (1, H, W) to hide pixels across channels). float32."""
    if any(n < 1 for n in shape):
        raise ValueError(f"shape must have positive sizes, got {shape!r}")
    if not (_is_number(keep) and 0 < keep <= 1):
        raise ValueError(f"keep must be the observed fraction in (0, 1], got {keep!r}")
    numel = math.prod(shape)
    kept = torch.randperm(numel, generator=generator)[:round(keep * numel)]
    mask = torch.zeros(numel)
    mask[kept] = 1.0
    return mask.reshape(shape)


class Blur(MeasurementOperator):
    """Gaussian blur of each channel of x: (B, C, H, W), with zero ('same') padding: y (B, C, H, W).

    The kernel is the normalised (sum 1) outer product of two 1-D Gaussians of standard deviation
    ``sigma`` pixels on ``kernel_size`` (odd) taps. The adjoint is the transposed convolution.
    """

    def __init__(self, kernel_size: int, sigma: float):
        if not (_is_integer(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
        if not (_is_number(sigma) and 0 < sigma < math.inf):
            raise ValueError(f"sigma must be a finite number > 0 (pixels), got {sigma!r}")
        offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
        taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
        taps = taps / taps.sum()
        self.kernel = torch.outer(taps, taps)  # (k, k), sums to 1
        self.kernel_size = kernel_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self._weight(x, "x"), padding=self.kernel_size // 2, groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, self._weight(y, "y"), padding=self.kernel_size // 2, groups=y.shape[1])

    def baseline(self, y: torch.Tensor, *, regularization: float = 1e-3, iterations: int = 200,
                 tol: float = 1e-6) -> torch.Tensor:
        """Tikhonov deconvolution: argmin_x |A x - y|^2 + regularization |x|^2, i.e. the solution of
        (A^T A + regularization I) x = A^T y, by conjugate gradients per sample (at most
        ``iterations``, until |residual| <= tol |A^T y|). y: (B, C, H, W) -> (B, C, H, W)."""
        if not (_is_number(regularization) and 0 < regularization < math.inf):
            raise ValueError(f"regularization must be a finite number > 0, got {regularization!r}")
        return _conjugate_gradient(lambda x: self.adjoint(self(x)) + regularization * x, self.adjoint(y),
                                   iterations=iterations, tol=tol)

    def _weight(self, x: torch.Tensor, name: str) -> torch.Tensor:
        _check_images(x, name)
        kernel = self.kernel.to(dtype=x.dtype, device=x.device)
        return kernel.expand(x.shape[1], 1, *kernel.shape)


def _conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *,
                        iterations: int, tol: float) -> torch.Tensor:
    """Solve apply(x) = b per sample for a symmetric positive definite ``apply``. b: (B, *D)."""
    if not (_is_integer(iterations) and iterations >= 1):
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if not (_is_number(tol) and 0 < tol < math.inf):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")

    def dot(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (u * w).flatten(1).sum(1).reshape(-1, *[1] * (b.dim() - 1))

    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = dot(r, r)
    target = tol**2 * rr
    for _ in range(iterations):
        if bool((rr <= target).all()):
            break
        ap = apply(p)
        p_ap = dot(p, ap)
        alpha = torch.where(p_ap > 0, rr / p_ap, torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * ap
        rr_next = dot(r, r)
        p = r + torch.where(rr > 0, rr_next / rr, torch.zeros_like(rr)) * p
        rr = rr_next
    return x


class Downsample(MeasurementOperator):
    """Average pooling of x: (B, C, H, W) over factor x factor blocks: y (B, C, H / factor, W / factor).
    The adjoint is nearest upsampling divided by factor^2."""

    def __init__(self, factor: int):
        if not (_is_integer(factor) and factor >= 1):
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        self.factor = factor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"x must be a batch of images (B, C, H, W) with H and W divisible by "
                             f"factor={self.factor}, got shape {tuple(x.shape)}")
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_images(y, "y")
        return y.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1) / self.factor**2

    def baseline(self, y: torch.Tensor, *, mode: str = "bicubic") -> torch.Tensor:
        """Interpolation back to full size, ``mode`` 'bicubic' or 'bilinear' (align_corners=False).
        y: (B, C, h, w) -> (B, C, h * factor, w * factor)."""
        if mode not in ("bicubic", "bilinear"):
            raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
        _check_images(y, "y")
        size = (y.shape[-2] * self.factor, y.shape[-1] * self.factor)
        return F.interpolate(y, size=size, mode=mode, align_corners=False)


def _check_images(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


class Probes(MeasurementOperator):
    """Point observations of a field: y = x.flatten(1)[:, indices], x: (B, *shape) -> y: (B, P).

    ``indices``: (P,) distinct positions in the flattened field of ``shape``; :meth:`from_mask`
    takes a boolean mask of the field instead. The adjoint scatters y into zeros.
    """

    def __init__(self, indices: torch.Tensor, shape: tuple[int, ...]):
        indices = torch.as_tensor(indices)
        shape = tuple(int(n) for n in shape)
        numel = math.prod(shape)
        if not shape or numel < 1:
            raise ValueError(f"shape must be the field's non-empty shape, got {shape!r}")
        integer = not (indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool)
        if indices.dim() != 1 or indices.numel() < 1 or not integer:
            raise ValueError("indices must be a non-empty 1-D integer tensor of flat positions, got "
                             f"{indices.dtype} of shape {tuple(indices.shape)}")
        if bool(((indices < 0) | (indices >= numel)).any()) or indices.unique().numel() != indices.numel():
            raise ValueError(f"indices must be distinct flat positions in [0, {numel}) of a field of "
                             f"shape {shape}")
        self.indices, self.shape = indices.long(), shape

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Probes:
        """Probes at the True (or non-zero) entries of mask: (*shape), in flattened order."""
        mask = torch.as_tensor(mask)
        return cls(mask.flatten().nonzero().flatten(), tuple(mask.shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must be a batch (B, *{self.shape}), got shape {tuple(x.shape)}")
        return x.flatten(1)[:, self.indices.to(x.device)]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_values(y)
        flat = y.new_zeros(y.shape[0], math.prod(self.shape))
        return flat.index_copy(1, self.indices.to(y.device), y).reshape(y.shape[0], *self.shape)

    def baseline(self, y: torch.Tensor, *, method: str = "zero") -> torch.Tensor:
        """Zero fill (``method='zero'``), or, on a 2-D field (H, W), scipy's ``griddata`` in grid
        coordinates: 'nearest', or 'linear' (nearest outside the probes' convex hull). No periodic
        wrap. y: (B, P) -> (B, *shape)."""
        if method == "zero":
            return self.adjoint(y)
        if method not in ("nearest", "linear"):
            raise ValueError(f"method must be 'zero', 'nearest' or 'linear', got {method!r}")
        if len(self.shape) != 2:
            raise ValueError(f"griddata interpolation needs a 2-D field (H, W), this one is {self.shape}")
        self._check_values(y)
        rows, cols = self.shape
        points = np.stack(np.divmod(self.indices.cpu().numpy(), cols), axis=1)
        grid = tuple(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))
        out = []
        for values in y.detach().cpu().double().numpy():
            field = griddata(points, values, grid, method="nearest")
            if method == "linear":
                linear = griddata(points, values, grid, method="linear")
                field = np.where(np.isnan(linear), field, linear)
            out.append(field)
        return torch.as_tensor(np.stack(out), dtype=y.dtype, device=y.device)

    def _check_values(self, y: torch.Tensor) -> None:
        if y.dim() != 2 or y.shape[1] != self.indices.numel():
            raise ValueError(f"y must be (B, {self.indices.numel()}) probe values, "
                             f"got shape {tuple(y.shape)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
