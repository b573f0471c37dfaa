"""Learned closures of the second-moment equation: a 2-D eigenframe MLP and a 3-D e3nn network.

Both learn only what the second moment D leaves free. A fully symmetric fourth moment S splits into
harmonic parts (δ the identity, c = tr D, Q = D − cI/d the deviatoric part of D,
P(X, Y)_ijkl = X_ij Y_kl + X_ik Y_jl + X_il Y_jk from :func:`closures.pairings`):

    S = c/(d(d + 2)) P(δ, δ) + (P(δ, Q) + P(Q, δ))/(d + 4) + H,

where H is fully symmetric and traceless. The first two terms have the traces S_iikl = D_kl
(P(δ, δ)_iikl = (d + 2)δ_kl, (P(δ, Q) + P(Q, δ))_iikl = (d + 4)Q_kl) and H has none, so the trace
identity holds by construction for any H; the networks predict H only (2 numbers in 2-D, 9 in 3-D).

- ``LearnedClosure2D``: in 2-D, H is fixed by ⟨cos 4φ⟩ and ⟨sin 4φ⟩, with φ measured in D's
  eigenframe from the major axis (:func:`rebuild_fourth_moment_2d`). The frame is taken in closed
  form rather than from an eigen-solver: with q = Q₁₁ + iQ₁₂ = |q| e^{2iφ₀} (|q| = (λ₁ − λ₂)/2),
  e^{2iφ₀} = q/|q| is the rotation (det +1, so the frame handedness is fixed) to the major axis,
  free of the sign ambiguity of eigenvectors and differentiable wherever D is not isotropic. The
  inputs are invariants: m2 = (λ₁ − λ₂)/c (fed as 2·m2 − 1 ∈ [−1, 1]) and, with ``use_strain``,
  the deviatoric part of E in the eigenframe, e' = e·e^{−2iφ₀} with e = (E₁₁ − E₂₂)/2 + iE₁₂,
  divided by ``strain_scale``. The outputs are multiplied by m2, so that H → 0 (S isotropic) as D
  becomes isotropic whatever the weights. A reflection of (D, E) conjugates e' and must conjugate
  the output: ⟨cos 4φ⟩ is made even and ⟨sin 4φ⟩ odd in Im e' by averaging the network over
  (e', ē'). Without E, ⟨sin 4φ⟩ = 0 by this symmetry, and only ⟨cos 4φ⟩ is learned.
- ``LearnedClosure3D``: the inputs are irreps of e3nn (a constant 0e, Q/c as 2e and, with
  ``use_strain``, the deviatoric part of E / ``strain_scale`` as 2e). ``depth`` layers
  h ← Gate(FullyConnectedTensorProduct(h, x)) build polynomial equivariant features (0e, 2e, 4e)
  and the 4e output is a tensor product of Q/c with them, so H vanishes at isotropy by construction.
  All irreps are even, so the closure is O(3)-equivariant (reflections included).

Both closures are built in float64 (the data are float64): e3nn computes its Wigner 3j and
change-of-basis constants in the default dtype, so they are made under a float64 default and
keep ~1e-16 accuracy; ``.float()`` gives a float32 closure. Inputs are cast to the parameters'
dtype for the networks and outputs back to D's dtype. The 3j constants are buffers of the e3nn
modules (and in the state dict), so a float32 round trip (``.float().double()``, or loading a
float32 state dict) leaves them rounded: equivariance then holds to ~1e-8 instead of ~1e-15.
"""

from __future__ import annotations

import contextlib
import functools
from abc import abstractmethod
from collections.abc import Iterator

import torch
from e3nn import io, o3
from e3nn import nn as e3nn_nn
from torch import nn

from flowsci_domains.kinetic.closures import (
    CLOSURES,
    Closure,
    check_second_moment,
    check_strain,
    contract,
    pairings,
)

# --------------------------------------------------------------------------- helpers

def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_options(use_strain: object, strain_scale: object) -> tuple[bool, float]:
    if not isinstance(use_strain, bool):
        raise ValueError(f"use_strain must be a bool, got {use_strain!r}")
    if isinstance(strain_scale, bool) or not isinstance(strain_scale, (int, float)) or not strain_scale > 0 \
            or strain_scale == float("inf"):
        raise ValueError(f"strain_scale must be a finite number > 0, got {strain_scale!r}")
    return use_strain, float(strain_scale)


