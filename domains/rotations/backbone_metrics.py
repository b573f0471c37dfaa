"""CA-trace quality of protein backbones: CA-CA bond lengths, CA clashes, radius of gyration.

Conventions. Consecutive CA atoms of trans peptides are 3.80 Å apart (cis peptides ~2.9 Å).
A *CA clash* is a pair of residues with |i - j| >= min_separation whose CA atoms are closer
than threshold Å. The default 3.0 Å is FrameDiff's / FoldFlow's "ca_steric_clash" radius
2 × 1.7 Å (carbon van der Waals) - 0.4 Å; those codes count all pairs i < j (min_separation=1)
and report the fraction of such pairs; FrameFlow counts pairs closer than 1.0 Å. Here
min_separation defaults to 3 so that bonded neighbours (3.8 Å) and i, i+2 (>= ~4.5 Å for any
N-CA-C and CA-CA-CA angle seen in proteins) never count, only non-local contacts do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CA_CA = 3.80


def _check_ca(ca: torch.Tensor, name: str = "ca", min_length: int = 2) -> None:
    if ca.dim() < 2 or ca.shape[-1] != 3 or ca.shape[-2] < min_length:
        raise ValueError(f"{name} must have shape (..., L, 3) with L >= {min_length}, got {tuple(ca.shape)}")


def ca_ca_distances(ca: torch.Tensor) -> torch.Tensor:
    """Distances of consecutive CA atoms: ca (..., L, 3) -> (..., L - 1) in Å."""
    _check_ca(ca)
    return (ca[..., 1:, :] - ca[..., :-1, :]).norm(dim=-1)


def bond_validity(ca: torch.Tensor, tolerance: float = 0.3) -> dict[str, float]:
    """CA-CA bond statistics over all bonds of ca (..., L, 3): mean, std, mean |d - 3.80|
    ("ca_ca_deviation") and the fraction with |d - 3.80| <= tolerance ("ca_ca_valid_fraction")."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0 Å, got {tolerance}")
    d = ca_ca_distances(ca).flatten()
    deviation = (d - CA_CA).abs()
    return {"ca_ca_mean": d.mean().item(), "ca_ca_std": d.std(correction=0).item(),
            "ca_ca_deviation": deviation.mean().item(),
            "ca_ca_valid_fraction": (deviation <= tolerance).double().mean().item()}


def _clash_pairs(ca: torch.Tensor, threshold: float, min_separation: int) -> tuple[torch.Tensor, int]:
    """Boolean (..., L, L) of clashing pairs with j - i >= min_separation, and the pair count."""
    _check_ca(ca, min_length=1)
    if threshold <= 0 or min_separation < 1:
        raise ValueError("threshold must be > 0 Å and min_separation >= 1, "
                         f"got {threshold}, {min_separation}")
    length = ca.shape[-2]
    index = torch.arange(length, device=ca.device)
    far = (index[None, :] - index[:, None]) >= min_separation
    close = torch.cdist(ca, ca) < threshold
    return close & far, int(far.sum())


def clash_fraction(ca: torch.Tensor, threshold: float = 3.0, min_separation: int = 3) -> torch.Tensor:
    """Per structure, the fraction of residue pairs j - i >= min_separation whose CA atoms are
    closer than threshold Å: ca (..., L, 3) -> (...,); 0 when there is no such pair."""
    clashes, pairs = _clash_pairs(ca, threshold, min_separation)
    return clashes.sum(dim=(-2, -1)).to(ca.dtype) / max(pairs, 1)


def has_clash(ca: torch.Tensor, threshold: float = 3.0, min_separation: int = 3) -> torch.Tensor:
    """Per structure, whether any pair j - i >= min_separation is closer than threshold Å:
    ca (..., L, 3) -> (...,) bool."""
    clashes, _ = _clash_pairs(ca, threshold, min_separation)
    return clashes.flatten(-2).any(dim=-1)


def radius_of_gyration(ca: torch.Tensor) -> torch.Tensor:
    """sqrt(mean_i |x_i - mean x|²) of the CA atoms: ca (..., L, 3) -> (...,) in Å."""
    _check_ca(ca, min_length=1)
    return (ca - ca.mean(dim=-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()


def backbone_report(ca: torch.Tensor | Sequence[torch.Tensor], tolerance: float = 0.3, threshold: float = 3.0,
                    min_separation: int = 3) -> dict[str, float]:
    """Summary of a set of CA traces: a batch (B, L, 3), one trace (L, 3), or a list of (L_i, 3).

    Each structure counts once: ca_ca_deviation / ca_ca_valid_fraction (see bond_validity) and
    clash_fraction are per-structure values averaged over structures; clash_rate is the fraction
    of structures with at least one clash; rg_mean / rg_std over structures (Å).
    """
    if isinstance(ca, torch.Tensor):
        _check_ca(ca)
        structures = [ca] if ca.dim() == 2 else list(ca.reshape(-1, *ca.shape[-2:]))
    else:
        structures = list(ca)
    if not structures:
        raise ValueError("ca must hold at least one structure, got an empty sequence")
    rows = []
    for x in structures:
        _check_ca(x, name="every structure in ca")
        bonds = bond_validity(x, tolerance)
        rows.append([bonds["ca_ca_deviation"], bonds["ca_ca_valid_fraction"],
                     clash_fraction(x, threshold, min_separation).item(),
                     float(has_clash(x, threshold, min_separation)), radius_of_gyration(x).item()])
    table = torch.tensor(rows, dtype=torch.float64)
    mean = table.mean(0)
    return {"n_structures": float(len(rows)), "ca_ca_deviation": mean[0].item(),
            "ca_ca_valid_fraction": mean[1].item(),
            "clash_fraction": mean[2].item(), "clash_rate": mean[3].item(), "rg_mean": mean[4].item(),
            "rg_std": table[:, 4].std(correction=0).item()}
