"""A tiny text encoder trained from scratch with the flow, and the wrapper that feeds its tokens to
an image velocity model.

SD3 conditions its MM-DiT on the token sequence and a pooled vector of frozen pretrained text
encoders (CLIP, T5). No pretrained weights can be downloaded here and captions are templated, so
the encoder is small and learns jointly with the velocity field: token embeddings plus learned
position embeddings, then pre-norm transformer encoder layers over the real (non-padding) tokens.
"""

from __future__ import annotations

import torch
from torch import nn

PAD = 0  # the padding token; a row of padding only is the null caption of classifier-free guidance


class TextEncoder(nn.Module):
    """tokens (B, L) int64, 0 = padding -> (context (B, L, width), mask (B, L) bool, True = a token).

    Padding positions are not attended to and their outputs are zero; a row with no token at all
    (the null caption) gives an all-False mask and zero context.
    """

    def __init__(self, vocab_size: int, width: int = 64, depth: int = 2, heads: int = 4,
                 max_length: int = 16):
        super().__init__()
        if vocab_size < 2 or width < 1 or depth < 0 or max_length < 1 or width % heads:
            raise ValueError(f"need vocab_size >= 2, width >= 1 divisible by heads, depth >= 0, "
                             f"max_length >= 1; got vocab_size={vocab_size}, width={width}, heads={heads}, "
                             f"depth={depth}, max_length={max_length}")
        self.vocab_size, self.width, self.max_length = vocab_size, width, max_length
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.positions = nn.Parameter(torch.randn(max_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth else None
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be integer (B, L), got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > self.max_length:
            raise ValueError(f"captions of {tokens.shape[1]} tokens exceed max_length={self.max_length}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]")
        mask = tokens != PAD
        h = self.tokens(tokens) + self.positions[: tokens.shape[1]]
        if self.layers is not None:
            # an empty row would attend to nothing (NaN): let it attend everywhere, then zero it
            ignore = ~mask & mask.any(dim=1, keepdim=True)
            h = self.layers(h, src_key_padding_mask=ignore)
        return self.norm(h) * mask[..., None], mask


class TextConditioned(nn.Module):
    """v(x, t, tokens[, y]) = backbone(x, t, context=E(tokens), context_mask=mask[, y]).

    ``backbone`` ({"name": a registered image model, "params": its arguments}) is built with
    ``context_dim = text_width``: MM-DiT attends to the context tokens; the DiT and U-Net add
    their pooled (masked mean) embedding to the time embedding. The encoder E is a
    :class:`TextEncoder` of ``text_width``, ``text_depth`` layers and ``text_heads`` heads.
    """

    def __init__(self, backbone: dict, vocab_size: int, max_length: int = 16, text_width: int = 64,
                 text_depth: int = 2, text_heads: int = 4):
        super().__init__()
        from flowsci.registry import build_model

        if not isinstance(backbone, dict) or set(backbone) - {"name", "params"} or "name" not in backbone:
            raise ValueError(f"backbone must be {{name: MODEL, params: {{...}}}}, got {backbone!r}")
        self.encoder = TextEncoder(vocab_size, text_width, text_depth, text_heads, max_length)
        self.model = build_model(backbone["name"], {**backbone.get("params", {}), "context_dim": text_width})

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, **cond: torch.Tensor
                ) -> torch.Tensor:
        context, mask = self.encoder(tokens)
        return self.model(x, t, context=context, context_mask=mask, **cond)
