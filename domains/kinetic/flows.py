"""Random piecewise-constant linear flows for the homogeneous kinetic data (the a-priori closure
test, after Maddu, Weady & Shelley 2024).

A linear flow u(x) = A x has the velocity gradient A = E + W, with E = (A + Aᵀ)/2 the rate of
strain and W = (A − Aᵀ)/2 the rotation. Each piece draws, independently:

- E traceless symmetric, with a direction uniform on the unit sphere (Frobenius norm) of the
  traceless symmetric matrices and a magnitude ‖E‖_F ~ U(0, strain_max). The direction is the
  normalised traceless part of a Gaussian-orthogonal-ensemble matrix, whose law is invariant
  under X ↦ R X Rᵀ, so the principal frame is uniformly random.
- W the rotation at angular velocity Ω: W p = Ω × p in 3-D, with Ω uniform in direction and
  |Ω| ~ U(0, rotation_max); in 2-D W = [[0, −ω], [ω, 0]] with ω ~ U(−rotation_max, rotation_max).

tr A = 0, so every flow is incompressible.
"""

from __future__ import annotations

import numpy as np


def random_linear_flows(n_pieces: int, d: int, rng: np.random.Generator, strain_max: float = 2.0,
                        rotation_max: float = 1.0) -> np.ndarray:
    """``n_pieces`` random traceless velocity gradients A = E + W (module docstring).

    Returns A: (n_pieces, d, d), float64, A_ij = ∂u_i/∂x_j.
    """
    if isinstance(n_pieces, bool) or not isinstance(n_pieces, (int, np.integer)) or n_pieces < 1:
        raise ValueError(f"n_pieces must be a positive integer, got {n_pieces!r}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in (2, 3):
        raise ValueError(f"d must be 2 or 3, got {d!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for name, value in (("strain_max", strain_max), ("rotation_max", rotation_max)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    gaussian = rng.standard_normal((n_pieces, d, d))
    strain = 0.5 * (gaussian + gaussian.transpose(0, 2, 1))
    strain -= np.trace(strain, axis1=1, axis2=2)[:, None, None] * np.eye(d) / d
    strain /= np.linalg.norm(strain, axis=(1, 2), keepdims=True)
    strain *= rng.uniform(0.0, strain_max, n_pieces)[:, None, None]
    rotation = np.zeros((n_pieces, d, d))
    if d == 2:
        omega = rng.uniform(-rotation_max, rotation_max, n_pieces)
        rotation[:, 1, 0], rotation[:, 0, 1] = omega, -omega
    else:
        axis = rng.standard_normal((n_pieces, 3))
        omega = (axis / np.linalg.norm(axis, axis=1, keepdims=True)
                 * rng.uniform(0.0, rotation_max, n_pieces)[:, None])
        rotation[:, 2, 1], rotation[:, 1, 2] = omega[:, 0], -omega[:, 0]
        rotation[:, 0, 2], rotation[:, 2, 0] = omega[:, 1], -omega[:, 1]
        rotation[:, 1, 0], rotation[:, 0, 1] = omega[:, 2], -omega[:, 2]
    return strain + rotation
