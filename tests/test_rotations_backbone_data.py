"""Tests of the protein-backbone data layer of the rotations domain: the ideal helix/strand
generator, residue frames, CA-trace metrics, the gemmi structure reader and the extraction of
the MDAnalysisTests DSSP structures (from a fake sdist and a fake pip: no network)."""

from __future__ import annotations

import gzip
import io
import itertools
import sys
import tarfile
from pathlib import Path

import gemmi
import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.spatial.transform import Rotation

from flowsci_domains.rotations.backbone_metrics import (
    backbone_report,
    bond_validity,
    ca_ca_distances,
    clash_fraction,
    has_clash,
    radius_of_gyration,
)
from flowsci_domains.rotations.frames import backbone_from_frames, center, frames_from_backbone
from flowsci_domains.rotations.ideal_backbone import ideal_backbone
from flowsci_domains.rotations.pdb_source import (
    Backbone,
    extract_dssp_structures,
    fetch_mdanalysis_dssp,
    read_backbones,
)

# First 40 residues (N, CA, C) of PDB entry 3K7P chain A, as shipped in MDAnalysisTests
# (data/dssp/3k7pA.pdb.gz); wwPDB coordinates are CC0.
REAL_FRAGMENT_3K7P = """\
ATOM      1  N   MET A   1      13.881  54.675  18.523
ATOM      2  CA  MET A   1      13.094  53.532  17.986
ATOM      3  C   MET A   1      13.873  52.724  16.942
ATOM     12  N   THR A   2      15.156  53.044  16.771
ATOM     13  CA  THR A   2      16.024  52.269  15.881
ATOM     14  C   THR A   2      16.470  50.979  16.573
ATOM     21  N   ARG A   3      16.994  50.034  15.791
ATOM     22  CA  ARG A   3      17.356  48.711  16.301
ATOM     23  C   ARG A   3      18.876  48.518  16.236
ATOM     38  N   ARG A   4      19.500  48.323  17.397
ATOM     39  CA  ARG A   4      20.957  48.180  17.481
ATOM     40  C   ARG A   4      21.421  46.761  17.142
ATOM     55  N   VAL A   5      22.526  46.672  16.405
ATOM     56  CA  VAL A   5      23.061  45.400  15.920
ATOM     57  C   VAL A   5      24.561  45.326  16.234
ATOM     64  N   ALA A   6      24.928  44.512  17.222
ATOM     65  CA  ALA A   6      26.335  44.343  17.601
ATOM     66  C   ALA A   6      27.065  43.417  16.631
ATOM     69  N   ILE A   7      28.294  43.775  16.272
ATOM     70  CA  ILE A   7      29.081  43.036  15.283
ATOM     71  C   ILE A   7      30.408  42.613  15.906
ATOM     80  N   GLY A   8      30.752  41.332  15.780
ATOM     81  CA  GLY A   8      32.049  40.828  16.229
ATOM     82  C   GLY A   8      32.663  39.891  15.205
ATOM     84  N   THR A   9      33.993  39.834  15.176
ATOM     85  CA  THR A   9      34.723  38.941  14.270
ATOM     86  C   THR A   9      35.904  38.275  14.977
ATOM     93  N   ASP A  10      36.519  37.310  14.296
ATOM     94  CA  ASP A  10      37.846  36.829  14.660
ATOM     95  C   ASP A  10      38.860  37.560  13.773
ATOM    104  N   HIS A  11      40.089  37.052  13.713
ATOM    105  CA  HIS A  11      41.150  37.715  12.943
ATOM    106  C   HIS A  11      40.989  37.730  11.404
ATOM    119  N   PRO A  12      40.751  36.561  10.763
ATOM    120  CA  PRO A  12      40.566  36.607   9.306
ATOM    121  C   PRO A  12      39.359  37.436   8.858
ATOM    128  N   ALA A  13      38.250  37.346   9.593
ATOM    129  CA  ALA A  13      37.032  38.079   9.242
ATOM    130  C   ALA A  13      37.131  39.583   9.516
ATOM    133  N   PHE A  14      38.181  40.000  10.220
ATOM    134  CA  PHE A  14      38.439  41.427  10.422
ATOM    135  C   PHE A  14      38.574  42.161   9.082
ATOM    150  N   ALA A  15      39.114  41.467   8.081
ATOM    151  CA  ALA A  15      39.276  42.012   6.730
ATOM    152  C   ALA A  15      37.957  42.461   6.098
ATOM    155  N   ILE A  16      36.844  41.907   6.578
ATOM    156  CA  ILE A  16      35.526  42.279   6.062
ATOM    157  C   ILE A  16      34.626  42.989   7.084
ATOM    166  N   HIS A  17      35.207  43.489   8.175
ATOM    167  CA  HIS A  17      34.396  44.127   9.218
ATOM    168  C   HIS A  17      33.681  45.390   8.723
ATOM    181  N   GLU A  18      34.323  46.131   7.819
ATOM    182  CA  GLU A  18      33.701  47.297   7.191
ATOM    183  C   GLU A  18      32.533  46.882   6.287
ATOM    194  N   ASN A  19      32.682  45.729   5.625
ATOM    195  CA  ASN A  19      31.598  45.106   4.856
ATOM    196  C   ASN A  19      30.390  44.853   5.749
ATOM    205  N   LEU A  20      30.635  44.209   6.892
ATOM    206  CA  LEU A  20      29.571  43.838   7.822
ATOM    207  C   LEU A  20      28.787  45.055   8.315
ATOM    216  N   ILE A  21      29.510  46.122   8.653
ATOM    217  CA  ILE A  21      28.906  47.390   9.076
ATOM    218  C   ILE A  21      27.993  47.967   7.983
ATOM    227  N   LEU A  22      28.494  47.980   6.748
ATOM    228  CA  LEU A  22      27.722  48.443   5.600
ATOM    229  C   LEU A  22      26.461  47.609   5.361
ATOM    238  N   TYR A  23      26.594  46.282   5.451
ATOM    239  CA  TYR A  23      25.474  45.380   5.169
ATOM    240  C   TYR A  23      24.329  45.565   6.163
ATOM    257  N   VAL A  24      24.670  45.786   7.436
ATOM    258  CA  VAL A  24      23.677  46.090   8.467
ATOM    259  C   VAL A  24      22.926  47.378   8.095
ATOM    266  N   LYS A  25      23.674  48.397   7.678
ATOM    267  CA  LYS A  25      23.078  49.663   7.244
ATOM    268  C   LYS A  25      22.186  49.491   6.010
ATOM    279  N   GLU A  26      22.577  48.576   5.123
ATOM    280  CA  GLU A  26      21.816  48.291   3.904
ATOM    281  C   GLU A  26      20.472  47.615   4.177
ATOM    292  N   ALA A  27      20.336  46.994   5.352
ATOM    293  CA  ALA A  27      19.077  46.366   5.755
ATOM    294  C   ALA A  27      17.975  47.393   6.014
ATOM    297  N   GLY A  28      18.377  48.628   6.307
ATOM    298  CA  GLY A  28      17.433  49.714   6.526
ATOM    299  C   GLY A  28      17.988  50.769   7.458
ATOM    301  N   ASP A  29      17.455  51.983   7.341
ATOM    302  CA  ASP A  29      17.881  53.107   8.176
ATOM    303  C   ASP A  29      17.616  52.879   9.666
ATOM    312  N   GLU A  30      16.690  51.973   9.974
ATOM    313  CA  GLU A  30      16.348  51.652  11.361
ATOM    314  C   GLU A  30      17.389  50.771  12.057
ATOM    325  N   PHE A  31      18.299  50.175  11.288
ATOM    326  CA  PHE A  31      19.316  49.295  11.866
ATOM    327  C   PHE A  31      20.623  50.038  12.083
ATOM    342  N   VAL A  32      21.072  50.068  13.335
ATOM    343  CA  VAL A  32      22.292  50.782  13.707
ATOM    344  C   VAL A  32      23.390  49.793  14.084
ATOM    351  N   PRO A  33      24.472  49.740  13.283
ATOM    352  CA  PRO A  33      25.572  48.839  13.616
ATOM    353  C   PRO A  33      26.396  49.355  14.789
ATOM    360  N   VAL A  34      26.771  48.437  15.675
ATOM    361  CA  VAL A  34      27.617  48.731  16.822
ATOM    362  C   VAL A  34      28.794  47.769  16.711
ATOM    369  N   TYR A  35      29.933  48.264  16.239
ATOM    370  CA  TYR A  35      31.078  47.390  16.008
ATOM    371  C   TYR A  35      31.846  47.081  17.293
ATOM    388  N   CYS A  36      31.948  45.791  17.615
ATOM    389  CA  CYS A  36      32.583  45.330  18.853
ATOM    390  C   CYS A  36      33.649  44.266  18.607
ATOM    395  N   GLY A  37      34.090  44.146  17.359
ATOM    396  CA  GLY A  37      35.110  43.173  16.997
ATOM    397  C   GLY A  37      36.505  43.711  17.246
ATOM    399  N   PRO A  38      37.533  42.971  16.792
ATOM    400  CA  PRO A  38      38.911  43.423  16.955
ATOM    401  C   PRO A  38      39.148  44.689  16.140
ATOM    408  N   LYS A  39      39.979  45.586  16.662
ATOM    409  CA  LYS A  39      40.289  46.842  15.980
ATOM    410  C   LYS A  39      41.478  46.692  15.032
ATOM    421  N   THR A  40      42.154  45.549  15.118
ATOM    422  CA  THR A  40      43.331  45.267  14.299
ATOM    423  C   THR A  40      43.283  43.844  13.737
"""

