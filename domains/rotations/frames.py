"""Backbone residues as rigid frames (SE(3)^N): N, CA, C <-> (translation, rotation).

Construction (AlphaFold2 Alg. 21 / FrameDiff / FrameFlow): the translation is CA, and the
rotation R = [e1, e2, e3] (columns) is the Gram-Schmidt basis of the residue with
e1 = normalise(C - CA), e2 = normalise(u2 - (e1·u2) e1) for u2 = N - CA, e3 = e1 × e2.
An atom at local coordinates p sits at CA + R p. In these local coordinates an ideal residue
(Engh & Huber 1991: N-CA 1.458 Å, CA-C 1.525 Å, N-CA-C 111.2°) has
C = (1.525, 0, 0) and N = 1.458 (cos 111.2°, sin 111.2°, 0) = (-0.5272, 1.3593, 0):
C - CA lies along e1 and N - CA in the e1-e2 plane on the +e2 side, by construction.
"""

from __future__ import annotations

import math

import torch

N_CA_LENGTH = 1.458
CA_C_LENGTH = 1.525
N_CA_C_ANGLE = 111.2
IDEAL_N_LOCAL = (N_CA_LENGTH * math.cos(math.radians(N_CA_C_ANGLE)),
                 N_CA_LENGTH * math.sin(math.radians(N_CA_C_ANGLE)), 0.0)
IDEAL_C_LOCAL = (CA_C_LENGTH, 0.0, 0.0)
_EPS = 1e-12


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / (v * v).sum(-1, keepdim=True).clamp_min(_EPS).sqrt()


def frames_from_backbone(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """coords (..., L, 3, 3) atoms N, CA, C -> translations (..., L, 3) = CA and
    rotations (..., L, 3, 3) with columns e1, e2, e3 (proper: Rᵀ R = I, det R = +1)."""
    if coords.dim() < 3 or coords.shape[-2:] != (3, 3):
        raise ValueError("coords must have shape (..., L, 3, 3) for atoms N, CA, C, "
                         f"got {tuple(coords.shape)}")
    n, ca, c = coords.unbind(-2)
    e1 = _normalise(c - ca)
    u2 = n - ca
    e2 = _normalise(u2 - (e1 * u2).sum(-1, keepdim=True) * e1)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    return ca, torch.stack([e1, e2, e3], dim=-1)


def backbone_from_frames(translations: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Ideal N, CA, C placed in each frame: translations (..., L, 3), rotations (..., L, 3, 3)
    -> (..., L, 3, 3) with CA = translation, N = t + R n_local, C = t + R c_local."""
    shapes_match = translations.shape[:-1] == rotations.shape[:-2]
    if translations.shape[-1:] != (3,) or rotations.shape[-2:] != (3, 3) or not shapes_match:
        raise ValueError("translations must be (..., L, 3) and rotations (..., L, 3, 3) with the same "
                         f"leading dims, got {tuple(translations.shape)} and {tuple(rotations.shape)}")
    local = translations.new_tensor([IDEAL_N_LOCAL, IDEAL_C_LOCAL])
    n, c = (translations + torch.einsum("...ij,j->...i", rotations, p) for p in local)
    return torch.stack([n, translations, c], dim=-2)


def center(translations: torch.Tensor) -> torch.Tensor:
    """translations (..., L, 3) minus their centroid over the L residues (CA centre of mass zero)."""
    if translations.dim() < 2 or translations.shape[-1] != 3:
        raise ValueError(f"translations must have shape (..., L, 3), got {tuple(translations.shape)}")
    return translations - translations.mean(dim=-2, keepdim=True)
