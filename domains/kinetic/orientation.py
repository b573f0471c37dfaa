"""Homogeneous orientation dynamics of apolar rods: a Galerkin solver in harmonics (data generation).

Ψ(p, t) on the unit circle (d = 2) or sphere (d = 3) evolves by (Maddu, Weady & Shelley 2024, without space)

    ∂Ψ/∂t = −∇_p·((I − pp)(A + 2ζD)p Ψ) + d_R Δ_p Ψ,   D = ∫ pp Ψ dp.

Ψ = Σ_b ĉ_b Y_b(p) on an orthonormal basis of the even (head–tail symmetric) harmonics: on the
circle 1/√(2π), cos mφ/√π, sin mφ/√π for m = 2, 4, …, M; on the sphere the real spherical
harmonics of degrees l = 0, 2, …, L, each written as a polynomial in p,
Y_lm ∝ P_l^(m)(z)·Re/Im (x + iy)^m, so that its gradient is exact and ∇_p Y = (I − pp)∇Y.
Coefficient 0 is the constant Y_0 = 1/√|S^{d−1}|. Testing with Y_a (weak form) gives

    dĉ_a/dt = Σ_kl M_kl Σ_b G^{kl}_{ab} ĉ_b − d_R λ_a ĉ_a,   G^{kl}_{ab} = ∫ (∇_p Y_a)_k p_l Y_b dp,

with M = A + 2ζD and λ = m² (circle) or l(l + 1) (sphere). The integrands are polynomials of
degree ≤ 2·n_modes + 3 on the sphere and are integrated exactly: a uniform grid in φ (circle),
Gauss–Legendre in z = cos θ × uniform in φ (sphere). ∇_p Y_0 = 0, so the mass ∫Ψ = ĉ_0 √|S^{d−1}|
has zero time derivative. Because p_i p_j lies in the basis, D of the truncated Ψ obeys the moment
equation exactly, with S taken from the same truncated Ψ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.polynomial import legendre
from scipy.integrate import solve_ivp
from tqdm import tqdm

from flowsci_domains.kinetic.flows import random_linear_flows

DEFAULT_MODES = {2: 32, 3: 10}
# Time stepping: DOP853 (solve_ivp) rather than fixed-step RK4. Its error control makes the data
# accurate to ~rtol without choosing a step per parameter set (the stiffest mode, −d_R·M² = −256
# on the circle, would need RK4 steps below 0.01 whatever the flow), and, like every Runge–Kutta
# method, it keeps the linear invariant ĉ_0 (the mass) to round-off. ATOL is far below the data's
# accuracy on purpose: with 1e-12 the stiff top modes, left uncontrolled below atol, filled with
# integrator noise of ~1e-7 (measured on the circle, M = 48), above the true spectrum.
RTOL = 1e-10
ATOL = 1e-14


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_basis(d: Any, n_modes: Any) -> tuple[int, int]:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in (2, 3):
        raise ValueError(f"d must be 2 or 3, got {d!r}")
    if isinstance(n_modes, bool) or not isinstance(n_modes, (int, np.integer)) or n_modes < 4 or n_modes % 2:
        raise ValueError("n_modes must be an even integer >= 4 (the fourth moment needs degree 4), "
                         f"got {n_modes!r}")
    return int(d), int(n_modes)


def harmonic_degrees(d: int, n_modes: int) -> np.ndarray:
    """Degree of each basis function: |m| on the circle, l on the sphere. Returns (n_basis,) int.

    Order: by degree; within a degree m = 0, then cos and sin parts for m = 1, 2, … (sphere) or the
    cos and sin parts of m (circle).
    """
    d, n_modes = _check_basis(d, n_modes)
    if d == 2:
        return np.array([0] + [m for m in range(2, n_modes + 1, 2) for _ in range(2)])
    return np.array([degree for degree in range(0, n_modes + 1, 2) for _ in range(2 * degree + 1)])


def _unit_vectors(p: Any) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] not in (2, 3):
        raise ValueError(f"p must have shape (..., d) with d = 2 or 3, got shape {p.shape}")
    error = np.abs(np.linalg.norm(p, axis=-1) - 1.0)
    if error.size and error.max() > 1e-8:
        raise ValueError(f"p must hold unit vectors (|p| = 1 within 1e-8), got |p| off by {error.max():.3g}")
    return p


def harmonics(p: np.ndarray, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """The orthonormal even harmonics of degree ≤ ``n_modes`` and their surface gradients.

    p: (..., d) unit vectors, d = 2 (circle) or 3 (sphere). Returns Y: (..., n_basis) and
    ∇_p Y: (..., n_basis, d), tangent to the sphere; the order is :func:`harmonic_degrees`.
    """
    p = _unit_vectors(p)
    d, n_modes = _check_basis(p.shape[-1], n_modes)
    w = p[..., 0] + 1j * p[..., 1]
    values, gradients = [], []
    for degree in range(0, n_modes + 1, 2):
        for m in range(degree + 1) if d == 3 else (degree,):
            # (x + iy)^m and its gradient (∂x, ∂y) = m (x + iy)^{m−1} (1, i); Re and Im are the two parts.
            power = w**m
            slope = m * w ** max(m - 1, 0)
            power_gradient = np.stack([slope, 1j * slope] + [np.zeros_like(w)] * (d - 2), axis=-1)
            if d == 2:
                norm, polar, polar_slope = math.sqrt((2 if m else 1) / (2 * math.pi)), 1.0, 0.0
            else:  # Y_lm ∝ P_l^(m)(z)·Re/Im (x + iy)^m, P_l^(m) the m-th derivative of P_l
                series = legendre.legder(np.eye(degree + 1)[degree], m)
                polar = legendre.legval(p[..., 2], series)
                polar_slope = legendre.legval(p[..., 2], legendre.legder(series))
                norm = math.sqrt((2 * degree + 1) * (2 if m else 1) / (4 * math.pi)
                                 * math.factorial(degree - m) / math.factorial(degree + m))
            for part in (np.real, np.imag) if m else (np.real,):
                gradient = np.asarray(polar)[..., None] * part(power_gradient)
                if d == 3:
                    gradient[..., 2] += polar_slope * part(power)
                values.append(norm * polar * part(power))
                gradients.append(norm * gradient)
    values_array, gradient_array = np.stack(values, axis=-1), np.stack(gradients, axis=-2)
    normal = np.einsum("...ak,...k->...a", gradient_array, p)
    return values_array, gradient_array - normal[..., None] * p[..., None, :]


def sphere_quadrature(d: int, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (Q, d) and weights (Q,) on the unit circle/sphere, exact for polynomials in p of
    degree ≤ 2·n_modes + 7 (uniform in φ; Gauss–Legendre in z = cos θ on the sphere)."""
    d, n_modes = _check_basis(d, n_modes)
    n_phi = 2 * n_modes + 8
    phi = 2 * math.pi * np.arange(n_phi) / n_phi
    if d == 2:
        return np.stack([np.cos(phi), np.sin(phi)], axis=-1), np.full(n_phi, 2 * math.pi / n_phi)
    z, z_weights = legendre.leggauss(n_modes + 4)
    ring = np.sqrt(1.0 - z**2)[:, None]
    nodes = np.stack([ring * np.cos(phi), ring * np.sin(phi), np.broadcast_to(z[:, None], (len(z), n_phi))],
                     axis=-1)
    return nodes.reshape(-1, 3), (z_weights[:, None] * np.full(n_phi, 2 * math.pi / n_phi)).ravel()


