"""The homogeneous kinetic solver against closed forms, finite differences and invariances."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.special import roots_legendre
from scipy.stats import kstest

from flowsci_domains.kinetic.flows import random_linear_flows
from flowsci_domains.kinetic.orientation import (
    OrientationSolver,
    generate_dataset,
    harmonic_degrees,
    harmonics,
    read_hdf5,
    write_hdf5,
)

DIMS = pytest.mark.parametrize("d", [2, 3])


def fine_grid(d: int) -> tuple[np.ndarray, np.ndarray]:
    """An independent quadrature: 1024-point trapezoid on the circle; 48 Gauss–Legendre × 96 on the sphere."""
    if d == 2:
        phi = 2 * np.pi * np.arange(1024) / 1024
        return np.stack([np.cos(phi), np.sin(phi)], -1), np.full(1024, 2 * np.pi / 1024)
    z, wz = roots_legendre(48)
    phi = 2 * np.pi * np.arange(96) / 96
    ring = np.sqrt(1 - z**2)[:, None]
    nodes = np.stack([ring * np.cos(phi), ring * np.sin(phi),
                      np.repeat(z[:, None], 96, 1)], -1).reshape(-1, 3)
    return nodes, np.outer(wz, np.full(96, 2 * np.pi / 96)).ravel()


def random_units(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    p = rng.standard_normal((n, d))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def moment_rhs(A: np.ndarray, D: np.ndarray, S: np.ndarray, zeta: float, d_rotation: float) -> np.ndarray:
    """The closed-form moment equation dD/dt (Maddu, Weady & Shelley 2024; conventions of the solver)."""
    d = len(D)
    E = 0.5 * (A + A.T)
    return (A @ D + D @ A.T - 2 * np.einsum("ijkl,kl->ij", S, E)
            + 4 * zeta * (D @ D - np.einsum("ijkl,kl->ij", S, D))
            - 2 * d * d_rotation * (D - np.trace(D) * np.eye(d) / d))


@DIMS
def test_harmonics_are_orthonormal_laplace_eigenfunctions(d: int) -> None:
    n_modes = 12
    nodes, weights = fine_grid(d)
    Y, grad = harmonics(nodes, n_modes)
    degrees = harmonic_degrees(d, n_modes)
    eigen = degrees**2 if d == 2 else degrees * (degrees + 1)
    np.testing.assert_allclose(np.einsum("q,qa,qb->ab", weights, Y, Y), np.eye(len(degrees)), atol=1e-12)
    # Green's identity: ∫ ∇Y_a·∇Y_b = −∫ Y_a ΔY_b = λ_b δ_ab
    np.testing.assert_allclose(np.einsum("q,qak,qbk->ab", weights, grad, grad), np.diag(eigen.astype(float)),
                               atol=1e-10)
    points = random_units(np.random.default_rng(0), 20, d)
    values = harmonics(points, n_modes)[0]
    np.testing.assert_allclose(harmonics(-points, n_modes)[0], values, atol=1e-13)  # apolar
    for degree in range(0, n_modes + 1, 2):  # addition theorem: Σ_m Y_m(p)² is constant
        total = (values[:, degrees == degree] ** 2).sum(1)
        np.testing.assert_allclose(total, (1 if degree == 0 else 2) / (2 * np.pi) if d == 2
                                   else (2 * degree + 1) / (4 * np.pi), rtol=1e-12)


@DIMS
def test_surface_gradient_matches_finite_differences(d: int) -> None:
    rng = np.random.default_rng(1)
    p = random_units(rng, 10, d)
    tangent = rng.standard_normal((10, d))
    tangent -= (tangent * p).sum(1, keepdims=True) * p
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    h = 1e-5  # along the great circle cos(s) p + sin(s) t
    plus = harmonics(np.cos(h) * p + np.sin(h) * tangent, 10)[0]
    minus = harmonics(np.cos(h) * p - np.sin(h) * tangent, 10)[0]
    _, grad = harmonics(p, 10)
    np.testing.assert_allclose(np.einsum("nak,nk->na", grad, tangent), (plus - minus) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(np.einsum("nak,nk->na", grad, p), 0.0, atol=1e-12)


@DIMS
def test_moments_and_projection_match_direct_quadrature(d: int) -> None:
    rng = np.random.default_rng(2)
    solver = OrientationSolver(d, 12)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    field = lambda p: 1 + (p @ a) ** 4 + (p @ b) ** 2 * (p @ a) ** 2  # noqa: E731  even, degree 4
    coeffs = solver.project(field)
    points = random_units(rng, 50, d)
    np.testing.assert_allclose(solver.density(coeffs, points), field(points), rtol=1e-12)
    nodes, weights = fine_grid(d)
    psi = field(nodes)
    D, S = solver.moments(coeffs)
    np.testing.assert_allclose(D, np.einsum("q,q,qi,qj->ij", weights, psi, nodes, nodes), rtol=1e-12)
    np.testing.assert_allclose(S, np.einsum("q,q,qi,qj,qk,ql->ijkl",
                                            weights, psi, nodes, nodes, nodes, nodes),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(solver.mass(coeffs), weights @ psi, rtol=1e-12)


@DIMS
def test_fourth_moment_traces_to_second_and_is_symmetric(d: int) -> None:
    solver = OrientationSolver(d, zeta=0.8)
    coeffs = solver.initial(np.random.default_rng(3))
    D, S = solver.moments(coeffs)
    assert abs(np.trace(D) - 1.0) < 1e-13 and abs(solver.mass(coeffs) - 1.0) < 1e-13
    np.testing.assert_allclose(np.einsum("iikl->kl", S), D, atol=1e-14)
    np.testing.assert_allclose(np.einsum("ikil->kl", S), D, atol=1e-14)
    for order in itertools.permutations(range(4)):
        np.testing.assert_allclose(S.transpose(order), S, atol=1e-14)


@DIMS
def test_isotropic_state_has_isotropic_moments_and_stays(d: int) -> None:
    solver = OrientationSolver(d, d_rotation=0.25, zeta=0.0)
    area = 2 * np.pi if d == 2 else 4 * np.pi
    coeffs = solver.project(lambda p: np.full(len(p), 1 / area))
    eye = np.eye(d)
    isotropic = (np.einsum("ij,kl->ijkl", eye, eye) + np.einsum("ik,jl->ijkl", eye, eye)
                 + np.einsum("il,jk->ijkl", eye, eye)) / (d * (d + 2))
    D, S = solver.moments(coeffs)
    np.testing.assert_allclose(D, eye / d, atol=1e-12)
    np.testing.assert_allclose(S, isotropic, atol=1e-12)
    run = solver.trajectory(coeffs, np.zeros((2, d, d)), 0.5, 3)
    np.testing.assert_allclose(run["D"], np.broadcast_to(eye / d, run["D"].shape), atol=1e-12)
    np.testing.assert_allclose(run["S"], np.broadcast_to(isotropic, run["S"].shape), atol=1e-12)


@DIMS
def test_mass_is_conserved_along_a_trajectory(d: int) -> None:
    rng = np.random.default_rng(4)
    solver = OrientationSolver(d, d_rotation=0.25, zeta=1.2)
    run = solver.trajectory(solver.initial(rng), random_linear_flows(6, d, rng), 0.5, 4)
    np.testing.assert_allclose(run["mass"], 1.0, atol=1e-10)
    nodes, weights = fine_grid(d)
    np.testing.assert_allclose(solver.density(run["coeffs"], nodes) @ weights, 1.0, atol=1e-10)


@DIMS
def test_pure_diffusion_decays_at_the_closed_form_rate(d: int) -> None:
    d_rotation = 0.25
    solver = OrientationSolver(d, d_rotation=d_rotation, zeta=0.0)
    coeffs = solver.initial(np.random.default_rng(5))
    run = solver.trajectory(coeffs, np.zeros((3, d, d)), 0.5, 4)
    t = run["t"]
    if d == 2:  # ⟨cos 2φ⟩ by quadrature of Ψ, decaying as exp(−4 d_R t)
        nodes, weights = fine_grid(2)
        angle = np.arctan2(nodes[:, 1], nodes[:, 0])
        cos2 = solver.density(run["coeffs"], nodes) @ (weights * np.cos(2 * angle))
        np.testing.assert_allclose(cos2, cos2[0] * np.exp(-4 * d_rotation * t), atol=1e-9)
    else:  # D − I/3 decays as exp(−6 d_R t)
        anisotropy = run["D"] - np.eye(3) / 3
        np.testing.assert_allclose(anisotropy, anisotropy[0] * np.exp(-6 * d_rotation * t)[:, None, None],
                                   atol=1e-9)


@DIMS
def test_pure_rotation_turns_the_distribution_rigidly(d: int) -> None:
    rng = np.random.default_rng(6)
    W = rng.standard_normal((d, d))
    W = W - W.T
    solver = OrientationSolver(d, d_rotation=0.0, zeta=0.0)
    coeffs = solver.initial(rng)
    run = solver.trajectory(coeffs, np.stack([W, W]), 0.5, 3)
    points = random_units(rng, 30, d)
    for time, D, state in zip(run["t"], run["D"], run["coeffs"]):
        R = expm(W * time)
        np.testing.assert_allclose(D, R @ run["D"][0] @ R.T, atol=1e-9)
        np.testing.assert_allclose(solver.density(state, points), solver.density(coeffs, points @ R),
                                   atol=1e-8)


@DIMS
def test_solver_obeys_the_moment_equation(d: int) -> None:
    rng = np.random.default_rng(7)
    zeta, d_rotation = 0.9, 0.25
    solver = OrientationSolver(d, d_rotation=d_rotation, zeta=zeta)
    coeffs = solver.initial(rng)
    A = rng.standard_normal((d, d))  # any gradient: the moment equation does not need tr A = 0
    D, S = solver.moments(coeffs)
    expected = moment_rhs(A, D, S, zeta, d_rotation)
    np.testing.assert_allclose(solver.moments(solver.rhs(coeffs, A))[0], expected, atol=1e-10)
    h = 0.01  # fourth-order central difference of the integrated D around t = 2h
    run = solver.trajectory(coeffs, A[None], 5 * h, 5)
    Ds = run["D"]
    derivative = (-Ds[4] + 8 * Ds[3] - 8 * Ds[1] + Ds[0]) / (12 * h)
    np.testing.assert_allclose(derivative, moment_rhs(A, Ds[2], run["S"][2], zeta, d_rotation), atol=1e-6)


@DIMS
def test_density_stays_positive_along_data_trajectories(d: int) -> None:
    arrays, _ = generate_dataset(d, 2, seed=11, n_pieces=8, n_transient_pieces=2)
    solver = OrientationSolver(d)
    psi = solver.density(arrays["coeffs"], fine_grid(d)[0])
    print(f"min Ψ on the fine grid, d={d}: {psi.min():.3e}")
    assert psi.min() > 0


def test_generate_dataset_layout_and_seeding() -> None:
    arrays, attrs = generate_dataset(2, 3, seed=5, n_pieces=4, n_transient_pieces=1, n_snapshots_per_piece=2)
    assert arrays["D"].shape == (3, 6, 2, 2) and arrays["S"].shape == (3, 6, 2, 2, 2, 2)
    assert arrays["zeta"].shape == (3,) and np.all((arrays["zeta"] >= 0) & (arrays["zeta"] <= 1.2))
    np.testing.assert_allclose(arrays["t"][0], 0.5 + 0.25 * np.arange(6))
    np.testing.assert_allclose(arrays["SE"], np.einsum("ntijkl,ntkl->ntij", arrays["S"], arrays["E"]))
    np.testing.assert_allclose(np.trace(arrays["E"], axis1=-2, axis2=-1), 0.0, atol=1e-14)
    assert attrs["n_transient_pieces"] == 1 and attrs["d_rotation"] == 0.25
    fewer, _ = generate_dataset(2, 1, seed=5, n_pieces=4, n_transient_pieces=1, n_snapshots_per_piece=2)
    np.testing.assert_array_equal(fewer["D"][0], arrays["D"][0])


def test_hdf5_round_trip_is_atomic(tmp_path: Path) -> None:
    arrays, attrs = generate_dataset(3, 2, seed=0, n_pieces=2, n_transient_pieces=1, n_snapshots_per_piece=2)
    path = tmp_path / "kinetic" / "data.h5"
    write_hdf5(path, {"old": np.zeros(3)}, {"version": 0})
    write_hdf5(path, arrays, attrs)
    read_arrays, read_attrs = read_hdf5(path)
    assert read_attrs == attrs and set(read_arrays) == set(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(read_arrays[name], value)
    with pytest.raises(ValueError, match="attr 'bad'"):
        write_hdf5(path, arrays, {"bad": [1, 2]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.h5"]
    assert read_hdf5(path)[1] == attrs


def test_random_flows_have_the_documented_distribution() -> None:
    for d in (2, 3):
        A = random_linear_flows(20000, d, np.random.default_rng(8), strain_max=2.0, rotation_max=1.0)
        E, W = 0.5 * (A + A.transpose(0, 2, 1)), 0.5 * (A - A.transpose(0, 2, 1))
        np.testing.assert_allclose(np.trace(A, axis1=1, axis2=2), 0.0, atol=1e-13)
        # scipy's uniform takes (loc, scale): U(loc, loc + scale)
        assert kstest(np.linalg.norm(E, axis=(1, 2)), "uniform", args=(0.0, 2.0)).pvalue > 1e-3
        if d == 2:
            assert kstest(W[:, 1, 0], "uniform", args=(-1.0, 2.0)).pvalue > 1e-3
        else:
            omega = np.stack([W[:, 2, 1], W[:, 0, 2], W[:, 1, 0]], 1)
            assert kstest(np.linalg.norm(omega, axis=1), "uniform", args=(0.0, 1.0)).pvalue > 1e-3
        # isotropic traceless strain: E[E_11²] / E[E_12²] = 2(d − 1)/d
        ratio = np.mean(E[:, 0, 0] ** 2) / np.mean(E[:, 0, 1] ** 2)
        assert abs(ratio - 2 * (d - 1) / d) < 0.05 * 2 * (d - 1) / d


@pytest.mark.parametrize("kwargs, match", [
    ({"d": 4}, "d must be 2 or 3"), ({"d": 2, "n_modes": 5}, "n_modes must be an even integer"),
    ({"d": 3, "n_modes": 2}, "n_modes must be an even integer"), ({"d": 2, "n_modes": True}, "n_modes"),
    ({"d": 2, "d_rotation": -1.0}, "d_rotation"), ({"d": 3, "zeta": float("nan")}, "zeta"),
])
def test_bad_solver_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OrientationSolver(**kwargs)


def test_bad_inputs_raise() -> None:
    solver = OrientationSolver(3, 4)
    with pytest.raises(ValueError, match="coeffs must have shape"):
        solver.moments(np.zeros(7))
    with pytest.raises(ValueError, match="unit vectors"):
        solver.density(solver.initial(np.random.default_rng(0)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="flows must have shape"):
        solver.trajectory(np.zeros(solver.n_basis), np.zeros((2, 2, 2)), 0.5, 2)
    with pytest.raises(ValueError, match="piece_duration"):
        solver.trajectory(np.zeros(solver.n_basis), np.zeros((1, 3, 3)), 0.0, 2)
    with pytest.raises(ValueError, match="d must be 2 or 3"):
        random_linear_flows(3, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_transient_pieces"):
        generate_dataset(2, 1, 0, n_pieces=2, n_transient_pieces=2)
    assert math.isclose(solver.mass(solver.project(lambda p: np.ones(len(p)))), 4 * np.pi)
