"""FrameTransformer: an SE(3)-equivariant velocity field on N rigid residue frames (SE(3)^N).

A backbone is N frames (x_i, R_i): the CA position x_i (units of 10 Å) and the rotation R_i of
the residue's local frame. The network sees only SE(3)-invariant features:

- per pair (i, j): the local coordinates p_ij = R_iᵀ (x_j - x_i) of CA_j in frame i (fed as
  p_ij / (|p_ij| + max_distance), bounded in the unit ball), their norm |p_ij| expanded in
  ``n_rbf`` Gaussian radial basis functions on [0, max_distance], the relative rotation
  R_iᵀ R_j (9 entries) and the sequence separation i - j clipped to ±max_relpos (embedded);
- per residue: a sinusoidal embedding of t and two learned first/last-residue indicators (no
  absolute index, so that the model generalises across lengths).

``depth`` pre-LayerNorm blocks then each (1) update the pair features from the node features
by an outer sum and a pair MLP, (2) let every residue attend to all residues with an additive
per-head bias from the pair features, aggregating the values and (as in IPA) the pair features
under the same attention weights, and (3) apply a residual node MLP. A zero-initialised linear
readout gives per residue a body-frame translation velocity b_i and angular velocity omega_i,
and the output (R_i b_i, omega_i) is SE(3)-equivariant: under x_i -> Q x_i + s, R_i -> Q R_i the
translation part rotates by Q and omega (body frame) is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding
from flowsci.spaces.rotations import quat_to_matrix

ROTATION_CHARTS = {"quaternion": 7, "matrix": 12}  # chart -> size of the last axis of a point
RELATIVE_ROTATION_FEATURES = 9  # flattened R_iᵀ R_j
LOCAL_COORDINATE_FEATURES = 3


def frames_from_points(x: torch.Tensor, rotation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, 7) (translation, quaternion w, x, y, z) or (B, N, 12) (translation, row-major
    rotation matrix) -> translations (B, N, 3) and rotation matrices (B, N, 3, 3)."""
    translations = x[..., :3]
    if rotation == "quaternion":
        return translations, quat_to_matrix(x[..., 3:7])
    return translations, x[..., 3:12].unflatten(-1, (3, 3))


