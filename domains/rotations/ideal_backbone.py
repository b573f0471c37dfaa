"""Ideal alpha-helix / beta-strand backbones (N, CA, C) from internal geometry, for fast tests.

Bond lengths and angles are the Engh & Huber (1991) values: N-CA 1.458, CA-C 1.525, C-N 1.329 Å;
N-CA-C 111.2°, CA-C-N 116.2°, C-N-CA 121.7°. Torsions: alpha helix (phi, psi) = (-57°, -47°),
beta strand (-120°, +130°), omega = 180° (trans peptide). Atoms are placed one after another
by the Natural Extension Reference Frame (NeRF) rule: atom D from the three previous atoms A, B, C,
the bond length |CD|, the angle B-C-D and the dihedral A-B-C-D.
"""

from __future__ import annotations

import numpy as np

N_CA = 1.458
CA_C = 1.525
C_N = 1.329
ANGLE_N_CA_C = 111.2
ANGLE_CA_C_N = 116.2
ANGLE_C_N_CA = 121.7
OMEGA = 180.0
TORSIONS = {"helix": (-57.0, -47.0), "strand": (-120.0, 130.0)}
KINDS = ("helix", "strand", "mixed")


def place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float,
               torsion: float) -> np.ndarray:
    """NeRF: the atom D with |CD| = bond, angle B-C-D = angle and dihedral A-B-C-D = torsion
    (degrees; IUPAC sign convention). a, b, c: (3,) -> (3,)."""
    theta, phi = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    local = np.array([-bond * np.cos(theta), bond * np.sin(theta) * np.cos(phi),
                      bond * np.sin(theta) * np.sin(phi)])
    basis = np.stack([bc, np.cross(normal, bc), normal], axis=-1)
    return c + basis @ local


def _torsions(length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(length, 2) phi, psi in degrees; "mixed" alternates helix and strand runs of 4-12 residues."""
    if kind != "mixed":
        return np.tile(TORSIONS[kind], (length, 1))
    runs, current = [], "helix" if rng.random() < 0.5 else "strand"
    while sum(len(run) for run in runs) < length:
        runs.append(np.tile(TORSIONS[current], (int(rng.integers(4, 13)), 1)))
        current = "strand" if current == "helix" else "helix"
    return np.concatenate(runs)[:length]


def ideal_backbone(length: int, kind: str = "helix", seed: int | np.random.Generator | None = None,
                   noise: float = 0.0) -> np.ndarray:
    """An ideal backbone, (length, 3, 3) float64 in Å, atoms N, CA, C.

    kind: "helix", "strand" or "mixed" (alternating helix/strand runs, random lengths from seed).
    noise: standard deviation in degrees of Gaussian noise added to every phi and psi (bond
    lengths and angles stay ideal). The first N is at the origin and the first CA on +x.
    """
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (degrees), got {noise}")
    rng = np.random.default_rng(seed)
    torsions = _torsions(length, kind, rng) + noise * rng.standard_normal((length, 2))
    theta = np.radians(ANGLE_N_CA_C)
    atoms = [np.zeros(3), np.array([N_CA, 0.0, 0.0]),
             np.array([N_CA - CA_C * np.cos(theta), CA_C * np.sin(theta), 0.0])]
    for i in range(1, length):
        psi_prev, phi = torsions[i - 1, 1], torsions[i, 0]
        atoms.append(place_atom(atoms[-3], atoms[-2], atoms[-1], C_N, ANGLE_CA_C_N, psi_prev))
        atoms.append(place_atom(atoms[-3], atoms[-2], atoms[-1], N_CA, ANGLE_C_N_CA, OMEGA))
        atoms.append(place_atom(atoms[-3], atoms[-2], atoms[-1], CA_C, ANGLE_N_CA_C, phi))
    return np.stack(atoms).reshape(length, 3, 3)