def _check_like(name: str, value: object, D: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype != D.dtype or tuple(value.shape) != shape:
        got = (type(value).__name__ if not isinstance(value, torch.Tensor)
               else f"{value.dtype} {tuple(value.shape)}")
        raise ValueError(f"{name} must be a tensor of D's dtype {D.dtype} and shape {shape}, got {got}")


def _symmetric(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (M + M.transpose(-1, -2))


def _deviatoric(M: torch.Tensor) -> torch.Tensor:
    """Symmetric traceless part of M: (..., d, d)."""
    M = _symmetric(M)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return M - M.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] * eye


def _isotropic_and_second(D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The part of S fixed by D: c/(d(d+2)) P(δ, δ) + (P(δ, Q) + P(Q, δ))/(d + 4). D: (..., d, d)."""
    d = D.shape[-1]
    eye = torch.eye(d, dtype=D.dtype, device=D.device).expand_as(D)
    Q = _deviatoric(D)
    return ((c / (d * (d + 2)))[..., None, None, None, None] * pairings(eye, eye)
            + (pairings(eye, Q) + pairings(Q, eye)) / (d + 4))


def _mass(D: torch.Tensor) -> torch.Tensor:
    return D.diagonal(dim1=-2, dim2=-1).sum(-1)


class StrainClosure(Closure):
    """A closure whose S may depend on E as well as D (``use_strain``): S(D, E), so S:E is not
    linear in E. Subclasses implement ``_fourth_moment(D, c, E)``, E None when ``use_strain`` is off."""

    use_strain: bool

    def _needs_strain(self, E: torch.Tensor | None) -> None:
        if self.use_strain and E is None:
            raise ValueError(f"{type(self).__name__}(use_strain=True) needs E: call closure(D, E) "
                             "or fourth_moment(D, E)")

    def fourth_moment(self, D: torch.Tensor, E: torch.Tensor | None = None) -> torch.Tensor:
        """S: D (..., d, d) and, with ``use_strain``, E (..., d, d) -> (..., d, d, d, d)."""
        c = check_second_moment(D, self.dims, self.tol)
        if E is not None:
            check_strain(E, D)
        return self._fourth_moment(D, c, E)

    def forward(self, D: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = check_second_moment(D, self.dims, self.tol)
        check_strain(E, D)
        S = self._fourth_moment(D, c, E)
        return contract(S, E), contract(S, D)

    @abstractmethod
    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor, E: torch.Tensor | None = None) -> torch.Tensor:
        """S from a validated D (..., d, d) with traces c (...) and E (..., d, d) or None."""


# --------------------------------------------------------------------------- 2-D

def _circle_harmonic_basis(dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """(2, 2, 2, 2, 2): Re and Im of w⊗w⊗w⊗w, w = (1, i); the traceless fully symmetric tensors
    with H₁₁₁₁ = 1 and H₁₁₁₂ = 1 respectively."""
    w = torch.tensor([1.0, 1.0j], dtype=torch.complex128)
    w4 = torch.einsum("i,j,k,l->ijkl", w, w, w, w)
    return torch.stack([w4.real, w4.imag]).to(dtype=dtype, device=device)


def _frame_2d(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c (...), |q| = (λ₁ − λ₂)/2 (...) and u = e^{2iφ₀} as (cos 2φ₀, sin 2φ₀): (..., 2), with
    u = 0 where D is isotropic (the frame is undefined there). Gradients stay finite at isotropy."""
    c = _mass(D)
    q = torch.stack([0.5 * (D[..., 0, 0] - D[..., 1, 1]), 0.5 * (D[..., 0, 1] + D[..., 1, 0])], -1)
    squared = (q * q).sum(-1)
    positive = squared > 0
    safe = torch.sqrt(torch.where(positive, squared, torch.ones_like(squared)))
    norm = torch.where(positive, safe, torch.zeros_like(squared))
    return c, norm, q / safe[..., None]


def _complex_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a₁ + ia₂)(b₁ + ib₂) for pairs a, b: (..., 2) -> (..., 2)."""
    return torch.stack([a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1],
                        a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]], -1)


def _rebuild_2d(D: torch.Tensor, c: torch.Tensor, unit: torch.Tensor, harmonic: torch.Tensor) -> torch.Tensor:
    """S from D, the frame ``unit`` of :func:`_frame_2d` and the eigenframe (⟨cos 4φ⟩, ⟨sin 4φ⟩):
    harmonic (..., 2). The 4th harmonic in the lab frame is e^{4iφ₀}(⟨cos 4φ⟩ + i⟨sin 4φ⟩)."""
    lab = _complex_product(_complex_product(unit, unit), harmonic)      # ⟨e^{4iφ}⟩ in the lab frame
    basis = _circle_harmonic_basis(D.dtype, D.device)
    H = torch.einsum("...a,aijkl->...ijkl", (c / 8)[..., None] * lab, basis)
    return _isotropic_and_second(D, c) + H


def rebuild_fourth_moment_2d(D: torch.Tensor, cos4: torch.Tensor, sin4: torch.Tensor) -> torch.Tensor:
    """The fully symmetric S with second moment D and, in D's eigenframe (angle φ from the major
    axis, det +1), the fourth harmonics ⟨cos 4φ⟩ = cos4 and ⟨sin 4φ⟩ = sin4 per unit mass.

    D: (..., 2, 2) symmetric with trace c > 0; cos4, sin4: (...). Returns S: (..., 2, 2, 2, 2), exact
    for any distribution with these moments. Where D is isotropic the frame is undefined and the
    fourth harmonic is taken as 0 (the isotropic S)."""
    c = check_second_moment(D, (2,), 1e-8)
    _check_like("cos4", cos4, D, tuple(D.shape[:-2]))
    _check_like("sin4", sin4, D, tuple(D.shape[:-2]))
    _, _, unit = _frame_2d(D)
    return _rebuild_2d(D, c, unit, torch.stack([cos4, sin4], -1))


class LearnedClosure2D(StrainClosure):
    """The 2-D eigenframe closure (module docstring): S(D) or, with ``use_strain``, S(D, E).

    ``depth`` tanh hidden layers of width ``hidden``. forward(D, E): D, E (..., 2, 2) ->
    (S:E, S:D), each (..., 2, 2); with ``use_strain`` S depends on E, so S:E is not linear in E.
    """

    dims = (2,)

    def __init__(self, hidden: int = 64, depth: int = 3, use_strain: bool = True, strain_scale: float = 1.0,
                 tol: float = 1e-8):
        super().__init__(tol)
        self.hidden, self.depth = _check_positive_int("hidden", hidden), _check_positive_int("depth", depth)
        self.use_strain, self.strain_scale = _check_options(use_strain, strain_scale)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear((3 if use_strain else 1) if i == 0 else hidden, hidden), nn.Tanh()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 2 if use_strain else 1)).double()

    def _harmonics(self, m2: torch.Tensor, strain: torch.Tensor | None) -> torch.Tensor:
        """Eigenframe (⟨cos 4φ⟩, ⟨sin 4φ⟩): m2 (...), strain e' (..., 2) or None -> (..., 2)."""
        dtype = self.net[0].weight.dtype
        if strain is None:
            cos4 = m2 * self.net((2 * m2 - 1)[..., None].to(dtype))[..., 0].to(m2.dtype)
            return torch.stack([cos4, torch.zeros_like(cos4)], -1)
        m2, strain = torch.broadcast_tensors(m2[..., None], strain / self.strain_scale)
        features = torch.stack([2 * m2[..., 0] - 1, strain[..., 0], strain[..., 1]], -1)
        mirrored = features * torch.tensor([1.0, 1.0, -1.0], dtype=features.dtype, device=features.device)
        out, out_mirrored = (self.net(x.to(dtype)).to(m2.dtype) for x in (features, mirrored))
        return m2 * 0.5 * torch.stack([out[..., 0] + out_mirrored[..., 0],
                                       out[..., 1] - out_mirrored[..., 1]], -1)

    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor, E: torch.Tensor | None = None) -> torch.Tensor:
        self._needs_strain(E)
        D = _symmetric(D)
        _, norm, unit = _frame_2d(D)
        strain = None
        if self.use_strain:
            e = torch.stack([0.5 * (E[..., 0, 0] - E[..., 1, 1]), 0.5 * (E[..., 0, 1] + E[..., 1, 0])], -1)
            strain = _complex_product(e, unit * torch.tensor([1.0, -1.0], dtype=unit.dtype,
                                                             device=unit.device))
        return _rebuild_2d(D, c, unit, self._harmonics(2 * norm / c, strain))


