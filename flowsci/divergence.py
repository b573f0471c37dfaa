"""The divergence of a velocity field by autograd: the exact trace of its Jacobian, or
Hutchinson's unbiased estimate mean_p eps_p^T (dv/dx) eps_p with random probes eps_p
(E[eps eps^T] = I).

A leaf module (it imports only torch): :mod:`flowsci.likelihood` and the Riemannian
divergence of :meth:`flowsci.spaces.Space.divergence` both build on it.
"""

from __future__ import annotations

import torch

PROBES = ("rademacher", "gaussian")


def velocity_divergence(v: torch.Tensor, x: torch.Tensor, probes: torch.Tensor | None, *,
                        create_graph: bool) -> torch.Tensor:
    """div_x v per sample: v, x: (B, *D) with v computed from x; probes: (P, B, *D) for the
    Hutchinson estimate mean_p eps_p^T (dv/dx) eps_p, or None for the exact trace (one
    vector-Jacobian product per dimension of D: cheap for small D, D backward passes for large D).
    Each row of v must depend only on its own row of x. Returns (B,)."""
    batch = x.shape[0]
    if not v.requires_grad:  # v does not depend on x (nor on anything differentiable)
        return torch.zeros(batch, dtype=x.dtype, device=x.device)
    if probes is None:
        v_flat = v.reshape(batch, -1)
        dims = v_flat.shape[1]
        terms = []
        for i in range(dims):
            (g,) = torch.autograd.grad(v_flat[:, i].sum(), x, retain_graph=create_graph or i < dims - 1,
                                       create_graph=create_graph, allow_unused=True)
            terms.append(torch.zeros(batch, dtype=x.dtype, device=x.device) if g is None
                         else g.reshape(batch, -1)[:, i])
        return torch.stack(terms, dim=1).sum(dim=1)
    total = torch.zeros(batch, dtype=x.dtype, device=x.device)
    for p, eps in enumerate(probes):
        (g,) = torch.autograd.grad((v * eps).sum(), x, retain_graph=create_graph or p < len(probes) - 1,
                                   create_graph=create_graph, allow_unused=True)
        if g is not None:
            total = total + (g * eps).reshape(batch, -1).sum(dim=1)
    return total / len(probes)


def draw_probes(n_probes: int, like: torch.Tensor, probe: str,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_probes, B, *D) Hutchinson probes with E[eps eps^T] = I: random signs ("rademacher")
    or standard normal entries ("gaussian")."""
    shape = (n_probes, *like.shape)
    if probe == "rademacher":
        signs = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return (2 * signs - 1).to(like.dtype)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