@dataclasses.dataclass(frozen=True)
class _Operators:
    nodes: np.ndarray    # (Q, d)
    weights: np.ndarray  # (Q,)
    values: np.ndarray   # (Q, n) basis at the nodes
    drift: np.ndarray    # (d·d, n·n): G^{kl}_{ab} flattened over (k, l) and (a, b)
    decay: np.ndarray    # (n,) λ_a
    second: np.ndarray   # (d, d, n): ∫ p_i p_j Y_b
    fourth: np.ndarray   # (d, d, d, d, n): ∫ p_i p_j p_k p_l Y_b


@functools.lru_cache(maxsize=8)
def _operators(d: int, n_modes: int) -> _Operators:
    nodes, weights = sphere_quadrature(d, n_modes)
    values, gradients = harmonics(nodes, n_modes)
    n = values.shape[1]
    drift = np.einsum("q,qak,ql,qb->klab", weights, gradients, nodes, values,
                      optimize=True).reshape(d * d, n * n)
    degrees = harmonic_degrees(d, n_modes)
    decay = degrees**2 if d == 2 else degrees * (degrees + 1)
    second = np.einsum("q,qi,qj,qb->ijb", weights, nodes, nodes, values, optimize=True)
    fourth = np.einsum("q,qi,qj,qk,ql,qb->ijklb", weights, nodes, nodes, nodes, nodes, values, optimize=True)
    arrays = [nodes, weights, values, drift, decay.astype(np.float64), second, fourth]
    for array in arrays:
        array.setflags(write=False)
    return _Operators(*arrays)