# --------------------------------------------------------------------------- 3-D

@contextlib.contextmanager
def _float64_default() -> Iterator[None]:
    """e3nn builds its constants (Wigner 3j, change of basis) in the default dtype: use float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@functools.lru_cache(maxsize=1)
def _cartesian_bases() -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal Cartesian bases (float64) of e3nn's irreps: the 2e part of a symmetric 3×3
    matrix, (5, 3, 3), and the 4e part of a fully symmetric 3×3×3×3 tensor, (9, 3, 3, 3, 3)."""
    with _float64_default():
        bases = []
        for formula, irrep in (("ij=ji", "2e"), ("ijkl=jikl=ikjl=ijlk", "4e")):
            tensor = io.CartesianTensor(formula)
            change = tensor.reduced_tensor_products().change_of_basis
            index = [str(ir) for _, ir in tensor].index(irrep)
            bases.append(change[tensor.slices()[index]].clone())
    return bases[0], bases[1]


def harmonic_basis_3d() -> torch.Tensor:
    """B: (9, 3, 3, 3, 3), float64: e3nn's 4e irrep as fully symmetric traceless Cartesian tensors,
    orthonormal (Σ_ijkl B_a B_b = δ_ab). A fully symmetric traceless H is Σ_a (H ⋮ B_a) B_a."""
    return _cartesian_bases()[1].clone()


