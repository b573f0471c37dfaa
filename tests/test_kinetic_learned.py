"""Learned closures and a-priori fitting: the S rebuild against discrete distributions, O(d)
equivariance, isotropy, trace identities, a fit to Bingham targets, hand-computed errors."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from flowsci_domains.kinetic.a_priori import (
    closure_errors,
    fit_closure,
    parity_figure,
    relative_error,
    split_trajectories,
)
from flowsci_domains.kinetic.closures import (
    CLOSURES,
    BinghamClosure2D,
    QuadraticClosure,
    bingham_m4,
    make_closure,
)
from flowsci_domains.kinetic.learned import (
    LearnedClosure2D,
    LearnedClosure3D,
    harmonic_basis_3d,
    rebuild_fourth_moment_2d,
    rebuild_fourth_moment_3d,
)

DT = torch.float64


# ----------------------------------------------------------------------------- helpers

def orthogonal(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n random orthogonal matrices (n, d, d), about half of them reflections."""
    q, r = torch.linalg.qr(torch.randn(n, d, d, dtype=DT, generator=gen))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]


def random_D(n: int, d: int, gen: torch.Generator, floor: float = 0.03) -> torch.Tensor:
    """n second moments (n, d, d) with random traces c in [0.5, 2] and eigenvalues >= c·floor."""
    lam = -torch.log(torch.rand(n, d, dtype=DT, generator=gen))
    lam = floor + (1 - d * floor) * lam / lam.sum(-1, keepdim=True)
    c = 0.5 + 1.5 * torch.rand(n, 1, dtype=DT, generator=gen)
    R = orthogonal(n, d, gen)
    return R @ torch.diag_embed(c * lam) @ R.transpose(-1, -2)