class OrientationSolver:
    """Galerkin solver of the homogeneous kinetic equation (module docstring).

    d: 2 or 3; n_modes: the highest (even) degree kept, M on the circle (default 32) or L on the
    sphere (default 10); d_rotation: rotational diffusivity d_R ≥ 0; zeta: alignment strength ζ ≥ 0.
    Coefficients ĉ have shape (..., n_basis).
    """

    def __init__(self, d: int, n_modes: int | None = None, d_rotation: float = 0.25,
                 zeta: float = 0.0) -> None:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in (2, 3):
            raise ValueError(f"d must be 2 or 3, got {d!r}")
        self.d, self.n_modes = _check_basis(d, DEFAULT_MODES[int(d)] if n_modes is None else n_modes)
        self.d_rotation = _check_nonnegative("d_rotation", d_rotation)
        self.zeta = _check_nonnegative("zeta", zeta)
        self._ops = _operators(self.d, self.n_modes)
        self.degrees = harmonic_degrees(self.d, self.n_modes)
        self.n_basis = len(self.degrees)
        self.area = 2 * math.pi if self.d == 2 else 4 * math.pi

    def _coefficients(self, coeffs: Any, name: str = "coeffs") -> np.ndarray:
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.ndim < 1 or coeffs.shape[-1] != self.n_basis:
            raise ValueError(f"{name} must have shape (..., {self.n_basis}), got {coeffs.shape}")
        return coeffs

    def _gradient(self, A: Any, name: str) -> np.ndarray:
        A = np.asarray(A, dtype=np.float64)
        if A.ndim < 2 or A.shape[-2:] != (self.d, self.d):
            raise ValueError(f"{name} must have shape (..., {self.d}, {self.d}), got {A.shape}")
        return A

    def project(self, func: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Coefficients (n_basis,) of the even part of Ψ = ``func`` (p: (Q, d) -> (Q,)), by the
        quadrature; exact when Ψ is a polynomial in p of degree ≤ n_modes + 7."""
        ops = self._ops
        return (ops.weights * np.asarray(func(ops.nodes), dtype=np.float64)) @ ops.values

    def initial(self, rng: np.random.Generator, amplitude: float = 1.0) -> np.ndarray:
        """A random smooth apolar Ψ ∝ exp(g), normalised to mass 1. Returns coefficients (n_basis,).

        g = amplitude · Σ ξ_a Y_a over the harmonics of degree 2 and 4, ξ_a ~ N(0, 1).
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        amplitude = _check_nonnegative("amplitude", amplitude)
        low = (self.degrees > 0) & (self.degrees <= 4)
        xi = np.zeros(self.n_basis)
        xi[low] = amplitude * rng.standard_normal(int(low.sum()))
        coeffs = self.project(lambda _: np.exp(self._ops.values @ xi))
        return coeffs / self.mass(coeffs)

    def mass(self, coeffs: np.ndarray) -> np.ndarray:
        """∫Ψ dp = ĉ_0 √|S^{d−1}| (the other harmonics integrate to 0). coeffs: (..., n) -> (...)."""
        return self._coefficients(coeffs)[..., 0] * math.sqrt(self.area)

    def density(self, coeffs: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Ψ at unit vectors p: (P, d); coeffs: (..., n). Returns (..., P)."""
        p = _unit_vectors(p)
        if p.ndim != 2 or p.shape[1] != self.d:
            raise ValueError(f"p must have shape (P, {self.d}), got {p.shape}")
        return self._coefficients(coeffs) @ harmonics(p, self.n_modes)[0].T

    def moments(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D = ∫ pp Ψ: (..., d, d) and S = ∫ pppp Ψ: (..., d, d, d, d), exact. coeffs: (..., n)."""
        coeffs = self._coefficients(coeffs)
        return (np.einsum("...b,ijb->...ij", coeffs, self._ops.second),
                np.einsum("...b,ijklb->...ijkl", coeffs, self._ops.fourth))

    def rhs(self, coeffs: np.ndarray, A: np.ndarray) -> np.ndarray:
        """dĉ/dt under the velocity gradient A. coeffs: (..., n), A: (..., d, d). Returns (..., n)."""
        coeffs = self._coefficients(coeffs)
        A = self._gradient(A, "A")
        M = A + 2.0 * self.zeta * np.einsum("...b,ijb->...ij", coeffs, self._ops.second)
        operator = (M.reshape(*M.shape[:-2], self.d * self.d) @ self._ops.drift).reshape(
            *M.shape[:-2], self.n_basis, self.n_basis)
        return (operator @ coeffs[..., None])[..., 0] - self.d_rotation * self._ops.decay * coeffs

    def trajectory(self, coeffs0: np.ndarray, flows: np.ndarray, piece_duration: float,
                   n_snapshots_per_piece: int) -> dict[str, np.ndarray]:
        """Integrate under piecewise-constant flows, each held for ``piece_duration``.

        coeffs0: (n,); flows: (P, d, d). Snapshots at t = i·Δ + j·Δ/n (piece i, j < n), each with
        the flow acting from then on, T = P·n. Returns t (T,), A, E, D, SE, SD (T, d, d),
        S (T, d, d, d, d), mass (T,) and coeffs (T, n).
        """
        state = self._coefficients(coeffs0, "coeffs0")
        if state.ndim != 1:
            raise ValueError(f"coeffs0 must have shape ({self.n_basis},), got {state.shape}")
        flows = self._gradient(flows, "flows")
        if flows.ndim != 3 or len(flows) == 0:
            raise ValueError(f"flows must have shape (P >= 1, {self.d}, {self.d}), got {flows.shape}")
        duration = _check_nonnegative("piece_duration", piece_duration)
        if duration == 0:
            raise ValueError("piece_duration must be > 0, got 0")
        n_snap = _check_int("n_snapshots_per_piece", n_snapshots_per_piece, 1)
        local_times = np.linspace(0.0, duration, n_snap + 1)
        times, states = [], []
        for index, A in enumerate(flows):
            solution = solve_ivp(lambda _t, y, A=A: self.rhs(y, A), (0.0, duration), state, method="DOP853",
                                 t_eval=local_times, rtol=RTOL, atol=ATOL)
            if not solution.success:
                raise RuntimeError(f"orientation solver failed on flow piece {index}: {solution.message}")
            times.append(index * duration + local_times[:-1])
            states.append(solution.y[:, :-1].T)
            state = solution.y[:, -1]
        coeffs = np.concatenate(states)
        A = np.repeat(flows, n_snap, axis=0)
        E = 0.5 * (A + A.transpose(0, 2, 1))
        D, S = self.moments(coeffs)
        return {"t": np.concatenate(times), "A": A, "E": E, "D": D, "S": S,
                "SE": np.einsum("tijkl,tkl->tij", S, E), "SD": np.einsum("tijkl,tkl->tij", S, D),
                "mass": self.mass(coeffs), "coeffs": coeffs}


def generate_dataset(d: int, n_trajectories: int, seed: int, *, n_modes: int | None = None,
                     n_pieces: int = 24, n_transient_pieces: int = 4, n_snapshots_per_piece: int = 5,
                     piece_duration: float = 0.5, d_rotation: float = 0.25, zeta_max: float = 1.2,
                     strain_max: float = 2.0, rotation_max: float = 1.0, progress: bool = False
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Closure data for the a-priori test (after Maddu, Weady & Shelley 2024): per trajectory
    ζ ~ U(0, zeta_max), a random initial Ψ and ``n_pieces`` random flows of ``piece_duration``;
    the first ``n_transient_pieces`` are dropped.

    Trajectory i uses the generator seeded by (seed, i), so it does not depend on n_trajectories.
    Returns (arrays, attrs): the :meth:`OrientationSolver.trajectory` arrays stacked to
    (n_trajectories, T, ...) with T = (n_pieces − n_transient_pieces)·n_snapshots_per_piece, plus
    zeta (n_trajectories,); attrs holds every parameter (for :func:`write_hdf5`). ``progress``:
    a progress bar over the trajectories.
    """
    n_trajectories = _check_int("n_trajectories", n_trajectories, 1)
    seed = _check_int("seed", seed, 0)
    n_pieces = _check_int("n_pieces", n_pieces, 1)
    n_transient_pieces = _check_int("n_transient_pieces", n_transient_pieces, 0)
    if n_transient_pieces >= n_pieces:
        raise ValueError(f"n_transient_pieces must be < n_pieces = {n_pieces}, got {n_transient_pieces}")
    zeta_max = _check_nonnegative("zeta_max", zeta_max)
    reference = OrientationSolver(d, n_modes, d_rotation)
    kept = n_transient_pieces * n_snapshots_per_piece
    trajectories, zetas = [], []
    for index in tqdm(range(n_trajectories), desc=f"kinetic data (d = {reference.d})", unit="trajectory",
                      disable=not progress, leave=False):
        rng = np.random.default_rng([seed, index])
        zeta = rng.uniform(0.0, zeta_max)
        solver = OrientationSolver(reference.d, reference.n_modes, reference.d_rotation, zeta)
        flows = random_linear_flows(n_pieces, reference.d, rng, strain_max, rotation_max)
        run = solver.trajectory(solver.initial(rng), flows, piece_duration, n_snapshots_per_piece)
        trajectories.append({key: value[kept:] for key, value in run.items()})
        zetas.append(zeta)
    arrays = {key: np.stack([run[key] for run in trajectories]) for key in trajectories[0]}
    arrays["zeta"] = np.array(zetas)
    attrs = {"d": reference.d, "n_modes": reference.n_modes, "n_trajectories": n_trajectories, "seed": seed,
             "n_pieces": n_pieces, "n_transient_pieces": n_transient_pieces,
             "n_snapshots_per_piece": n_snapshots_per_piece, "piece_duration": float(piece_duration),
             "d_rotation": reference.d_rotation, "zeta_max": zeta_max, "strain_max": float(strain_max),
             "rotation_max": float(rotation_max), "method": "DOP853", "rtol": RTOL, "atol": ATOL}
    return arrays, attrs


_ATTR_TYPES = (bool, int, float, str, np.integer, np.floating, np.bool_)


def write_hdf5(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
               attrs: Mapping[str, Any]) -> Path:
    """Write ``arrays`` as root datasets and ``attrs`` (bool/int/float/str) as root attributes.

    Atomic: the file is written to a temporary file in the same folder, then renamed over ``path``.
    """
    path = Path(path)
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"array names must be non-empty strings without '/', got {name!r}")
        if np.asarray(value).dtype.kind not in "biufc":
            raise ValueError(f"array {name!r} must be numeric, got dtype {np.asarray(value).dtype}")
    for key, value in attrs.items():
        if not isinstance(value, _ATTR_TYPES):
            raise ValueError(f"attr {key!r} must be a bool, int, float or str, got {type(value).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as file:
            for name, value in arrays.items():
                file.create_dataset(name, data=np.asarray(value))
            file.attrs.update(dict(attrs))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_hdf5(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_hdf5`: (arrays, attrs) with plain Python attr values."""
    with h5py.File(path, "r") as file:
        arrays = {name: item[()] for name, item in file.items() if isinstance(item, h5py.Dataset)}
        attrs = {key: value.item() if isinstance(value, np.generic) else value
                 for key, value in file.attrs.items()}
    return arrays, attrs