def rebuild_fourth_moment_3d(D: torch.Tensor, harmonic: torch.Tensor) -> torch.Tensor:
    """The fully symmetric S with second moment D and traceless part c·Σ_a harmonic_a B_a, B from
    :func:`harmonic_basis_3d` (so harmonic_a = (S ⋮ B_a)/c for any S with these traces).

    D: (..., 3, 3) symmetric with trace c > 0; harmonic: (..., 9) per unit mass.
    Returns S: (..., 3, 3, 3, 3)."""
    c = check_second_moment(D, (3,), 1e-8)
    _check_like("harmonic", harmonic, D, (*D.shape[:-2], 9))
    basis = _cartesian_bases()[1].to(dtype=D.dtype, device=D.device)
    H = torch.einsum("...a,aijkl->...ijkl", c[..., None] * harmonic, basis)
    return _isotropic_and_second(_symmetric(D), c) + H


class LearnedClosure3D(StrainClosure):
    """The 3-D e3nn closure (module docstring): S(D) or, with ``use_strain``, S(D, E).

    ``depth`` gated tensor-product layers with ``hidden`` scalar channels and ``gated`` channels
    each of 2e and 4e. forward(D, E): D, E (..., 3, 3) -> (S:E, S:D), each (..., 3, 3).
    """

    dims = (3,)

    def __init__(self, hidden: int = 16, gated: int = 8, depth: int = 2, use_strain: bool = True,
                 strain_scale: float = 1.0, tol: float = 1e-8):
        super().__init__(tol)
        self.hidden, self.gated = _check_positive_int("hidden", hidden), _check_positive_int("gated", gated)
        self.depth = _check_positive_int("depth", depth)
        self.use_strain, self.strain_scale = _check_options(use_strain, strain_scale)
        irreps_in = o3.Irreps(f"1x0e + {2 if use_strain else 1}x2e")
        with _float64_default():
            self.products, self.gates = nn.ModuleList(), nn.ModuleList()
            features = irreps_in
            for _ in range(depth):
                gate = e3nn_nn.Gate(f"{hidden}x0e", [torch.nn.functional.silu], f"{2 * gated}x0e",
                                    [torch.sigmoid], f"{gated}x2e + {gated}x4e")
                self.products.append(o3.FullyConnectedTensorProduct(features, irreps_in, gate.irreps_in))
                self.gates.append(gate)
                features = gate.irreps_out
            self.readout = o3.FullyConnectedTensorProduct("1x2e", features, "1x4e")
        basis2, basis4 = _cartesian_bases()
        self.register_buffer("basis2", basis2.clone(), persistent=False)
        self.register_buffer("basis4", basis4.clone(), persistent=False)

    def _fourth_moment(self, D: torch.Tensor, c: torch.Tensor, E: torch.Tensor | None = None) -> torch.Tensor:
        self._needs_strain(E)
        D = _symmetric(D)
        dtype = self.readout.weight.dtype
        shape = D.shape[:-2] if E is None else torch.broadcast_shapes(D.shape[:-2], E.shape[:-2])
        basis2 = self.basis2.to(D.dtype)
        inputs = [torch.einsum("aij,...ij->...a", basis2, _deviatoric(D) / c[..., None, None])]
        if self.use_strain:
            inputs.append(torch.einsum("aij,...ij->...a", basis2, _deviatoric(E)) / self.strain_scale)
        inputs = [x.expand(*shape, 5).reshape(-1, 5).to(dtype) for x in inputs]
        x = torch.cat([torch.ones_like(inputs[0][:, :1]), *inputs], -1)
        h = x
        for product, gate in zip(self.products, self.gates):
            h = gate(product(h, x))
        harmonic = self.readout(inputs[0], h).reshape(*shape, 9).to(D.dtype)
        c = c.expand(shape)
        H = torch.einsum("...a,aijkl->...ijkl", c[..., None] * harmonic, self.basis4.to(D.dtype))
        return _isotropic_and_second(D.expand(*shape, 3, 3), c) + H


CLOSURES["learned2d"] = LearnedClosure2D
CLOSURES["learned3d"] = LearnedClosure3D