def _identity_frame(rotation: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The identity frame as a point (7,) or (12,) of the chart."""
    if rotation == "quaternion":
        rot = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device)
    else:
        rot = torch.eye(3, dtype=dtype, device=device).flatten()
    return torch.cat([torch.zeros(3, dtype=dtype, device=device), rot])


class FrameAttentionBlock(nn.Module):
    """One block on node features (B, N, dim) and pair features (B, N, N, pair_dim):
    outer-sum pair update, pair-biased multi-head self-attention, residual node MLP."""

    def __init__(self, dim: int, heads: int, pair_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.outer_norm = nn.LayerNorm(dim)
        self.outer_left = nn.Linear(dim, pair_dim)
        self.outer_right = nn.Linear(dim, pair_dim, bias=False)
        self.pair_mlp = nn.Sequential(nn.LayerNorm(pair_dim), nn.Linear(pair_dim, 2 * pair_dim),
                                      nn.SiLU(), nn.Linear(2 * pair_dim, pair_dim))
        self.node_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.pair_norm = nn.LayerNorm(pair_dim)
        self.pair_bias = nn.Linear(pair_dim, heads, bias=False)
        self.attention_out = nn.Linear(dim + heads * pair_dim, dim)
        self.node_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.SiLU(),
                                      nn.Linear(4 * dim, dim))

    def forward(self, node: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """node (B, N, dim), pair (B, N, N, pair_dim), mask (B, N) bool (True = real residue)
        -> updated (node, pair); padded residues get zero attention weight as keys."""
        batch, n, dim = node.shape
        outer = self.outer_norm(node)
        pair = pair + self.outer_left(outer)[:, :, None] + self.outer_right(outer)[:, None, :]
        pair = pair + self.pair_mlp(pair)

        q, k, v = self.qkv(self.node_norm(node)).view(batch, n, 3, self.heads, self.head_dim
                                                      ).permute(2, 0, 3, 1, 4)  # (B, H, N, d) each
        pair_normed = self.pair_norm(pair)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        logits = logits + self.pair_bias(pair_normed).permute(0, 3, 1, 2)  # (B, H, N, N)
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1)
        from_nodes = (weights @ v).transpose(1, 2).reshape(batch, n, dim)
        from_pairs = torch.einsum("bhij,bijc->bihc", weights, pair_normed).flatten(2)
        node = node + self.attention_out(torch.cat([from_nodes, from_pairs], dim=-1))
        node = node + self.node_mlp(node)
        return node, pair


class FrameTransformer(nn.Module):
    """SE(3)-equivariant velocity field v(x, t) on N residue frames (see the module doc).

    x: (B, N, 7) with ``rotation="quaternion"`` (translation, unit quaternion w, x, y, z) or
    (B, N, 12) with ``rotation="matrix"`` (translation, row-major 3x3 rotation); t: (B,) or
    scalar in [0, 1]; mask: optional (B, N) bool, True = real residue. Returns (B, N, 6): the
    world-frame translation velocity R_i b_i and the body-frame angular velocity omega_i
    (dR_i/dt = R_i omega_i^); padded residues output 0 and do not influence the others.
    The final layer is zero-initialised, so the untrained field is 0. With ``center_of_mass``
    the mean translation velocity over the real residues is removed: the output is then a
    tangent vector of SE(3)^N with the centre of mass fixed (still equivariant).
    """

    def __init__(self, rotation: str = "quaternion", dim: int = 64, depth: int = 3, heads: int = 4,
                 pair_dim: int = 32, n_rbf: int = 16, max_distance: float = 2.0,
                 max_relpos: int = 32, time_dim: int = 32, center_of_mass: bool = True):
        super().__init__()
        if rotation not in ROTATION_CHARTS:
            raise ValueError(f"rotation must be one of {sorted(ROTATION_CHARTS)}, got {rotation!r}")
        sizes = {"dim": dim, "depth": depth, "heads": heads, "pair_dim": pair_dim, "n_rbf": n_rbf,
                 "max_relpos": max_relpos, "time_dim": time_dim}
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        if time_dim % 2:
            raise ValueError(f"time_dim must be even, got {time_dim}")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {max_distance}")
        self.rotation, self.center_of_mass = rotation, bool(center_of_mass)
        self.max_distance = float(max_distance)
        self.max_relpos = max_relpos
        self.register_buffer("rbf_centers", torch.linspace(0.0, max_distance, n_rbf),
                             persistent=False)
        self.rbf_width = max_distance / n_rbf

        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.terminus_embedding = nn.Linear(2, dim, bias=False)  # (is_first, is_last) -> dim
        geometric = n_rbf + LOCAL_COORDINATE_FEATURES + RELATIVE_ROTATION_FEATURES
        self.pair_input = nn.Linear(geometric, pair_dim)
        self.relpos_embedding = nn.Embedding(2 * max_relpos + 1, pair_dim)
        self.blocks = nn.ModuleList(FrameAttentionBlock(dim, heads, pair_dim) for _ in range(depth))
        self.output_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, 6)  # body-frame (b_i, omega_i)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def pair_features(self, translations: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """translations (B, N, 3), rotations (B, N, 3, 3) -> pair features (B, N, N, pair_dim)."""
        n = translations.shape[1]
        offsets = translations[:, None, :, :] - translations[:, :, None, :]  # [b, i, j] = x_j - x_i
        local = torch.einsum("bikc,bijk->bijc", rotations, offsets)  # R_iᵀ (x_j - x_i)
        r2 = (local * local).sum(dim=-1)
        small = r2 < 1e-12  # the diagonal: keep d|p|/dp finite
        distance = torch.where(small, 0.0, torch.where(small, 1.0, r2).sqrt())
        rbf = torch.exp(-(((distance[..., None] - self.rbf_centers) / self.rbf_width) ** 2))
        bounded_local = local / (distance + self.max_distance)[..., None]
        relative_rotation = torch.einsum("bikc,bjkd->bijcd", rotations, rotations).flatten(-2)
        geometric = torch.cat([rbf, bounded_local, relative_rotation], dim=-1)
        index = torch.arange(n, device=translations.device)
        separation = (index[:, None] - index[None, :]).clamp(-self.max_relpos, self.max_relpos)
        return self.pair_input(geometric) + self.relpos_embedding(separation + self.max_relpos)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        size = ROTATION_CHARTS[self.rotation]
        if x.dim() != 3 or x.shape[-1] != size:
            raise ValueError(f"x must have shape (B, N, {size}) for rotation={self.rotation!r}, "
                             f"got {tuple(x.shape)}")
        batch, n, _ = x.shape
        t = t.expand(batch) if t.dim() == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) or be a scalar, got {tuple(t.shape)}")
        if mask is None:
            mask = torch.ones(batch, n, dtype=torch.bool, device=x.device)
        elif mask.shape != (batch, n) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape ({batch}, {n}), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        # padded residues become identity frames, so their contents never matter
        x = torch.where(mask[..., None], x, _identity_frame(self.rotation, x.dtype, x.device))
        translations, rotations = frames_from_points(x, self.rotation)

        is_first = mask & (mask.cumsum(dim=1) == 1)
        is_last = mask & (mask.flip(1).cumsum(dim=1).flip(1) == 1)
        termini = torch.stack([is_first, is_last], dim=-1).to(x.dtype)
        node = self.time_mlp(self.time_embedding(t).to(x.dtype))[:, None, :]
        node = node + self.terminus_embedding(termini)
        pair = self.pair_features(translations, rotations)
        for block in self.blocks:
            node, pair = block(node, pair, mask)

        body_translation, omega = self.output(self.output_norm(node)).split(3, dim=-1)
        weights = mask[..., None].to(x.dtype)
        world_translation = torch.einsum("bnij,bnj->bni", rotations, body_translation) * weights
        if self.center_of_mass:
            mean = world_translation.sum(1, keepdim=True) / weights.sum(1, keepdim=True)
            world_translation = (world_translation - mean) * weights
        return torch.cat([world_translation, omega * weights], dim=-1)