THREE_TO_ONE = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
                "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
                "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V"}


def pdb_line(serial: int, name: str, resname: str, resnum: int, xyz, chain: str = "A", altloc: str = " ",
             record: str = "ATOM", occupancy: float = 1.0) -> str:
    """One fixed-column PDB ATOM/HETATM record (columns of the PDB format v3.3)."""
    x, y, z = (float(v) for v in xyz)
    return (f"{record:<6}{serial:>5}  {name:<3}{altloc}{resname:>3} {chain}{resnum:>4}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{occupancy:6.2f}{20.0:6.2f}          {name[0]:>2}")


def backbone_pdb(coords: np.ndarray, resname: str = "ALA", skip: tuple[tuple[int, str], ...] = ()) -> str:
    """PDB text of an (L, 3, 3) N, CA, C backbone, residues numbered from 1; skip: (index, atom) left out."""
    lines, serial = [], 1
    for i, residue in enumerate(coords):
        for atom, xyz in zip(("N", "CA", "C"), residue):
            if (i, atom) not in skip:
                lines.append(pdb_line(serial, atom, resname, i + 1, xyz))
                serial += 1
    return "\n".join(lines + ["END", ""])


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> float:
    """IUPAC dihedral angle in degrees (Praxeolitic formula)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0 @ b1 * b1, b2 - b2 @ b1 * b1
    return float(np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w)))


def angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = a - b, c - b
    return float(np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v))))


def random_frames(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rotations = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())
    translations = torch.from_numpy(np.random.default_rng(seed).normal(scale=10.0, size=(n, 3)))
    return translations, rotations


# ---------------------------------------------------------------- ideal backbones


@pytest.mark.parametrize("kind", ["helix", "strand", "mixed"])
def test_ideal_backbone_has_the_requested_internal_geometry(kind: str) -> None:
    coords = ideal_backbone(30, kind, seed=3)
    atoms = coords.reshape(-1, 3)
    bonds = np.linalg.norm(np.diff(atoms, axis=0), axis=-1)
    np.testing.assert_allclose(bonds, np.tile([1.458, 1.525, 1.329], 30)[:-1], atol=1e-9)
    angles = [angle(*atoms[k:k + 3]) for k in range(len(atoms) - 2)]
    np.testing.assert_allclose(angles, np.tile([111.2, 116.2, 121.7], 30)[:len(angles)], atol=1e-7)
    phi = np.array([dihedral(coords[i - 1, 2], *coords[i]) for i in range(1, 30)])
    psi = np.array([dihedral(*coords[i], coords[i + 1, 0]) for i in range(29)])
    omega = np.array([dihedral(coords[i, 1], coords[i, 2], *coords[i + 1, :2]) for i in range(29)])
    np.testing.assert_allclose(np.abs(omega), 180.0, atol=1e-7)
    pairs = {"helix": {(-57.0, -47.0)}, "strand": {(-120.0, 130.0)},
             "mixed": {(-57.0, -47.0), (-120.0, 130.0)}}[kind]
    observed = {(round(a, 6), round(b, 6)) for a, b in zip(phi, psi[1:])}
    assert observed == pairs


def test_ideal_helix_matches_the_alpha_helix_of_the_literature() -> None:
    coords = ideal_backbone(24, "helix")
    ca = coords[:, 1]
    np.testing.assert_allclose(np.linalg.norm(ca[1:] - ca[:-1], axis=-1), 3.80, atol=0.01)
    # screw motion between consecutive residue frames (scipy gives its angle and axis)
    translations, rotations = frames_from_backbone(torch.from_numpy(coords))
    relative = Rotation.from_matrix((rotations[10].T @ rotations[11]).numpy()).as_rotvec()
    turn = np.linalg.norm(relative)
    axis = rotations[10].numpy() @ relative / turn
    assert 360.0 / np.degrees(turn) == pytest.approx(3.6, abs=0.05)  # residues per turn
    assert abs((ca[11] - ca[10]) @ axis) == pytest.approx(1.5, abs=0.1)  # rise per residue, Å
    assert np.linalg.norm(ca[14] - ca[10]) == pytest.approx(6.2, abs=0.3)


def test_ideal_strand_is_extended() -> None:
    ca = ideal_backbone(20, "strand")[:, 1]
    d2 = np.linalg.norm(ca[2:] - ca[:-2], axis=-1)
    assert np.all((d2 > 6.4) & (d2 < 6.8))


def test_ideal_backbone_seed_noise_and_bad_arguments() -> None:
    np.testing.assert_array_equal(ideal_backbone(40, "mixed", seed=5, noise=10.0),
                                  ideal_backbone(40, "mixed", seed=5, noise=10.0))
    noisy = ideal_backbone(40, "helix", seed=1, noise=10.0)
    assert not np.allclose(noisy, ideal_backbone(40, "helix"))
    np.testing.assert_allclose(np.linalg.norm(noisy[:, 1] - noisy[:, 0], axis=-1), 1.458, atol=1e-9)
    assert ideal_backbone(1).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="kind"):
        ideal_backbone(10, "coil")
    with pytest.raises(ValueError, match="length"):
        ideal_backbone(0)
    with pytest.raises(ValueError, match="noise"):
        ideal_backbone(10, noise=-1.0)


# ---------------------------------------------------------------- frames


def noisy_backbone(length: int, seed: int) -> torch.Tensor:
    coords = ideal_backbone(length, "mixed", seed=seed, noise=20.0)
    return torch.from_numpy(coords + np.random.default_rng(seed).normal(scale=0.1, size=coords.shape))


def test_frames_are_proper_rotations_centred_on_ca() -> None:
    coords = noisy_backbone(50, seed=0).reshape(2, 25, 3, 3)
    translations, rotations = frames_from_backbone(coords)
    assert translations.shape == (2, 25, 3) and rotations.shape == (2, 25, 3, 3)
    torch.testing.assert_close(translations, coords[..., 1, :])
    eye = torch.eye(3, dtype=torch.float64).expand_as(rotations)
    torch.testing.assert_close(rotations.transpose(-1, -2) @ rotations, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(2, 25, dtype=torch.float64))
    # C - CA along e1, N - CA in the e1-e2 plane on the +e2 side
    local_c = torch.einsum("...ji,...j->...i", rotations, coords[..., 2, :] - coords[..., 1, :])
    local_n = torch.einsum("...ji,...j->...i", rotations, coords[..., 0, :] - coords[..., 1, :])
    assert local_c[..., 1:].abs().max() < 1e-12 and (local_c[..., 0] > 0).all()
    assert local_n[..., 2].abs().max() < 1e-12 and (local_n[..., 1] > 0).all()


def test_frames_are_equivariant_under_rigid_motions() -> None:
    coords = noisy_backbone(30, seed=1)
    q = torch.from_numpy(Rotation.random(random_state=7).as_matrix())
    shift = torch.tensor([3.0, -20.0, 7.5], dtype=torch.float64)
    translations, rotations = frames_from_backbone(coords)
    moved_t, moved_r = frames_from_backbone(coords @ q.T + shift)
    torch.testing.assert_close(moved_t, translations @ q.T + shift)
    torch.testing.assert_close(moved_r, q @ rotations)


def test_backbone_from_frames_round_trip_and_ideal_geometry() -> None:
    translations, rotations = random_frames(64, seed=2)
    coords = backbone_from_frames(translations, rotations)
    back_t, back_r = frames_from_backbone(coords)
    torch.testing.assert_close(back_t, translations, atol=1e-12, rtol=0)
    torch.testing.assert_close(back_r, rotations, atol=1e-12, rtol=0)
    n, ca, c = coords.unbind(-2)
    torch.testing.assert_close((n - ca).norm(dim=-1), torch.full((64,), 1.458, dtype=torch.float64))
    torch.testing.assert_close((c - ca).norm(dim=-1), torch.full((64,), 1.525, dtype=torch.float64))
    angles = [angle(*atoms) for atoms in coords.numpy()]
    np.testing.assert_allclose(angles, 111.2, atol=1e-9)
    # local coordinates agree with AlphaFold2's rigid-group values N (-0.525, 1.363, 0), C (1.526, 0, 0)
    ideal = backbone_from_frames(torch.zeros(1, 3), torch.eye(3)[None])[0]
    torch.testing.assert_close(ideal[[0, 2]], torch.tensor([[-0.525, 1.363, 0.0], [1.526, 0.0, 0.0]]),
                               atol=5e-3, rtol=0)


def test_ideal_frames_rebuild_an_ideal_backbone_exactly() -> None:
    coords = torch.from_numpy(ideal_backbone(40, "mixed", seed=4, noise=15.0))
    torch.testing.assert_close(backbone_from_frames(*frames_from_backbone(coords)), coords, atol=1e-10,
                               rtol=0)


def test_center_removes_the_centroid_and_keeps_distances() -> None:
    translations = torch.randn(3, 17, 3, dtype=torch.float64) * 5 + 40
    centred = center(translations)
    torch.testing.assert_close(centred.mean(dim=-2), torch.zeros(3, 3, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(torch.cdist(centred, centred), torch.cdist(translations, translations))


def test_frames_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="coords"):
        frames_from_backbone(torch.zeros(5, 4, 3))
    with pytest.raises(ValueError, match="rotations"):
        backbone_from_frames(torch.zeros(5, 3), torch.zeros(4, 3, 3))
    with pytest.raises(ValueError, match="translations"):
        center(torch.zeros(5, 2))


# ---------------------------------------------------------------- metrics


def test_ca_ca_distances_of_an_ideal_chain_match_the_planar_peptide() -> None:
    # trans peptide CA(i)-C-N-CA(i+1) is planar: build it in 2-D from bond lengths and angles
    turn_c, turn_n = np.radians(180.0 - 116.2), np.radians(180.0 - 121.7)
    heading = 0.0
    point = np.zeros(2)
    for length, bend in ((1.525, turn_c), (1.329, -turn_n), (1.458, 0.0)):
        point = point + length * np.array([np.cos(heading), np.sin(heading)])
        heading += bend
    expected = np.linalg.norm(point)
    ca = torch.from_numpy(ideal_backbone(12, "mixed", seed=0)[:, 1])
    distances = ca_ca_distances(ca[None].expand(2, 12, 3))
    assert distances.shape == (2, 11)
    torch.testing.assert_close(distances, torch.full((2, 11), expected, dtype=torch.float64))
    assert expected == pytest.approx(3.80, abs=0.01)


def test_bond_validity_counts_bonds_within_tolerance() -> None:
    steps = np.array([3.8, 3.51, 4.09, 4.11, 3.0])  # |d - 3.8| = 0, 0.29, 0.29, 0.31, 0.8
    ca = torch.zeros(6, 3, dtype=torch.float64)
    ca[1:, 0] = torch.from_numpy(np.cumsum(steps))
    stats = bond_validity(ca, tolerance=0.3)
    assert stats["ca_ca_deviation"] == pytest.approx(np.mean(np.abs(steps - 3.8)))
    assert stats["ca_ca_valid_fraction"] == pytest.approx(3 / 5)
    assert stats["ca_ca_mean"] == pytest.approx(steps.mean())
    assert stats["ca_ca_std"] == pytest.approx(steps.std())
    with pytest.raises(ValueError, match="tolerance"):
        bond_validity(ca, tolerance=0.0)


@pytest.mark.parametrize("min_separation", [1, 3, 5])
def test_clash_fraction_matches_a_brute_force_count(min_separation: int) -> None:
    rng = np.random.default_rng(min_separation)
    points = rng.uniform(0.0, 9.0, size=(4, 15, 3))  # dense random clouds: many pairs closer than 3 Å
    fractions = clash_fraction(torch.from_numpy(points), threshold=3.0, min_separation=min_separation)
    flags = has_clash(torch.from_numpy(points), threshold=3.0, min_separation=min_separation)
    for cloud, fraction, flag in zip(points, fractions, flags):
        distances = squareform(pdist(cloud))
        pairs = [(i, j) for i, j in itertools.combinations(range(15), 2) if j - i >= min_separation]
        clashes = sum(distances[i, j] < 3.0 for i, j in pairs)
        assert fraction.item() == pytest.approx(clashes / len(pairs))
        assert bool(flag) == (clashes > 0)
    assert 0 < fractions.min() and fractions.max() < 1


def test_ideal_secondary_structure_has_no_clash_but_a_collapsed_one_does() -> None:
    helix = torch.from_numpy(ideal_backbone(30, "helix")[:, 1])
    assert clash_fraction(helix).item() == 0.0 and not has_clash(helix)
    collapsed = helix * 0.4
    assert has_clash(collapsed) and clash_fraction(collapsed).item() > 0.05


def test_radius_of_gyration_closed_forms() -> None:
    angles = torch.linspace(0, 2 * torch.pi, 13, dtype=torch.float64)[:-1]
    ring = torch.stack([7.0 * angles.cos(), 7.0 * angles.sin(),
                        torch.zeros(12, dtype=torch.float64)], -1) + 5.0
    cube = 2.0 * torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64)
    assert radius_of_gyration(ring).item() == pytest.approx(7.0)
    assert radius_of_gyration(cube).item() == pytest.approx(2.0 * 3 ** 0.5)
    assert radius_of_gyration(torch.stack([ring[:8], cube])).shape == (2,)


def test_backbone_report_summarises_batches_and_lists() -> None:
    helices = torch.from_numpy(np.stack([ideal_backbone(40, "helix", seed=s, noise=3.0)[:, 1]
                                         for s in range(3)]))
    report = backbone_report(helices)
    assert report["n_structures"] == 3.0
    assert report["ca_ca_deviation"] < 0.01 and report["ca_ca_valid_fraction"] == 1.0
    assert report["clash_fraction"] == 0.0 and report["clash_rate"] == 0.0
    assert report["rg_mean"] == pytest.approx(radius_of_gyration(helices).mean().item())
    mixed = backbone_report([helices[0], helices[1, :25] * 0.4])  # a list of different lengths
    assert mixed["clash_rate"] == 0.5 and mixed["ca_ca_valid_fraction"] == 0.5
    with pytest.raises(ValueError, match="at least one"):
        backbone_report([])


# ---------------------------------------------------------------- reading structures


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_real_fragment_reads_with_its_sequence_and_is_a_valid_backbone(tmp_path: Path) -> None:
    [backbone] = read_backbones(write(tmp_path / "3k7pA.pdb.gz", REAL_FRAGMENT_3K7P), min_length=40,
                                max_length=128)
    names = [line[17:20] for line in REAL_FRAGMENT_3K7P.splitlines() if line[12:16] == " CA "]
    assert backbone.name == "3k7pA:A:1-40"
    assert backbone.sequence == "".join(THREE_TO_ONE[n] for n in names)
    assert backbone.coords.dtype == np.float32 and backbone.coords.shape == (40, 3, 3)
    np.testing.assert_allclose(backbone.coords[0], [[13.881, 54.675, 18.523], [13.094, 53.532, 17.986],
                                                    [13.873, 52.724, 16.942]], atol=1e-5)
    # reference values of real structures (the full MDAnalysis DSSP set: CA-CA 3.804 ± 0.045 Å,
    # 99.8 % within 3.8 ± 0.3 Å, no CA pair |i-j| >= 3 closer than 3 Å, ideal N/C RMSD 0.07/0.012 Å)
    coords = torch.from_numpy(backbone.coords.astype(np.float64))
    report = backbone_report(coords[:, 1])
    assert report["ca_ca_valid_fraction"] > 0.95 and report["ca_ca_deviation"] < 0.05
    assert report["clash_rate"] == 0.0
    rebuilt = backbone_from_frames(*frames_from_backbone(coords))
    rmsd = ((rebuilt - coords) ** 2).sum(-1).mean(0).sqrt()
    assert rmsd[0] < 0.15 and rmsd[1] == 0.0 and rmsd[2] < 0.05


def test_read_backbones_splits_at_chain_breaks_and_crops(tmp_path: Path) -> None:
    coords = ideal_backbone(100, "helix")
    coords[60:] += np.array([6.0, 0.0, 0.0])  # C(60)-N(61) > 2 Å: a chain break
    backbones = read_backbones(write(tmp_path / "broken.pdb", backbone_pdb(coords)), min_length=30,
                               max_length=50)
    # segment 1-60 -> window 1-50 (the 10-residue rest is dropped), segment 61-100 kept whole
    assert [b.name for b in backbones] == ["broken:A:1-50", "broken:A:61-100"]
    np.testing.assert_allclose(backbones[0].coords, coords[:50], atol=6e-4)
    np.testing.assert_allclose(backbones[1].coords, coords[60:], atol=6e-4)
    assert backbones[1].sequence == "A" * 40
    missing = read_backbones(write(tmp_path / "gap.pdb", backbone_pdb(coords[:60], skip=((19, "C"),))),
                             10, 100)
    assert [len(b.coords) for b in missing] == [19, 40]
    windows = read_backbones(tmp_path / "broken.pdb", min_length=10, max_length=25)  # rests >= 10 are kept
    assert [b.name for b in windows] == ["broken:A:1-25", "broken:A:26-50", "broken:A:51-60",
                                         "broken:A:61-85", "broken:A:86-100"]


def test_read_backbones_altlocs_ligands_modified_residues_and_mmcif(tmp_path: Path) -> None:
    coords = ideal_backbone(4, "strand")
    lines = [pdb_line(1, "N", "ALA", 1, coords[0, 0]), pdb_line(2, "CA", "ALA", 1, coords[0, 1]),
             pdb_line(3, "C", "ALA", 1, coords[0, 2]),
             pdb_line(4, "N", "MSE", 2, coords[1, 0], record="HETATM"),
             pdb_line(5, "CA", "MSE", 2, coords[1, 1], record="HETATM"),
             pdb_line(6, "C", "MSE", 2, coords[1, 2], record="HETATM"),
             pdb_line(7, "N", "GLY", 3, coords[2, 0]),
             pdb_line(8, "CA", "GLY", 3, coords[2, 1], altloc="A", occupancy=0.4),
             pdb_line(9, "CA", "GLY", 3, coords[2, 1] + 0.5, altloc="B", occupancy=0.6),
             pdb_line(10, "C", "GLY", 3, coords[2, 2]),
             *(pdb_line(18 + k, atom, "VAL", 3, coords[2, k] + 0.3, altloc="C",
                        occupancy=0.1)  # microheterogeneity
               for k, atom in enumerate(("N", "CA", "C"))),
             pdb_line(11, "N", "SER", 4, coords[3, 0]), pdb_line(12, "CA", "SER", 4, coords[3, 1]),
             pdb_line(13, "C", "SER", 4, coords[3, 2]),
             pdb_line(14, "O", "HOH", 5, coords[3, 2] + 1.0, record="HETATM"),
             pdb_line(15, "N", "ALA", 1, coords[0, 0] + 40.0, chain="B"),
             pdb_line(16, "CA", "ALA", 1, coords[0, 1] + 40.0, chain="B"),
             pdb_line(17, "C", "ALA", 1, coords[0, 2] + 40.0, chain="B"), "END", ""]
    pdb = write(tmp_path / "small.pdb", "\n".join(lines))
    [backbone] = read_backbones(pdb, min_length=2, max_length=10)
    assert backbone.name == "small:A:1-4" and backbone.sequence == "AMGS"
    np.testing.assert_allclose(backbone.coords, coords, atol=6e-4)  # altloc A kept, water ignored
    structure = gemmi.read_structure(str(pdb))
    structure.setup_entities()
    cif = tmp_path / "small.cif.gz"
    cif.write_bytes(gzip.compress(structure.make_mmcif_document().as_string().encode()))
    [from_cif] = read_backbones([cif], min_length=2, max_length=10)
    np.testing.assert_array_equal(from_cif.coords, backbone.coords)
    (tmp_path / "notes.txt").write_text("not a structure")
    assert [b.name for b in read_backbones(tmp_path, 2, 10)] == ["small:A:1-4", "small:A:1-4"]


def test_read_backbones_reports_bad_input(tmp_path: Path) -> None:
    write(tmp_path / "short.pdb", backbone_pdb(ideal_backbone(10)))
    with pytest.raises(ValueError, match=r"min_length=40.*" + str(tmp_path.name)) as error:
        read_backbones(tmp_path, min_length=40, max_length=128)
    assert str(tmp_path) in str(error.value)
    bad = write(tmp_path / "bad.cif", "data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 2 3\n")
    with pytest.raises(ValueError, match="bad.cif"):
        read_backbones(bad, 2, 10)
    empty = write(tmp_path / "empty.pdb", "REMARK nothing here\nEND\n")
    with pytest.raises(ValueError, match="empty.pdb"):
        read_backbones(empty, 2, 10)
    with pytest.raises(FileNotFoundError, match="missing.pdb"):
        read_backbones([tmp_path / "missing.pdb"], 2, 10)
    with pytest.raises(ValueError, match="max_length"):
        read_backbones(tmp_path / "short.pdb", min_length=20, max_length=10)
    with pytest.raises(ValueError, match="min_length"):
        read_backbones(tmp_path / "short.pdb", min_length=1, max_length=10)
    with pytest.raises(ValueError, match="coords"):
        Backbone("x", np.zeros((3, 3, 3), np.float32), "AA")


# ---------------------------------------------------------------- the MDAnalysisTests source


def fake_sdist(path: Path) -> Path:
    """A small sdist: two DSSP structures, a fixture and a decoy to skip, unsafe members."""
    top = "mdanalysistests-9.9"
    helix, strand = backbone_pdb(ideal_backbone(50)), backbone_pdb(ideal_backbone(60, "strand"))
    members = {f"{top}/MDAnalysisTests/data/dssp/1abcA.pdb.gz": gzip.compress(helix.encode()),
               f"{top}/MDAnalysisTests/data/dssp/2xyzB.pdb.gz": gzip.compress(strand.encode()),
               f"{top}/MDAnalysisTests/data/dssp/2xyzB.pdb.dssp": b"EEEE",
               f"{top}/MDAnalysisTests/data/dssp/1abcA_failing.pdb.gz": b"fixture",
               f"{top}/MDAnalysisTests/data/other/3aaaA.pdb.gz": b"decoy",
               f"{top}/MDAnalysisTests/data/dssp/../../../../9evlA.pdb.gz": b"escape",
               "../MDAnalysisTests/data/dssp/5dotA.pdb.gz": b"escape",
               "/MDAnalysisTests/data/dssp/8absA.pdb.gz": b"absolute"}
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{top}/MDAnalysisTests/data/dssp/7lnkA.pdb.gz")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return path


def test_extract_copies_only_the_dssp_structures_flat(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "mdanalysistests-9.9.tar.gz")
    files = extract_dssp_structures(sdist, tmp_path / "out" / "dssp")
    assert [f.name for f in files] == ["1abcA.pdb.gz", "2xyzB.pdb.gz"]
    assert sorted(p.name for p in (tmp_path / "out" / "dssp").iterdir()) == ["1abcA.pdb.gz", "2xyzB.pdb.gz"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["1abcA.pdb.gz", "2xyzB.pdb.gz",
                                                                          sdist.name]
    assert [len(b.coords) for b in read_backbones(files, 40, 128)] == [50, 60]
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(RuntimeError, match="no MDAnalysisTests/data/dssp"):
        extract_dssp_structures(empty, tmp_path / "none")


FAKE_PIP = """\
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
expected = ["download", "--no-deps", "--no-binary", ":all:", "MDAnalysisTests==9.9", "-d"]
if args[:6] != expected or {fail}:
    sys.exit("ERROR: No matching distribution found for " + " ".join(args))
