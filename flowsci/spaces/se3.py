"""SE(3)^N: N rigid frames (a translation and a rotation each), optionally with the centre of
mass of the translations fixed at the origin.

A point is (..., N, 3 + r): per frame the translation (3) followed by the rotation in the chosen
chart (r = 4, a unit quaternion (w, x, y, z), or r = 9, a row-major flattened rotation matrix).
A tangent vector is (..., N, 6): the translation velocity in the world frame, then the
body-frame angular velocity omega. The metric is the Euclidean one of this representation
(translations flat, rotations bi-invariant), so the geometry is that of
Power(Product([Euclidean(3), SO(3)]), N).

With ``center_of_mass=True`` the translations live in the (3N - 3)-dimensional subspace
sum_i x_i = 0 (the usual quotient by global translations for molecules and protein backbones):
proj and proj_tangent subtract the mean over frames, and the base distribution of the
translations is the standard Gaussian of that subspace times ``translation_scale`` s. Its
density w.r.t. the subspace's volume: t = s P z with z ~ N(0, I_{3N}) and P the orthogonal
projection onto the subspace, so the coordinates of t in any orthonormal basis of the subspace
are independent N(0, s^2), and

    log p(t) = -|t|^2 / (2 s^2) - (3N - 3) / 2 log(2 pi s^2),

(3N instead of 3N - 3 without the constraint). Rotations are uniform (Haar), independent.
"""

from __future__ import annotations

import math

import torch

from flowsci.spaces.base import Space
from flowsci.spaces.euclidean import Euclidean
from flowsci.spaces.product import Power, Product
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion

ROTATION_CHARTS = {"quaternion": SO3Quaternion, "matrix": SO3Matrix}


