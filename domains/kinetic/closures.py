"""Analytic closures of the second-moment equation of a rod suspension: S:E and S:D from D.

The moment equation dD/dt = A·D + D·Aᵀ − 2 S:E + 4ζ(D·D − S:D) − 2d·d_R (D − cI/d) is not closed:
it needs the fourth moment S = ∫ pppp Ψ dp through (S:E)_ij = S_ijkl E_kl and (S:D)_ij = S_ijkl D_kl.
A closure models S from D alone. All closures here satisfy S(D) = c·S(D/c) with c = tr D.

- ``QuadraticClosure`` (Doi): S = D⊗D / c (S_ijkl = D_ij D_kl for c = 1); exact for perfectly
  aligned rods, wrong for isotropic ones.
- ``BinghamClosure2D``: S is the fourth moment of Ψ_B ∝ exp(b cos 2(φ − φ0)), the maximum-entropy
  distribution with second moment D. With m2 = ⟨cos 2(φ − φ0)⟩ = I1(b)/I0(b) = (λ1 − λ2)/c and
  m4 = ⟨cos 4(φ − φ0)⟩ = I2(b)/I0(b), the eigenframe components are S1111 = c(3/8 + m2/2 + m4/8),
  S2222 = c(3/8 − m2/2 + m4/8), S1122 = c(1/8 − m4/8). They are written here without an eigen-
  decomposition, in the tensor basis of δ and Q = D − cI/2 (exact, continuous at isotropy):
  S = c(3 − m4)/24 P(δ, δ) + (P(δ, Q) + P(Q, δ))/6 + m4/(3 m2² c) P(Q, Q), with
  P(X, Y)_ijkl = X_ij Y_kl + X_ik Y_jl + X_il Y_jk (:func:`pairings`) and m4/m2² → 1/2 at m2 → 0.
- ``BinghamClosure3D``: Ψ_B ∝ exp(β1 p1² + β2 p2²) in D's eigenframe (β3 = 0 fixes the freedom of
  adding a multiple of I), β found by damped Newton on the convex dual log Z(β) − β·λ. The sphere
  integrals use Gauss–Legendre in t = p3 with the azimuthal integral done exactly by Bessel
  functions: ∫ exp(u cos 2φ) cos 2nφ dφ = 2π I_n(u).

The two Bingham closures solve for b or β by root finding in float64 numpy and are not
differentiable in D: their outputs carry gradients with respect to E only (S:E is linear in E).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from scipy.special import ive
from torch import nn

SMALL_B = 1e-4   # below it the Bessel ratios use their Taylor series (error O(b⁴) < 1e-16)
LARGE_B = 4e5    # above it they use their large-b (Hankel) expansions (error O(b⁻³) < 1e-16)
NEAR = 1e-6      # m2 < NEAR or 1 − m2 < NEAR: b from the series of I1/I0 instead of Newton


# --------------------------------------------------------------------------- input checks

def check_second_moment(D: torch.Tensor, dims: tuple[int, ...], tol: float, name: str = "D") -> torch.Tensor:
    """Validate a batch of second moments D: (..., d, d), symmetric, positive semi-definite (up to
    ``tol``·c), trace c > 0, d in ``dims``. Returns c: (...)."""
    if not isinstance(D, torch.Tensor) or not D.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(D).__name__}"
                         f"{'' if not isinstance(D, torch.Tensor) else ' of dtype ' + str(D.dtype)}")
    if D.ndim < 2 or D.shape[-1] != D.shape[-2] or D.shape[-1] not in dims:
        raise ValueError(f"{name} must have shape (..., d, d) with d in {dims}, got {tuple(D.shape)}")
    if not bool(torch.isfinite(D).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf entries")
    c = D.diagonal(dim1=-2, dim2=-1).sum(-1)
    if not bool((c > 0).all()):
        raise ValueError(f"{name} must have a positive trace c, got min trace {float(c.min()):.3g}")
    asym = (D - D.transpose(-1, -2)).abs().amax(dim=(-2, -1))
    if not bool((asym <= tol * c).all()):
        raise ValueError(f"{name} must be symmetric, got |D − Dᵀ|/c up to {float((asym / c).max()):.3g} "
                         f"(tolerance {tol:g})")
    lowest = torch.linalg.eigvalsh(0.5 * (D + D.transpose(-1, -2)))[..., 0]
    if not bool((lowest >= -tol * c).all()):
        raise ValueError(f"{name} must be positive semi-definite, got an eigenvalue λ/c = "
                         f"{float((lowest / c).min()):.3g} (tolerance −{tol:g})")
    return c


def check_strain(E: torch.Tensor, D: torch.Tensor, name: str = "E") -> None:
    """Validate E: (..., d, d) against D: same d, dtype and device, batch shapes broadcastable."""
    if not isinstance(E, torch.Tensor) or E.dtype != D.dtype or E.device != D.device:
        received = f"{type(E).__name__}" if not isinstance(E, torch.Tensor) else f"{E.dtype} on {E.device}"
        raise ValueError(f"{name} must be a torch.Tensor of D's dtype and device ({D.dtype} on {D.device}), "
                         f"got {received}")
    if E.ndim < 2 or E.shape[-2:] != D.shape[-2:]:
        raise ValueError(f"{name} must have shape (..., {D.shape[-1]}, {D.shape[-1]}) like D, "
                         f"got {tuple(E.shape)}")
    try:
        torch.broadcast_shapes(E.shape[:-2], D.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch shapes of {name} {tuple(E.shape[:-2])} and D {tuple(D.shape[:-2])} "
                         "do not broadcast") from None


# --------------------------------------------------------------------------- tensor algebra

def contract(S: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """(S:M)_ij = S_ijkl M_kl. S: (..., d, d, d, d), M: (..., d, d) -> (..., d, d)."""
    return torch.einsum("...ijkl,...kl->...ij", S, M)


def pairings(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """X_ij Y_kl + X_ik Y_jl + X_il Y_jk: X, Y (..., d, d) -> (..., d, d, d, d).

    pairings(δ, δ) = δ_ij δ_kl + δ_ik δ_jl + δ_il δ_jk; fully symmetric when X = Y is symmetric."""
    return (torch.einsum("...ij,...kl->...ijkl", X, Y) + torch.einsum("...ik,...jl->...ijkl", X, Y)
            + torch.einsum("...il,...jk->...ijkl", X, Y))


# --------------------------------------------------------------------------- 2-D Bingham functions

def _ratio(b: np.ndarray) -> np.ndarray:
    """I1(b)/I0(b) for b > 0."""
    return ive(1, b) / ive(0, b)


def bingham_b(m2: np.ndarray | float) -> np.ndarray:
    """The b ≥ 0 with I1(b)/I0(b) = m2, for m2 in [0, 1] (b = inf at m2 = 1). Elementwise, float64.

    Safeguarded Newton inside the bracket [2 m2, 2 m2 / (1 − m2²)] (from b/(1 + √(1 + b²)) ≤
    I1/I0 ≤ b/2); near the ends the series I1/I0 = b/2 − b³/16 + … and 1 − 1/(2b) − 1/(8b²) − …
    inverted: b = 2 m2 + m2³ and b = 1/(2(1 − m2)) + 1/4."""
    m2 = np.asarray(m2, dtype=np.float64)
    if not bool(np.all((m2 >= 0) & (m2 <= 1))):
        raise ValueError(f"m2 must lie in [0, 1], got values in [{m2.min():.3g}, {m2.max():.3g}]")
    with np.errstate(divide="ignore"):
        b = np.where(m2 < NEAR, 2 * m2 + m2**3, 0.5 / (1 - m2) + 0.25)
    solve = (m2 >= NEAR) & (m2 <= 1 - NEAR)
    target = m2[solve]
    lo, hi = 2 * target, 2 * target / ((1 - target) * (1 + target))
    x = hi.copy()
    for _ in range(100):
        r = _ratio(x)
        lo = np.where(r < target, x, lo)
        hi = np.where(r > target, x, hi)
        step = (r - target) / (1 - r / x - r * r)  # d(I1/I0)/db = 1 − R/b − R²
        new = x - step
        new = np.where((new <= lo) | (new >= hi), 0.5 * (lo + hi), new)
        done = (np.abs(step) <= 1e-13 * x) | (np.abs(r - target) <= 1e-15 * target)  # ~ rounding of r
        x = new
        if done.all():
            break
    b[solve] = x
    return b


def bingham_ratios_2d(m2: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """m4 = I2(b)/I0(b) and g = m4/m2² = I0 I2/I1² at the b of :func:`bingham_b`. m2: any shape,
    in [0, 1]. g → 1/2 at m2 → 0; m4 = g = 1 at m2 = 1 (perfect alignment)."""
    b = bingham_b(m2)
    small, large = b < SMALL_B, b > LARGE_B
    safe = np.where(small | large, 1.0, b)  # evaluate the Bessel functions only where they are used
    i0, i1, i2 = ive(0, safe), ive(1, safe), ive(2, safe)
    with np.errstate(divide="ignore"):
        inv = np.where(large, 1 / b, 0.0)
    m4_large = 1 - 2 * inv + inv * inv
    r_large = 1 - inv / 2 - inv * inv / 8
    m4 = np.where(small, b * b / 8 * (1 - b * b / 6), np.where(large, m4_large, i2 / i0))
    g = np.where(small, 0.5 + b * b / 24, np.where(large, m4_large / r_large**2, i0 * i2 / (i1 * i1)))
    return m4, g


def bingham_m4(m2: np.ndarray | float) -> np.ndarray:
    """⟨cos 4φ⟩ = I2(b)/I0(b) of the 2-D Bingham distribution exp(b cos 2φ) with ⟨cos 2φ⟩ = m2.
    m2: any shape, in [0, 1]; returns the same shape."""
    return bingham_ratios_2d(m2)[0]


# --------------------------------------------------------------------------- closures

class Closure(nn.Module, ABC):
    """closure(D, E) -> (S:E, S:D). D: (..., d, d) second moments (trace c > 0), E: (..., d, d)
    (only its symmetric part enters, since S is symmetric in its last two indices); batch
    shapes broadcast. Outputs (..., d, d)."""

    dims: tuple[int, ...] = (2, 3)
    differentiable_in_D: bool = True

    def __init__(self, tol: float = 1e-8):
        super().__init__()
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol}")
        self.tol = tol

    def fourth_moment(self, D: torch.Tensor) -> torch.Tensor:
        """The closed S: D (..., d, d) -> (..., d, d, d, d)."""
        return self._fourth_moment(D, check_second_moment(D, self.dims, self.tol))

    def forward(self, D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = check_second_moment(D, self.dims, self.tol)
        check_strain(E, D)
        S = self._fourth_moment(D, c)
        return contract(S, E), contract(S, D if self.differentiable_in_D else D.detach())

    @abstractmethod
    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """S from a validated D (..., d, d) with traces c (...)."""


class QuadraticClosure(Closure):
    """Doi's quadratic closure S = D⊗D / c, so S:E = D (D:E)/c and S:D = D (D:D)/c; d = 2 or 3.
    Differentiable in D and E."""

    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ij,...kl->...ijkl", D, D) / c[..., None, None, None, None]


class BinghamClosure2D(Closure):
    """The exact 2-D Bingham closure (d = 2). Not differentiable in D (gradients flow to E only).

    A D that is slightly indefinite (λ₂ down to −``tol``·c, so m2 = (λ₁ − λ₂)/c > 1, as a truncated
    spectrum makes it in a strongly aligned field) gets the fourth harmonic of perfect alignment,
    m4 = 1, with S still built on D itself, so that the trace identity S_iikl = D_kl holds for it
    too (g = m4/m2² below uses the true m2)."""

    dims = (2,)
    differentiable_in_D = False

    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        D, c = D.detach(), c.detach()
        D = 0.5 * (D + D.transpose(-1, -2))
        eye = torch.eye(2, dtype=D.dtype, device=D.device).expand_as(D)
        Q = D - 0.5 * c[..., None, None] * eye
        m2 = 2 * torch.hypot(Q[..., 0, 0], Q[..., 0, 1]) / c                      # (λ1 − λ2)/c
        realizable = m2.clamp(max=1.0)
        m4, g = bingham_ratios_2d(realizable.cpu().numpy())
        m4 = torch.as_tensor(m4, dtype=D.dtype, device=D.device)
        g = torch.as_tensor(g, dtype=D.dtype, device=D.device) * torch.where(m2 > 1, m2, 1.0) ** -2
        expand = (...,) + (None,) * 4
        return ((c * (3 - m4) / 24)[expand] * pairings(eye, eye)
                + (pairings(eye, Q) + pairings(Q, eye)) / 6
                + (g / (3 * c))[expand] * pairings(Q, Q))


class BinghamClosure3D(Closure):
    """The 3-D Bingham closure (d = 3) by Newton on the two free parameters of B.

    ``n_nodes`` Gauss–Legendre nodes on t = p3 ∈ (0, 1] (the positive half of a 2·n_nodes rule;
    the integrands are even in t), the polar axis along the eigenvector of the largest
    eigenvalue; the azimuthal integrals are exact. Concentrated distributions need more nodes:
    D must have λ_min/c ≥ 3/n_nodes² (7.3e-4 at the default 64), where the fourth moments are
    accurate to about 1e-12 (measured against 1000 nodes). Not differentiable in D.
    """

    dims = (3,)
    differentiable_in_D = False

    def __init__(self, n_nodes: int = 64, tol: float = 1e-8, max_iter: int = 100):
        super().__init__(tol)
        if n_nodes < 4 or max_iter < 1:
            raise ValueError(f"n_nodes must be >= 4 and max_iter >= 1, got n_nodes={n_nodes}, "
                             f"max_iter={max_iter}")
        self.n_nodes, self.max_iter = n_nodes, max_iter
        self.min_eigenvalue = 3.0 / n_nodes**2
        nodes, weights = np.polynomial.legendre.leggauss(2 * n_nodes)
        self._t, self._w = nodes[n_nodes:], weights[n_nodes:]  # the positive half, ascending

    def _averages(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For Ψ ∝ exp(β1 p1² + β2 p2²), beta (N, 2): log Z (N,) (up to a constant) and the
        averages (N, 9) of p1², p2², p3², p1⁴, p2⁴, p3⁴, p1²p2², p1²p3², p2²p3²."""
        t, w = self._t, self._w
        t2 = t * t
        s2 = 1 - t2                                                  # sin² θ
        u = 0.5 * s2 * (beta[:, :1] - beta[:, 1:])                   # exponent = v + u cos 2φ
        exponent = s2 * beta.max(axis=1, keepdims=True)              # v + |u|, pairs with ive
        shift = exponent.max(axis=1, keepdims=True)
        base = w * np.exp(exponent - shift)
        a0, a1, a2 = base * ive(0, u), base * ive(1, u), base * ive(2, u)
        z = a0.sum(axis=1)
        plus, minus = s2 * (a0 + a1) / 2, s2 * (a0 - a1) / 2            # φ-integrals of p1², p2²
        s4 = s2 * s2 / 8
        moments = np.stack([
            plus.sum(1), minus.sum(1), (t2 * a0).sum(1),
            (s4 * (3 * a0 + 4 * a1 + a2)).sum(1), (s4 * (3 * a0 - 4 * a1 + a2)).sum(1), (t2 * t2 * a0).sum(1),
            (s4 * (a0 - a2)).sum(1), (t2 * plus).sum(1), (t2 * minus).sum(1)], axis=1) / z[:, None]
        return np.log(z) + shift[:, 0], moments

    def _fit(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bingham parameters and fourth moments for eigenvalues lam: (N, 3), ascending, summing
        to 1. Returns beta (N, 2) (β3 = 0) and the averages (N, 9) of :meth:`_averages`."""
        beta = 0.5 / lam[:, 2:] - 0.5 / lam[:, :2]   # right in the isotropic and aligned limits
        log_z, avg = self._averages(beta)
        for _ in range(self.max_iter):
            grad = avg[:, :2] - lam[:, :2]                       # ∂/∂β of log Z(β) − β·λ
            if np.abs(grad).max() <= 1e-14:
                return beta, avg
            var1, var2 = avg[:, 3] - avg[:, 0] ** 2, avg[:, 4] - avg[:, 1] ** 2   # its Hessian
            cov = avg[:, 6] - avg[:, 0] * avg[:, 1]
            det = var1 * var2 - cov * cov
            step = -np.stack([var2 * grad[:, 0] - cov * grad[:, 1],
                              var1 * grad[:, 1] - cov * grad[:, 0]], axis=1) / det[:, None]
            objective = log_z - (beta * lam[:, :2]).sum(1)
            slack = 1e-14 * (1 + np.abs(objective))              # rounding of the objective
            slope = (grad * step).sum(1)
            scale = np.ones(len(beta))
            for _ in range(60):                                  # backtracking (Armijo)
                trial = beta + scale[:, None] * step
                trial_log_z, trial_avg = self._averages(trial)
                accept = trial_log_z - (trial * lam[:, :2]).sum(1) <= objective + 1e-4 * scale * slope + slack
                if accept.all():
                    break
                scale = np.where(accept, scale, 0.5 * scale)
            beta, log_z, avg = trial, trial_log_z, trial_avg
        raise RuntimeError(f"the 3-D Bingham fit did not converge in {self.max_iter} Newton steps "
                           f"(smallest λ/c = {lam[:, 0].min():.3g}); increase n_nodes")

    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        D, c = D.detach(), c.detach()
        lam, vec = torch.linalg.eigh(0.5 * (D + D.transpose(-1, -2)))          # ascending
        flat = (lam / c[..., None]).reshape(-1, 3).cpu().numpy()
        if flat[:, 0].min() < self.min_eigenvalue:
            raise ValueError(f"D is too close to singular for the 3-D Bingham quadrature: got λ_min/c = "
                             f"{flat[:, 0].min():.3g}, valid >= 3/n_nodes² = {self.min_eigenvalue:.3g} "
                             f"(n_nodes={self.n_nodes}; raise n_nodes for more aligned states)")
        _, avg = self._fit(flat / flat.sum(1, keepdims=True))
        avg = torch.as_tensor(avg, dtype=D.dtype, device=D.device).reshape(*lam.shape[:-1], 9)
        frame = torch.zeros(*lam.shape[:-1], 3, 3, 3, 3, dtype=D.dtype, device=D.device)
        for i in range(3):
            frame[..., i, i, i, i] = avg[..., 3 + i]
        for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
            for a, b, e, f in [(i, i, j, j), (j, j, i, i), (i, j, i, j), (j, i, j, i), (i, j, j, i),
                               (j, i, i, j)]:
                frame[..., a, b, e, f] = avg[..., 6 + k]
        S = torch.einsum("...ia,...jb,...kc,...ld,...abcd->...ijkl", vec, vec, vec, vec, frame)
        return c[..., None, None, None, None] * S


CLOSURES: dict[str, type[Closure]] = {
    "quadratic": QuadraticClosure,
    "bingham2d": BinghamClosure2D,
    "bingham3d": BinghamClosure3D,
}


def make_closure(name: str, **kwargs: object) -> Closure:
    """A closure from :data:`CLOSURES` by name, with its constructor keyword arguments."""
    if name not in CLOSURES:
        raise ValueError(f"unknown closure {name!r}; valid names: {sorted(CLOSURES)}")
    return CLOSURES[name](**kwargs)
