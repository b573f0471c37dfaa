"""MM-DiT: the multimodal diffusion transformer of SD3 (Esser et al. 2024, "Scaling Rectified
Flow Transformers for High-Resolution Image Synthesis", §2.4) as a velocity field
v(x, t, context[, y]) for images.

Two token streams, image patches (with a fixed 2-D sin-cos position embedding) and context
tokens (a linear projection of ``context`` from ``context_dim`` to ``width``, no position
embedding), each with its own weights: its own adaLN-Zero modulation from the conditioning
vector c, its own QKV projection, output projection and MLP. The two streams meet in one joint
attention over the concatenated sequence [context; image]: the queries, keys and values of
both streams are concatenated along the sequence, one scaled-dot-product attention runs, and
its output is split back per stream. Q and K can be RMS-normalised per head (``qk_norm``).

c = MLP(sinusoidal(t)) + Linear(pooled context) (+ label embedding), where the pooled context
is the mean of the context tokens over ``context_mask``. An all-False mask row is the null
condition of classifier-free guidance: its pooled vector is 0 and no context token is a key,
so the image stream sees no context at all. The context stream of the last block stops after
its keys and values (its outputs would be discarded), and the image stream ends as in DiT:
adaLN (shift, scale) and a zero-initialised linear map, so the initial velocity is exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flowsci.nn.dit import (
    FinalLayer,
    check_image,
    check_sizes,
    mlp,
    modulate,
    patchify,
    sincos_position_embedding,
    unpatchify,
    xavier_init_linears,
)
from flowsci.nn.embeddings import ConditionEmbedding, pool_context


class Stream(nn.Module):
    """The weights of one token stream of a :class:`JointBlock`.

    ``modulation(SiLU(c))`` splits into (shift_attn, scale_attn, gate_attn, shift_mlp,
    scale_mlp, gate_mlp), or only (shift_attn, scale_attn) when ``pre_only``: then the stream
    only contributes keys and values (``kv`` in place of ``qkv``, no query norm) and has no
    output projection, MLP or residual. The modulation starts at zero.
    """

    def __init__(self, width: int, heads: int, qk_norm: bool = True, pre_only: bool = False):
        super().__init__()
        head_dim = width // heads
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        if pre_only:
            self.kv = nn.Linear(width, 2 * width)
        else:
            self.qkv = nn.Linear(width, 3 * width)
            self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        if not pre_only:
            self.out = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.mlp = mlp(width)
        self.modulation = nn.Linear(width, (2 if pre_only else 6) * width)
        xavier_init_linears(self)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)


class JointBlock(nn.Module):
    """img (B, N, D), ctx (B, L, D), c (B, D), mask (B, L) bool | None -> (img, ctx).

    One MM-DiT block: two streams with separate weights (``self.image``, ``self.context``) and
    one joint attention over [ctx; img]; context tokens with mask False are not keys. With
    ``context_pre_only`` the context stream stops after its keys and values and the block
    returns ctx = None; with ``context=False`` there is no context stream (ctx must be None) and
    the block is a DiT block with the image stream's weights. ``value_hook`` (default None: no
    effect), when set, maps the image stream's attention values V (B, heads, N, D/heads) to the
    V the joint attention uses (RF-Edit's feature sharing, :mod:`flowsci.editing`).
    """

    def __init__(self, width: int, heads: int, qk_norm: bool = True, context_pre_only: bool = False,
                 context: bool = True):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention heads ({heads}) must divide the width ({width})")
        self.heads = heads
        self.value_hook: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.image = Stream(width, heads, qk_norm)
        self.context = Stream(width, heads, qk_norm, pre_only=context_pre_only) if context else None

    def _qkv(self, stream: Stream, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor
             ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """x (B, S, D) -> q, k, v (B, heads, S, D/heads) after adaLN modulation and QK norm
        (q = None for a pre-only stream)."""
        b, s, d = x.shape
        h = modulate(stream.norm1(x), shift, scale)
        if stream.pre_only:
            k, v = stream.kv(h).reshape(b, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            return None, stream.k_norm(k), v
        q, k, v = stream.qkv(h).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return stream.q_norm(q), stream.k_norm(k), v

    def _modulations(self, c: torch.Tensor
                     ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None]:
        img_mod = self.image.modulation(F.silu(c)).chunk(6, dim=-1)
        if self.context is None:
            return img_mod, None
        return img_mod, self.context.modulation(F.silu(c)).chunk(2 if self.context.pre_only else 6, dim=-1)

    def _attention(self, img: torch.Tensor, ctx: torch.Tensor | None, img_mod: tuple[torch.Tensor, ...],
                   ctx_mod: tuple[torch.Tensor, ...] | None, mask: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (ctx is None) != (self.context is None):
            raise ValueError("JointBlock: pass context tokens exactly when the block has a context stream")
        q, k, v = self._qkv(self.image, img, img_mod[0], img_mod[1])
        if self.value_hook is not None:
            v = self.value_hook(v)
        length = 0
        attn_mask = None
        if ctx is not None:
            qc, kc, vc = self._qkv(self.context, ctx, ctx_mod[0], ctx_mod[1])
            k, v = torch.cat([kc, k], dim=2), torch.cat([vc, v], dim=2)
            if qc is not None:  # a pre-only context stream asks no queries
                q, length = torch.cat([qc, q], dim=2), ctx.shape[1]
            if mask is not None:
                keep = torch.cat([mask.bool(), mask.new_ones(img.shape[:2], dtype=torch.bool)], dim=1)
                attn_mask = keep[:, None, None, :]  # (B, 1, 1, L + N): True = may be attended to
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        b, _, s, hd = out.shape
        out = out.transpose(1, 2).reshape(b, s, self.heads * hd)
        ctx_out, img_out = out[:, :length], out[:, length:]
        if self.context is None or self.context.pre_only:
            return self.image.out(img_out), None
        return self.image.out(img_out), self.context.out(ctx_out)

    def joint_attention(self, img: torch.Tensor, ctx: torch.Tensor | None, c: torch.Tensor,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The joint attention of both streams, output projections included, before the gates and
        residuals: (B, N, D) for the image, (B, L, D) for the context (None if pre-only)."""
        img_mod, ctx_mod = self._modulations(c)
        return self._attention(img, ctx, img_mod, ctx_mod, mask)

    @staticmethod
    def _residual(stream: Stream, x: torch.Tensor, attn: torch.Tensor, mod: tuple[torch.Tensor, ...]
                  ) -> torch.Tensor:
        _, _, gate_a, shift_m, scale_m, gate_m = mod
        x = x + gate_a[:, None] * attn
        return x + gate_m[:, None] * stream.mlp(modulate(stream.norm2(x), shift_m, scale_m))

    def forward(self, img: torch.Tensor, ctx: torch.Tensor | None, c: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        img_mod, ctx_mod = self._modulations(c)
        img_attn, ctx_attn = self._attention(img, ctx, img_mod, ctx_mod, mask)
        img = self._residual(self.image, img, img_attn, img_mod)
        ctx = None if ctx_attn is None else self._residual(self.context, ctx, ctx_attn, ctx_mod)
        return img, ctx


class MMDiT(nn.Module):
    """v(x, t, context[, context_mask][, y]): x (B, channels, H, W), t (B,) in [0, 1],
    context (B, L, context_dim), context_mask (B, L) bool (True = a real token) -> (B, channels, H, W).

    H and W must be multiples of ``patch``. With ``context_dim > 0`` the context is required;
    without a mask every token counts. ``pooled`` (B, context_dim) replaces the masked mean of the
    context in c (rows whose mask is all False still pool to 0). With ``context_dim = 0`` the
    model has no context stream and its blocks reduce to DiT blocks (with QK norm). With
    ``num_classes > 0`` the model is also conditioned on integer labels y (B,) in
    [0, num_classes); -1 is the null label.
    """

    def __init__(self, channels: int = 1, patch: int = 2, width: int = 64, depth: int = 4, heads: int = 4,
                 context_dim: int = 32, num_classes: int = 0, time_dim: int = 64, qk_norm: bool = True):
        super().__init__()
        check_sizes(channels, patch, width, depth, heads, num_classes)
        if context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {context_dim}")
        self.channels, self.patch, self.width, self.context_dim = channels, patch, width, context_dim
        self.patch_embedding = nn.Linear(channels * patch * patch, width)
        nn.init.xavier_uniform_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)
        self.conditioning = ConditionEmbedding(width, time_dim, num_classes, init_std=0.02)
        if context_dim:
            self.context_embedding = nn.Linear(context_dim, width)
            self.pooled_embedding = nn.Linear(context_dim, width)
            nn.init.xavier_uniform_(self.context_embedding.weight)
            nn.init.zeros_(self.context_embedding.bias)
            nn.init.normal_(self.pooled_embedding.weight, std=0.02)
            nn.init.zeros_(self.pooled_embedding.bias)
        # the last block's context stream would only feed discarded outputs: it stops at its K, V
        self.blocks = nn.ModuleList(JointBlock(width, heads, qk_norm, context_pre_only=i == depth - 1,
                                               context=context_dim > 0) for i in range(depth))
        self.final = FinalLayer(width, channels * patch * patch)

    def _context(self, context: torch.Tensor | None, mask: torch.Tensor | None, pooled: torch.Tensor | None,
                 batch: int, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The projected context tokens (B, L, width) and the pooled embedding (B, width)."""
        if not self.context_dim:
            if context is not None or mask is not None or pooled is not None:
                raise ValueError("context given to a model without context (context_dim = 0)")
            return None, None
        if pooled is None:
            pooled = pool_context(context, mask, batch, self.context_dim)
        else:
            pool_context(context, mask, batch, self.context_dim)  # checks the shapes
            if pooled.shape != (batch, self.context_dim):
                raise ValueError(f"pooled must be (B, context_dim) = {(batch, self.context_dim)}, "
                                 f"got {tuple(pooled.shape)}")
            if mask is not None:  # the null condition stays null
                pooled = pooled * mask.bool().any(dim=1, keepdim=True).to(pooled.dtype)
        return self.context_embedding(context.to(dtype)), self.pooled_embedding(pooled.to(dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, y: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None) -> torch.Tensor:
        check_image(x, self.patch, self.channels, "MMDiT")
        b, _, h, w = x.shape
        c = self.conditioning(t, y, b).to(x.dtype)
        ctx, pooled_emb = self._context(context, context_mask, pooled, b, x.dtype)
        if pooled_emb is not None:
            c = c + pooled_emb
        img = self.patch_embedding(patchify(x, self.patch))
        img = img + sincos_position_embedding(h // self.patch, w // self.patch, self.width, x.device, x.dtype)
        for block in self.blocks:
            img, ctx = block(img, ctx, c, context_mask)
        return unpatchify(self.final(img, c), self.patch, self.channels, h, w)