def centred_basis(n: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """(n - 1, n) orthonormal rows spanning {v in R^n : sum v = 0} (the Helmert basis: row k
    is (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1)) with k ones)."""
    k = torch.arange(1, n, dtype=dtype, device=device).unsqueeze(-1)
    i = torch.arange(n, dtype=dtype, device=device)
    rows = torch.where(i < k, 1.0, torch.where(i == k, -k, 0.0))
    return rows / (k * (k + 1)).sqrt()


class SE3N(Space):
    """N rigid frames: points (..., N, 3 + 4) (quaternion chart) or (..., N, 3 + 9) (matrix
    chart), tangent vectors (..., N, 6) = (world-frame translation velocity, body-frame omega).

    ``dim`` is 3 (N - 1) + 3 N with the centre of mass removed, 6 N without.
    """

    def __init__(self, n_frames: int, rotation: str = "quaternion", center_of_mass: bool = True,
                 translation_scale: float = 1.0):
        if int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"SE3N needs an integer n_frames >= 1, got n_frames={n_frames!r}")
        if rotation not in ROTATION_CHARTS:
            raise ValueError(f"SE3N rotation must be one of {sorted(ROTATION_CHARTS)}, "
                             f"got rotation={rotation!r}")
        if not translation_scale > 0:
            raise ValueError(f"SE3N needs translation_scale > 0, got translation_scale={translation_scale!r}")
        self.n_frames, self.rotation = int(n_frames), rotation
        self.center_of_mass, self.translation_scale = bool(center_of_mass), float(translation_scale)
        self.rotation_space = ROTATION_CHARTS[rotation]()
        self.frames = Power(Product([Euclidean(3), self.rotation_space]), self.n_frames)
        self.point_shape, self.tangent_shape = self.frames.point_shape, self.frames.tangent_shape
        self.translation_dim = 3 * (self.n_frames - 1) if self.center_of_mass else 3 * self.n_frames
        self.dim = self.translation_dim + 3 * self.n_frames
        self.n_factors = 2  # translations, rotations: each may follow its own schedule

    def __repr__(self) -> str:
        return (f"SE3N({self.n_frames}, rotation={self.rotation!r}, center_of_mass={self.center_of_mass}, "
                f"translation_scale={self.translation_scale})")

    def scale_factors(self, scales: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """u with its translation velocities times scales[0] and its angular velocities times
        scales[1] (each (...,))."""
        return self.frames.scale_factors(scales, u)

    # --- frames ------------------------------------------------------------------------
    def translations(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N, 3) the translations of the points x (..., N, 3 + r)."""
        return x[..., :3]

    def _rotation_points(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N, *rotation_space.point_shape) the rotations of x in the chart."""
        return x[..., 3:].unflatten(-1, self.rotation_space.point_shape)

    def rotations(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N, 3, 3) the rotation matrices of the points x, whatever the chart."""
        return self.rotation_space.to_matrix(self._rotation_points(x))

    def from_frames(self, translations: torch.Tensor, rotation_matrices: torch.Tensor) -> torch.Tensor:
        """(..., N, 3 + r) points from translations (..., N, 3) and rotation matrices (..., N, 3, 3)
        (assembled as given: apply :meth:`proj` to remove the centre of mass)."""
        rotation = self.rotation_space.from_matrix(rotation_matrices)
        return torch.cat([translations, rotation.flatten(-len(self.rotation_space.point_shape))], -1)

    def _centred(self, a: torch.Tensor) -> torch.Tensor:
        """a (..., N, C) with the mean over frames of its first 3 columns removed (if the centre of
        mass is fixed)."""
        if not self.center_of_mass:
            return a
        translation = a[..., :3]
        return torch.cat([translation - translation.mean(-2, keepdim=True), a[..., 3:]], -1)

    # --- the Space operations ----------------------------------------------------------
    def random_base(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """Gaussian translations (centred if the centre of mass is fixed) times translation_scale;
        uniform rotations."""
        t = torch.randn(n, self.n_frames, 3, generator=generator, dtype=dtype, device=device)
        rotation = self.rotation_space.random_base(n * self.n_frames, generator=generator, dtype=dtype,
                                                   device=device)
        rotation = rotation.reshape(n, self.n_frames, -1)
        return self._centred(torch.cat([self.translation_scale * t, rotation], -1))

    def base_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) the Gaussian log density of the translations on their (3N - 3)- or
        3N-dimensional space plus the uniform log density of the N rotations."""
        s2 = self.translation_scale ** 2
        t = self.translations(x)
        translation = (-(t * t).sum((-1, -2)) / (2 * s2)
                       - 0.5 * self.translation_dim * math.log(2 * math.pi * s2))
        return translation + self.rotation_space.base_log_prob(self._rotation_points(x)).sum(-1)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.frames.exp(x, u)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.frames.log(x, y)

    def proj(self, x: torch.Tensor) -> torch.Tensor:
        return self._centred(self.frames.proj(x))

    def proj_tangent(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """u ambient (..., N, 3 + r) or tangent (..., N, 6) -> tangent (..., N, 6) with centred
        translation velocities (if the centre of mass is fixed)."""
        return self._centred(self.frames.proj_tangent(x, u))

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.frames.inner(x, u, v)

    def dexp_inv(self, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.frames.dexp_inv(x, delta, w)

    def tangent_basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim, N, 6): first the translation directions (Helmert rows of the centred
        subspace, or one frame at a time, times the three axes), then the rotation basis of
        each frame in turn."""
        n, dtype, device = self.n_frames, x.dtype, x.device
        frames = (centred_basis(n, dtype, device) if self.center_of_mass
                  else torch.eye(n, dtype=dtype, device=device))
        axes = torch.eye(3, 6, dtype=dtype, device=device)
        translation = (frames[:, None, :, None] * axes[None, :, None, :]).flatten(0, 1)  # (3K, N, 6)
        rotation = self.rotation_space.tangent_basis(self._rotation_points(x))  # (..., N, 3, 3)
        rotation = torch.nn.functional.pad(rotation, (3, 0)).unsqueeze(-2)  # (..., N, 3, 1, 6)
        eye = torch.eye(n, dtype=dtype, device=device).reshape(n, 1, n, 1)
        rotation = (rotation * eye).flatten(-4, -3)  # (..., 3N, N, 6)
        return torch.cat([translation.expand(*rotation.shape[:-3], *translation.shape), rotation], -3)

    def constraint_violation(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) the frames' violations, plus the distance sqrt(N) |mean translation| of the
        translations from the centred subspace (if the centre of mass is fixed)."""
        violation = self.frames.constraint_violation(x)
        if self.center_of_mass:
            mean = self.translations(x).mean(-2)
            violation = violation + math.sqrt(self.n_frames) * torch.linalg.vector_norm(mean, dim=-1)
        return violation