Path(args[6]).mkdir(parents=True, exist_ok=True)
shutil.copy({sdist!r}, Path(args[6]) / "mdanalysistests-9.9.tar.gz")
"""


def fake_pip(tmp_path: Path, sdist: Path, fail: bool) -> list[str]:
    script = tmp_path / ("failing_pip.py" if fail else "pip.py")
    script.write_text(FAKE_PIP.format(sdist=str(sdist), fail=fail))
    return [sys.executable, str(script)]


def test_fetch_downloads_extracts_and_is_idempotent(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "mdanalysistests-9.9.tar.gz")
    dest = tmp_path / "data" / "dssp"
    files = fetch_mdanalysis_dssp(dest, version="9.9", pip=fake_pip(tmp_path, sdist, fail=False))
    assert [f.name for f in files] == ["1abcA.pdb.gz", "2xyzB.pdb.gz"]
    assert all(f.parent == dest for f in files)
    source = (dest / "SOURCE.txt").read_text()
    assert "MDAnalysisTests 9.9" in source and "CC0" in source
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == ["1abcA.pdb.gz", "2xyzB.pdb.gz",
                                                                      "SOURCE.txt", "dssp"]
    # a second call must not run pip (this one would fail)
    assert fetch_mdanalysis_dssp(dest, version="9.9", pip=fake_pip(tmp_path, sdist, fail=True)) == files
    with pytest.raises(ValueError, match="another MDAnalysisTests version"):
        fetch_mdanalysis_dssp(dest, version="9.8", pip=fake_pip(tmp_path, sdist, fail=True))


def test_fetch_failures_leave_no_partial_folder(tmp_path: Path) -> None:
    sdist = fake_sdist(tmp_path / "mdanalysistests-9.9.tar.gz")
    dest = tmp_path / "data" / "dssp"
    with pytest.raises(RuntimeError, match="No matching distribution found"):
        fetch_mdanalysis_dssp(dest, version="9.9", pip=fake_pip(tmp_path, sdist, fail=True))
    assert not dest.exists() and list((tmp_path / "data").iterdir()) == []
    dest.mkdir()
    (dest / "stray.txt").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        fetch_mdanalysis_dssp(dest, version="9.9", pip=fake_pip(tmp_path, sdist, fail=False))


