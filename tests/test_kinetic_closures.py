"""The analytic closures (quadratic, 2-D and 3-D Bingham) against sphere quadrature of the
distributions they assume, mpmath's Bessel functions, exact limits and symmetries."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from flowsci_domains.kinetic.closures import (
    CLOSURES,
    BinghamClosure2D,
    BinghamClosure3D,
    QuadraticClosure,
    bingham_b,
    bingham_m4,
    bingham_ratios_2d,
    make_closure,
)

DT = torch.float64


# ----------------------------------------------------------------------------- helpers

def circle_points(n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Periodic trapezoid on the unit circle: points (n, 2), weights (n,) summing to 1."""
    phi = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(phi), np.sin(phi)], 1), np.full(n, 1.0 / n)


def sphere_points(n_t: int = 200, n_phi: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre in cos θ × trapezoid in φ on the unit sphere (fixed global frame):
    points (n, 3), weights (n,) summing to 1."""
    t, w = np.polynomial.legendre.leggauss(n_t)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    t, phi = np.meshgrid(t, phi, indexing="ij")
    s = np.sqrt(1 - t**2)
    points = np.stack([s * np.cos(phi), s * np.sin(phi), t], -1).reshape(-1, 3)
    return points, np.repeat(w, n_phi) / (4 * np.pi) * (2 * np.pi / n_phi)


def moments(points: np.ndarray, density: np.ndarray, c: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """D (d, d) and S (d, d, d, d) of the discrete distribution ``density`` at ``points``, mass c."""
    w = c * density / density.sum()
    D = np.einsum("n,ni,nj->ij", w, points, points)
    S = np.einsum("n,ni,nj,nk,nl->ijkl", w, points, points, points, points)
    return torch.tensor(D), torch.tensor(S)


def random_rotations(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n random orthogonal matrices (n, d, d), reflections included."""
    q, r = torch.linalg.qr(torch.randn(n, d, d, dtype=DT, generator=gen))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]


def random_D(n: int, d: int, gen: torch.Generator, floor: float = 0.02, c: float = 1.0) -> torch.Tensor:
    """n random second moments (n, d, d) with trace c and eigenvalues >= c·floor."""
    lam = -torch.log(torch.rand(n, d, dtype=DT, generator=gen))  # Dirichlet(1, …, 1)
    lam = floor + (1 - d * floor) * lam / lam.sum(-1, keepdim=True)
    R = random_rotations(n, d, gen)
    return c * R @ torch.diag_embed(lam) @ R.transpose(-1, -2)