def random_E(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n traceless symmetric strain rates (n, d, d) of Frobenius norm ~1."""
    A = torch.randn(n, d, d, dtype=DT, generator=gen)
    E = 0.5 * (A + A.transpose(-1, -2))
    return E - E.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(d, dtype=DT)


def discrete_moments(points: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D (d, d) and S (d, d, d, d) of the point masses ``weights`` (K,) at unit vectors (K, d)."""
    return (torch.einsum("k,ki,kj->ij", weights, points, points),
            torch.einsum("k,ki,kj,kl,km->ijlm", weights, points, points, points, points))


def small_closure(d: int, use_strain: bool) -> LearnedClosure2D | LearnedClosure3D:
    if d == 2:
        return LearnedClosure2D(hidden=16, depth=2, use_strain=use_strain)
    return LearnedClosure3D(hidden=4, gated=2, depth=2, use_strain=use_strain)


def randomise(module: torch.nn.Module, gen: torch.Generator, scale: float = 1.0) -> None:
    """Overwrite every parameter with N(0, scale²): 'any weights'."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, dtype=p.dtype, generator=gen))


# ----------------------------------------------------------------------------- rebuild of S

def test_rebuild_2d_reproduces_discrete_distributions() -> None:
    """Any distribution's S is rebuilt exactly from D and its eigenframe ⟨cos 4φ⟩, ⟨sin 4φ⟩, the
    angle φ measured from the major axis in a right-handed frame (found here with numpy's eigh)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        angle = 2 * math.pi * torch.rand(7, dtype=DT, generator=gen)
        points = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        weights = torch.rand(7, dtype=DT, generator=gen) * 3
        D, S = discrete_moments(points, weights)
        _, vectors = np.linalg.eigh(D.numpy())
        major = vectors[:, 1]
        minor = np.array([-major[1], major[0]])                    # det [major, minor] = +1
        phi = np.arctan2(points.numpy() @ minor, points.numpy() @ major)
        c = float(weights.sum())
        cos4 = torch.tensor(float(weights.numpy() @ np.cos(4 * phi)) / c, dtype=DT)
        sin4 = torch.tensor(float(weights.numpy() @ np.sin(4 * phi)) / c, dtype=DT)
        assert abs(float(sin4)) > 1e-3                              # a chiral case, so handedness matters
        torch.testing.assert_close(rebuild_fourth_moment_2d(D, cos4, sin4), S, atol=1e-13, rtol=0)
        assert not torch.allclose(rebuild_fourth_moment_2d(D, cos4, -sin4), S, atol=1e-6)


def test_rebuild_3d_reproduces_discrete_distributions() -> None:
    """S minus its D-determined part is traceless, and its projection on the 4e basis rebuilds S."""
    gen = torch.Generator().manual_seed(1)
    basis = harmonic_basis_3d()
    torch.testing.assert_close(basis.reshape(9, -1) @ basis.reshape(9, -1).T, torch.eye(9, dtype=DT),
                               atol=1e-13, rtol=0)
    for _ in range(5):
        points = torch.nn.functional.normalize(torch.randn(11, 3, dtype=DT, generator=gen), dim=-1)
        weights = torch.rand(11, dtype=DT, generator=gen) * 2
        D, S = discrete_moments(points, weights)
        rest = S - rebuild_fourth_moment_3d(D, torch.zeros(9, dtype=DT))
        torch.testing.assert_close(torch.einsum("iikl->kl", rest), torch.zeros(3, 3, dtype=DT), atol=1e-14,
                                   rtol=0)
        harmonic = torch.einsum("aijkl,ijkl->a", basis, S) / weights.sum()
        torch.testing.assert_close(rebuild_fourth_moment_3d(D, harmonic), S, atol=1e-13, rtol=0)


def test_rebuild_2d_with_bingham_moments_is_the_bingham_closure() -> None:
    gen = torch.Generator().manual_seed(2)
    D = random_D(20, 2, gen)
    lam = torch.linalg.eigvalsh(D)
    m4 = torch.tensor(bingham_m4(((lam[:, 1] - lam[:, 0]) / lam.sum(-1)).numpy()))
    torch.testing.assert_close(rebuild_fourth_moment_2d(D, m4, torch.zeros(20, dtype=DT)),
                               BinghamClosure2D().fourth_moment(D), atol=1e-13, rtol=0)


# ----------------------------------------------------------------------------- structure for any weights

def brief_fit(closure: torch.nn.Module, d: int, gen: torch.Generator) -> None:
    """20 Adam steps on quadratic-closure targets: weights that are not the initial ones."""
    D, E = random_D(64, d, gen), random_E(64, d, gen)
    SE, SD = QuadraticClosure()(D, E)
    before = [p.detach().clone() for p in closure.parameters()]
    fit_closure(closure, {"D": D, "E": E, "SE": SE, "SD": SD}, steps=20, lr=1e-2, batch_size=32, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, closure.parameters()))


@pytest.mark.parametrize("d", [2, 3])
def test_equivariance_under_rotations_and_reflections(d: int) -> None:
    """closure(R D Rᵀ, R E Rᵀ) = R closure(D, E) Rᵀ for orthogonal R (reflections included),
    untrained and briefly trained, in float64 (1e-10) and float32 (1e-5)."""
    gen = torch.Generator().manual_seed(3 + d)
    for use_strain in (True, False):
        torch.manual_seed(d)
        closure = small_closure(d, use_strain)
        for trained in (False, True):
            if trained:
                brief_fit(closure, d, gen)
            D, E, R = random_D(40, d, gen, floor=0.05), random_E(40, d, gen), orthogonal(40, d, gen)
            assert bool((torch.linalg.det(R) < 0).any()) and bool((torch.linalg.det(R) > 0).any())
            for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
                model = copy.deepcopy(closure).to(dtype)   # float32 -> float64 would round e3nn's constants
                Dt, Et, Rt = D.to(dtype), E.to(dtype), R.to(dtype)
                SE, SD = model(Dt, Et)
                D_rot, E_rot = (Rt @ X @ Rt.mT for X in (Dt, Et))          # symmetric up to rounding:
                SE_rot, SD_rot = model(0.5 * (D_rot + D_rot.mT),
                                       0.5 * (E_rot + E_rot.mT))  # float32 fails tol
                torch.testing.assert_close(SE_rot, Rt @ SE @ Rt.mT, atol=tol, rtol=0)
                torch.testing.assert_close(SD_rot, Rt @ SD @ Rt.mT, atol=tol, rtol=0)


@pytest.mark.parametrize("d", [2, 3])
def test_isotropic_D_gives_isotropic_S_for_any_weights(d: int) -> None:
    """S of D = cI/d equals the fourth moment of the uniform distribution (quadrature), whatever
    the weights and E; S is continuous there and gradients stay finite."""
    if d == 2:
        angle = 2 * math.pi * torch.arange(64, dtype=DT) / 64
        points = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        weights = torch.full((64,), 1 / 64, dtype=DT)
    else:
        z, w = np.polynomial.legendre.leggauss(8)
        angle = 2 * math.pi * np.arange(16) / 16
        z, angle = np.meshgrid(z, angle, indexing="ij")
        ring = np.sqrt(1 - z**2)
        points = torch.tensor(np.stack([ring * np.cos(angle), ring * np.sin(angle), z], -1).reshape(-1, 3))
        weights = torch.tensor(np.repeat(w, 16) / 32)
    _, S_uniform = discrete_moments(points, weights)
    gen = torch.Generator().manual_seed(10 + d)
    c = torch.tensor([0.7, 1.0, 1.9], dtype=DT)
    D_iso = c[:, None, None] / d * torch.eye(d, dtype=DT)
    E = random_E(3, d, gen)
    for use_strain in (True, False):
        closure = small_closure(d, use_strain)
        randomise(closure, gen, scale=2.0)
        S = closure.fourth_moment(D_iso, E if use_strain else None)
        torch.testing.assert_close(S, c[:, None, None, None, None] * S_uniform, atol=1e-14, rtol=0)
        nudge = 1e-9 * random_E(3, d, gen)
        S_near = closure.fourth_moment(D_iso + nudge, E if use_strain else None)
        assert float((S_near - S).detach().abs().max()) < 1e-7
        D_grad = D_iso.clone().requires_grad_(True)
        SE, SD = closure(D_grad, E)
        (SE.square().sum() + SD.square().sum()).backward()
        assert bool(torch.isfinite(D_grad.grad).all())


@pytest.mark.parametrize("d", [2, 3])
def test_trace_identity_and_full_symmetry_for_any_weights(d: int) -> None:
    gen = torch.Generator().manual_seed(20 + d)
    D, E = random_D(30, d, gen), random_E(30, d, gen)
    for use_strain in (True, False):
        closure = small_closure(d, use_strain)
        randomise(closure, gen)
        S = closure.fourth_moment(D, E if use_strain else None)
        torch.testing.assert_close(torch.einsum("nijkk->nij", S), D, atol=1e-13, rtol=0)
        for perm in itertools.permutations(range(1, 5)):
            torch.testing.assert_close(S.permute(0, *perm), S, atol=1e-14, rtol=0)
        SE, SD = closure(D, E)
        torch.testing.assert_close(SE, torch.einsum("nijkl,nkl->nij", S, E), atol=1e-13, rtol=0)
        torch.testing.assert_close(SD, torch.einsum("nijkl,nkl->nij", S, D), atol=1e-13, rtol=0)


def test_strain_changes_the_closure_only_with_use_strain() -> None:
    """With use_strain, S depends on E (S:E is not linear in E); without, it does not."""
    gen = torch.Generator().manual_seed(30)
    for d in (2, 3):
        D, E = random_D(10, d, gen), random_E(10, d, gen)
        with_strain, without = small_closure(d, True), small_closure(d, False)
        with torch.no_grad():
            change = with_strain.fourth_moment(D, E) - with_strain.fourth_moment(D, 2 * E)
            torch.testing.assert_close(without.fourth_moment(D, E), without.fourth_moment(D, 2 * E), atol=0,
                                       rtol=0)
        assert float(change.abs().max()) > 1e-6


# ----------------------------------------------------------------------------- fitting and evaluation

def test_fit_on_bingham_targets_lowers_the_error_tenfold() -> None:
    gen = torch.Generator().manual_seed(40)
    bingham = BinghamClosure2D()

    def data(n: int) -> dict[str, torch.Tensor]:
        D, E = random_D(n, 2, gen, floor=0.02), random_E(n, 2, gen)
        SE, SD = bingham(D, E)
        return {"D": D, "E": E, "SE": SE, "SD": SD}

    train, test = data(512), data(256)
    torch.manual_seed(0)
    closure = LearnedClosure2D(hidden=32, depth=2, use_strain=False)
    before = closure_errors(closure, test)
    losses = fit_closure(closure, train, steps=300, lr=1e-2, batch_size=128, seed=0)
    after = closure_errors(closure, test)
    assert len(losses) == 300 and losses[-1] < losses[0]
    assert after["SE"] < before["SE"] / 10 and after["SD"] < before["SD"] / 10, (before, after)


def test_relative_error_and_closure_errors_hand_cases() -> None:
    true = np.array([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = np.array([[[4.0, 0.0], [0.0, 4.0]], [[0.0, 2.0], [2.0, 0.0]]])
    assert relative_error(pred, true) == pytest.approx(3 / 5, abs=1e-15)       # sqrt(1 + 8) / 5
    assert relative_error(torch.tensor(pred), torch.tensor(true)) == pytest.approx(0.6, abs=1e-15)
    # isotropic rods, c = 2, E = diag(1, −1): the true S = c/8 P(δ, δ) gives S:E = cE/4, S:D = c²δ/4;
    # the quadratic closure gives S:E = D (D:E)/c = 0 (error 1) and S:D = D (D:D)/c = c²δ/4 (error 0)
    D = torch.eye(2, dtype=DT).expand(3, 2, 2).clone()
    E = torch.diag(torch.tensor([1.0, -1.0], dtype=DT)).expand(3, 2, 2).clone()
    arrays = {"D": D, "E": E, "SE": E / 2, "SD": torch.eye(2, dtype=DT).expand(3, 2, 2).clone()}
    errors = closure_errors(QuadraticClosure(), arrays)
    assert errors["SE"] == pytest.approx(1.0, abs=1e-15) and errors["SD"] == pytest.approx(0.0, abs=1e-15)


def test_split_trajectories_and_parity_figure() -> None:
    gen = torch.Generator().manual_seed(50)
    D, E = random_D(24, 2, gen).reshape(4, 6, 2, 2), random_E(24, 2, gen).reshape(4, 6, 2, 2)
    SE, SD = BinghamClosure2D()(D, E)
    arrays = {"D": D.numpy(), "E": E.numpy(), "SE": SE.numpy(), "SD": SD.numpy(), "zeta": np.arange(4.0)}
    train, test = split_trajectories(arrays, 3)
    assert train["D"].shape == (3, 6, 2, 2) and test["SE"].shape == (1, 6, 2, 2)
    assert list(test["zeta"]) == [3.0]
    closures = {"quadratic": QuadraticClosure(), "learned": LearnedClosure2D(hidden=8, depth=1)}
    fig = parity_figure(closures, arrays, max_points=10)
    for ax, name in zip(fig.axes, ("SE", "SD")):
        assert len(ax.collections) == 2
        assert len(ax.collections[0].get_offsets()) == 10 * 4                    # 10 snapshots × 4 entries
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        for label, closure in zip(labels, closures.values()):
            assert f"{closure_errors(closure, arrays)[name]:.3g}" in label
    with pytest.raises(ValueError, match="n_train"):
        split_trajectories(arrays, 4)


# ----------------------------------------------------------------------------- registry, checkpoints, errors

@pytest.mark.parametrize("name,kwargs,d", [("learned2d", {"hidden": 8, "depth": 2}, 2),
                                            ("learned3d", {"hidden": 4, "gated": 2, "depth": 1}, 3)])
def test_registry_and_state_dict_round_trip(name: str, kwargs: dict, d: int) -> None:
    gen = torch.Generator().manual_seed(60)
    closure = make_closure(name, **kwargs)
    assert isinstance(closure, CLOSURES[name])
    randomise(closure, gen)
    copy = make_closure(name, **kwargs)
    copy.load_state_dict(closure.state_dict())
    D, E = random_D(5, d, gen), random_E(5, d, gen)
    for a, b in zip(closure(D, E), copy(D, E)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="hidden"):
        LearnedClosure2D(hidden=0)
    with pytest.raises(ValueError, match="strain_scale"):
        LearnedClosure3D(strain_scale=-1.0)
    gen = torch.Generator().manual_seed(70)
    D = random_D(2, 2, gen)
    with pytest.raises(ValueError, match="needs E"):
        LearnedClosure2D(hidden=4, depth=1).fourth_moment(D)
    with pytest.raises(ValueError, match="d in"):
        LearnedClosure2D(hidden=4, depth=1)(random_D(2, 3, gen), random_E(2, 3, gen))
    arrays = {"D": D, "E": random_E(2, 2, gen), "SE": D, "SD": D}
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit_closure(QuadraticClosure(), arrays, steps=1, lr=1e-3, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="steps"):
        fit_closure(LearnedClosure2D(hidden=4, depth=1), arrays, steps=0, lr=1e-3, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="lacks"):
        closure_errors(QuadraticClosure(), {"D": D, "E": D})
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.zeros((2, 2, 2)), np.ones((3, 2, 2)))