def random_E(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n random symmetric matrices (n, d, d) (trace included: S:E must hold for any E)."""
    A = torch.randn(n, d, d, dtype=DT, generator=gen)
    return 0.5 * (A + A.transpose(-1, -2))


def contract(S: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    return torch.einsum("...ijkl,...kl->...ij", S, M)


CASES = [(QuadraticClosure, 2), (QuadraticClosure, 3), (BinghamClosure2D, 2), (BinghamClosure3D, 3)]


# ----------------------------------------------------------------------------- registry

def test_registry_builds_every_closure_and_rejects_unknown_names() -> None:
    assert set(CLOSURES) == {"quadratic", "bingham2d", "bingham3d", "learned2d", "learned3d"}
    for name, cls in CLOSURES.items():
        assert type(make_closure(name)) is cls
    assert make_closure("bingham3d", n_nodes=32).n_nodes == 32
    with pytest.raises(ValueError, match="unknown closure 'bingham'.*bingham2d"):
        make_closure("bingham")


# ----------------------------------------------------------------------------- exact limits

@pytest.mark.parametrize("closure_cls, d", CASES)
def test_isotropic_state(closure_cls: type, d: int) -> None:
    """D = cI/d: Bingham gives the moments of the uniform distribution; quadratic gives c/d² δδ."""
    c = 1.7
    points, w = circle_points() if d == 2 else sphere_points(40, 80)
    D, S_uniform = moments(points, w, c)
    assert torch.allclose(D, c * torch.eye(d, dtype=DT) / d, atol=1e-14)
    S = closure_cls().fourth_moment(D)
    if closure_cls is QuadraticClosure:
        eye = torch.eye(d, dtype=DT)
        assert torch.allclose(S, c / d**2 * torch.einsum("ij,kl->ijkl", eye, eye), atol=1e-15)
        E = torch.tensor(np.diag([1.0, -1.0] + [0.0] * (d - 2)))  # traceless: the quadratic S:E vanishes
        assert contract(S, E).abs().max() < 1e-15 and contract(S_uniform, E).abs().max() > 0.1
    else:
        assert (S - S_uniform).abs().max() < 1e-13


@pytest.mark.parametrize("closure_cls", [QuadraticClosure, BinghamClosure2D])
def test_perfect_alignment_gives_the_delta_distribution(closure_cls: type) -> None:
    """All rods along n (D = c nn, m2 = 1): S = c nnnn exactly."""
    angle, c = 0.83, 2.5
    n = torch.tensor([np.cos(angle), np.sin(angle)], dtype=DT)
    S = closure_cls().fourth_moment(c * torch.outer(n, n))
    assert (S - c * torch.einsum("i,j,k,l->ijkl", n, n, n, n)).abs().max() < 1e-14


# ----------------------------------------------------------------------------- 2-D Bingham

def test_bingham_ratios_match_mpmath_over_twenty_decades() -> None:
    """m2 = I1/I0, m4 = I2/I0 and g = I0 I2/I1² at 60 digits, b from 1e-9 to 1e10 (all branches)."""
    bs = np.concatenate([np.logspace(-9, 10, 77), [1e-4 * (1 + 1e-9), 4e5 * (1 + 1e-9)]])
    exact = []
    with mpmath.workdps(60):
        for b in bs:
            i0, i1, i2 = (mpmath.besseli(k, mpmath.mpf(float(b))) for k in range(3))
            exact.append([float(i1 / i0), float(i2 / i0), float(i0 * i2 / i1**2)])
    m2, m4, g = np.array(exact).T
    m4_ours, g_ours = bingham_ratios_2d(m2)
    assert np.abs(m4_ours / m4 - 1).max() < 1e-13 and np.abs(g_ours / g - 1).max() < 1e-14
    assert np.array_equal(bingham_m4(m2), m4_ours)
    well_posed = bs < 10  # b = 1e4 is only pinned down to 2b·1e-16 by the double m2 ≈ 1 − 1/(2b)
    assert np.abs(bingham_b(m2[well_posed]) / bs[well_posed] - 1).max() < 1e-13
    assert bingham_b(1.0) == np.inf and bingham_b(0.0) == 0.0 and bingham_m4(1.0) == 1.0


def test_bingham_2d_reproduces_the_quadrature_moments_of_exp_b_cos() -> None:
    """Ψ_B(φ) ∝ exp(b cos 2(φ − φ0)) by a 4096-point periodic trapezoid; its D fed to the closure."""
    gen = torch.Generator().manual_seed(0)
    points, _ = circle_points()
    phi = np.arctan2(points[:, 1], points[:, 0])
    random_b = torch.exp(torch.empty(6, dtype=DT).uniform_(-3.0, 4.5, generator=gen)).tolist()
    b_values = [0.0, 1e-7, 3e-3, 120.0] + random_b
    phi0s = (2 * np.pi * torch.rand(len(b_values), dtype=DT, generator=gen)).tolist()
    Ds, Ss, cs = [], [], []
    for k, (b, phi0) in enumerate(zip(b_values, phi0s)):
        c = 0.5 + k / 4
        D, S = moments(points, np.exp(b * (np.cos(2 * (phi - phi0)) - 1)), c)
        Ds.append(D), Ss.append(S), cs.append(c)
    D, S = torch.stack(Ds), torch.stack(Ss)
    E = random_E(len(b_values), 2, gen)
    SE, SD = BinghamClosure2D()(D, E)
    scale = torch.tensor(cs, dtype=DT)[:, None, None]
    assert ((SE - contract(S, E)) / scale).abs().max() < 1e-12
    assert ((SD - contract(S, D)) / scale**2).abs().max() < 1e-12


# ----------------------------------------------------------------------------- 3-D Bingham

def test_bingham_3d_reproduces_the_quadrature_moments_of_exp_pBp() -> None:
    """Random B (any frame, up to strongly aligned) by a 200 × 400 sphere rule; its D fed to the closure."""
    gen = torch.Generator().manual_seed(1)
    points, w = sphere_points()
    Ds, Ss = [], []
    for scale in [1e-6, 0.7, 3.0, 9.0, 25.0]:
        A = torch.randn(3, 3, dtype=DT, generator=gen).numpy()
        B = scale * (A + A.T) / 2
        energy = np.einsum("ni,ij,nj->n", points, B, points)
        D, S = moments(points, w * np.exp(energy - energy.max()))
        Ds.append(D), Ss.append(S)
    D, S = torch.stack(Ds), torch.stack(Ss)
    assert torch.linalg.eigvalsh(D)[:, 0].min() < 0.03  # the strong case is well away from isotropic
    E = random_E(len(Ds), 3, gen)
    SE, SD = BinghamClosure3D()(D, E)
    assert (SE - contract(S, E)).abs().max() < 1e-10
    assert (SD - contract(S, D)).abs().max() < 1e-10


def test_bingham_3d_near_singular_and_unconverged_fits_raise() -> None:
    closure = BinghamClosure3D()
    with pytest.raises(ValueError, match="λ_min/c = 0.0001.*n_nodes"):
        closure.fourth_moment(torch.diag(torch.tensor([1e-4, 0.3, 0.6999], dtype=DT)))
    assert BinghamClosure3D(n_nodes=256).fourth_moment(torch.diag(torch.tensor([1e-4, 0.3, 0.6999],
                                                                               dtype=DT))).isfinite().all()
    with pytest.raises(RuntimeError, match="did not converge in 1 Newton"):
        BinghamClosure3D(max_iter=1).fourth_moment(torch.diag(torch.tensor([0.1, 0.3, 0.6], dtype=DT)))


# ----------------------------------------------------------------------------- identities and symmetries

@pytest.mark.parametrize("closure_cls, d", CASES)
def test_trace_identities(closure_cls: type, d: int) -> None:
    """S_iikl = S_klii = D_kl, so S:I = D; Bingham S is fully symmetric."""
    gen = torch.Generator().manual_seed(2)
    D = random_D(6, d, gen, c=1.3)
    closure = closure_cls()
    S = closure.fourth_moment(D)
    assert (torch.einsum("...iikl->...kl", S) - D).abs().max() < 1e-13
    assert (torch.einsum("...klii->...kl", S) - D).abs().max() < 1e-13
    SE, _ = closure(D, torch.eye(d, dtype=DT).expand_as(D))
    assert (SE - D).abs().max() < 1e-13
    if closure_cls is not QuadraticClosure:
        for perm in [(1, 0, 2, 3), (2, 1, 0, 3), (3, 1, 2, 0), (0, 2, 1, 3)]:
            assert (S - S.permute(0, *(1 + p for p in perm))).abs().max() < 1e-14


def test_bingham_2d_keeps_the_trace_identity_for_slightly_indefinite_D() -> None:
    """λ₂ < 0 within tol (m2 > 1, as a truncated spectrum makes it): S gets m4 = 1 of perfect
    alignment and still S_iikl = D_kl, and it is continuous across m2 = 1."""
    angle = 0.4
    R = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=DT)
    lowest = torch.tensor([-0.03, -1e-9, 0.0, 1e-9], dtype=DT)
    D = R @ torch.diag_embed(torch.stack([1.2 - lowest, lowest], -1)) @ R.T
    S = BinghamClosure2D(tol=0.05).fourth_moment(D)
    assert (torch.einsum("...iikl->...kl", S) - D).abs().max() < 1e-14
    assert (S[1:] - S[2]).abs().max() < 1e-8
    with pytest.raises(ValueError, match="positive semi-definite"):
        BinghamClosure2D().fourth_moment(D)


@pytest.mark.parametrize("closure_cls, d", CASES)
def test_rotation_equivariance(closure_cls: type, d: int) -> None:
    """(R D Rᵀ, R E Rᵀ) -> (R SE Rᵀ, R SD Rᵀ) for orthogonal R, reflections included."""
    gen = torch.Generator().manual_seed(3)
    D, E, R = random_D(8, d, gen), random_E(8, d, gen), random_rotations(8, d, gen)
    D[0] = torch.eye(d, dtype=DT) / d + 1e-9 * E[0]  # nearly isotropic: an ill-defined eigenframe
    closure = closure_cls()
    SE, SD = closure(D, E)
    SE_rot, SD_rot = closure(R @ D @ R.mT, R @ E @ R.mT)
    assert (SE_rot - R @ SE @ R.mT).abs().max() < 1e-10
    assert (SD_rot - R @ SD @ R.mT).abs().max() < 1e-10


@pytest.mark.parametrize("closure_cls, d", CASES)
def test_batching_broadcasting_and_trace_scaling(closure_cls: type, d: int) -> None:
    gen = torch.Generator().manual_seed(4)
    D, E = random_D(6, d, gen).reshape(2, 3, d, d), random_E(6, d, gen).reshape(2, 3, d, d)
    closure = closure_cls()
    SE, SD = closure(D, E)
    assert SE.shape == SD.shape == (2, 3, d, d)
    for i in range(2):  # 1e-12: a 3-D batch runs its Newton iterations until every item converged
        for j in range(3):
            se, sd = closure(D[i, j], E[i, j])
            assert (SE[i, j] - se).abs().max() < 1e-12 and (SD[i, j] - sd).abs().max() < 1e-12
    SE_one_E, _ = closure(D, E[0, 0])  # one E for the whole batch
    assert (SE_one_E[1, 2] - closure(D[1, 2], E[0, 0])[0]).abs().max() < 1e-12
    c = 3.7  # S(cD) = c S(D): S:E scales with c, S:D with c²
    SE_c, SD_c = closure(c * D, E)
    assert (SE_c - c * SE).abs().max() < 1e-12 and (SD_c - c**2 * SD).abs().max() < 1e-12


# ----------------------------------------------------------------------------- gradients

def test_quadratic_closure_is_differentiable() -> None:
    gen = torch.Generator().manual_seed(5)
    D, E = random_D(2, 3, gen).requires_grad_(True), random_E(2, 3, gen).requires_grad_(True)

    def symmetric_inputs(D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return QuadraticClosure()(0.5 * (D + D.mT), E)

    assert torch.autograd.gradcheck(symmetric_inputs, (D, E))


@pytest.mark.parametrize("closure_cls, d", [(BinghamClosure2D, 2), (BinghamClosure3D, 3)])
def test_bingham_gradients_flow_to_E_only(closure_cls: type, d: int) -> None:
    gen = torch.Generator().manual_seed(6)
    D, E = random_D(2, d, gen).requires_grad_(True), random_E(2, d, gen).requires_grad_(True)
    SE, SD = closure_cls()(D, E)
    assert not SD.requires_grad
    (grad_E,) = torch.autograd.grad(SE.sum(), E)
    S = closure_cls().fourth_moment(D.detach())
    assert (grad_E - S.sum(dim=(1, 2))).abs().max() < 1e-14  # ∂ Σ_ij S_ijkl E_kl / ∂E_kl


# ----------------------------------------------------------------------------- input validation

@pytest.mark.parametrize("D, match", [
    (torch.tensor([[0.6, 0.1], [0.0, 0.4]], dtype=DT), "symmetric"),
    (torch.eye(4, dtype=DT) / 4, r"shape \(\.\.\., d, d\) with d in \(2,\)"),
    (torch.ones(2, 3, dtype=DT), "shape"),
    (torch.ones(2, dtype=DT), "shape"),
    (torch.tensor([[1.2, 0.0], [0.0, -0.2]], dtype=DT), "positive semi-definite.*-0.2"),
    (torch.zeros(2, 2, dtype=DT), "positive trace"),
    (torch.tensor([[float("nan"), 0.0], [0.0, 0.5]], dtype=DT), "finite"),
    (torch.eye(2, dtype=torch.int64), "floating-point"),
    (np.eye(2) / 2, "torch.Tensor, got ndarray"),
    (torch.eye(3, dtype=DT) / 3, "d in \\(2,\\)"),
])
def test_bad_D_is_rejected(D: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BinghamClosure2D()(D, torch.eye(2, dtype=DT))


def test_bad_E_and_bad_arguments_are_rejected() -> None:
    D = torch.eye(3, dtype=DT).expand(4, 3, 3) / 3
    with pytest.raises(ValueError, match=r"E must have shape \(\.\.\., 3, 3\)"):
        QuadraticClosure()(D, torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="dtype and device"):
        QuadraticClosure()(D, torch.eye(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="do not broadcast"):
        QuadraticClosure()(D, torch.zeros(5, 3, 3, dtype=DT))
    with pytest.raises(ValueError, match="tol"):
        QuadraticClosure(tol=0.0)
    with pytest.raises(ValueError, match="n_nodes"):
        BinghamClosure3D(n_nodes=2)
    with pytest.raises(ValueError, match="m2 must lie in"):
        bingham_b(np.array([0.5, 1.2]))
