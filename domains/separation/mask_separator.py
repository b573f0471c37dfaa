"""The discriminative baseline: a query-conditioned mask on the mixture's mel spectrogram.

LASS-Net and AudioSep (the separators FlowSep compares with) predict a mask that multiplies the
mixture's spectrogram, conditioned on the query's embedding. Here the backbone is the flow
separator's (the U-Net, FiLM-conditioned on the pooled query tokens or on a label embedding) and
the mask acts on the mixture's magnitude mel spectrogram, so both separators share the mel
resynthesis; it is trained by L1 between the masked mixture's and the target's normalised
log-mels.

The mel (1, M, F) is folded ``fold`` × ``fold`` into channels (pixel unshuffle: (fold², M/fold,
F/fold)) before the U-Net and unfolded after it. With fold 4 the U-Net runs at the resolution of
the flow's latent (the autoencoder downsamples by 4), so the two separators have the same network
at nearly the same parameter count and cost per evaluation; unfolded, the same U-Net would cost
16× more per step.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from flowsci.config import ObjectiveConfig
from flowsci.registry import build_model

QUERIES = ("text", "label")


class MaskSeparator(nn.Module):
    """mixture (B, 1, M, F) normalised log-mel, a query -> mask logits (B, 1, M, F).

    ``backbone``: {name: unet, params: {...}} (built with one input and one output channel);
    ``query``: "text" (tokens (B, L) through a :class:`flowsci.nn.text_encoder.TextEncoder` of
    ``text_width`` / ``text_depth`` / ``text_heads``) or "label" (y (B,) in [0, num_classes)).
    The backbone's time input is held at 0; it sees the mixture folded ``fold`` × ``fold`` into
    channels (M and F must be divisible by ``fold``).
    """

    def __init__(self, backbone: dict, query: str = "text", vocab_size: int = 0, max_length: int = 8,
                 text_width: int = 64, text_depth: int = 1, text_heads: int = 4, num_classes: int = 0,
                 fold: int = 4):
        super().__init__()
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {query!r}")
        if fold < 1:
            raise ValueError(f"fold must be >= 1, got {fold}")
        if not isinstance(backbone, dict) or "name" not in backbone or set(backbone) - {"name", "params"}:
            raise ValueError(f"backbone must be {{name: MODEL, params: {{...}}}}, got {backbone!r}")
        params = {**backbone.get("params", {}), "channels": fold * fold, "out_channels": fold * fold}
        self.query, self.fold = query, fold
        if query == "text":
            self.network = build_model("text_conditioned", {
                "backbone": {"name": backbone["name"], "params": params}, "vocab_size": vocab_size,
                "max_length": max_length, "text_width": text_width, "text_depth": text_depth,
                "text_heads": text_heads})
        else:
            if num_classes < 1:
                raise ValueError(f"query=label needs num_classes >= 1, got {num_classes}")
            self.network = build_model(backbone["name"], {**params, "num_classes": num_classes})

    def forward(self, mixture: torch.Tensor, tokens: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        if mixture.dim() != 4 or mixture.shape[1] != 1 or mixture.shape[2] % self.fold or \
                mixture.shape[3] % self.fold:
            raise ValueError(f"mixture must be (B, 1, M, F) with M and F divisible by fold={self.fold}, got "
                             f"{tuple(mixture.shape)}")
        t = torch.zeros(mixture.shape[0], device=mixture.device, dtype=mixture.dtype)
        folded = F.pixel_unshuffle(mixture, self.fold)
        if self.query == "text":
            if tokens is None:
                raise ValueError("MaskSeparator(query=text) needs the query tokens (B, L)")
            logits = self.network(folded, t, tokens)
        else:
            if y is None:
                raise ValueError("MaskSeparator(query=label) needs the labels y (B,)")
            logits = self.network(folded, t, y=y)
        return F.pixel_shuffle(logits, self.fold)


@dataclasses.dataclass
class MaskObjectiveConfig(ObjectiveConfig):
    """YAML ``objective:`` of the mask separator."""

    loss: str = "l1"                 # l1 | mse, between normalised log-mels


class MaskObjective:
    """loss(model, batch): batch ``mixture`` and ``target`` (B, 1, M, F) normalised log-mels
    (x = (log(mel + floor) − mean) / std) and the query (``tokens`` or ``y``)."""

    def __init__(self, mean: float, std: float, floor: float, loss: str = "l1"):
        if loss not in ("l1", "mse"):
            raise ValueError(f"objective.loss must be l1 or mse, got {loss!r}")
        self.mean, self.std, self.floor, self.kind = mean, std, floor, loss

    def masked(self, mask_logits: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
        """The normalised log-mel of the masked mixture: log(sigmoid(m) · mel_mix + floor)."""
        mel = (torch.exp(mixture * self.std + self.mean) - self.floor).clamp_min(0.0)
        return (torch.log(torch.sigmoid(mask_logits) * mel + self.floor) - self.mean) / self.std

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        query = {k: batch[k] for k in ("tokens", "y") if k in batch}
        estimate = self.masked(model(batch["mixture"], **query), batch["mixture"])
        error = estimate - batch["target"]
        loss = error.abs().mean() if self.kind == "l1" else error.square().mean()
        return loss, {"loss": float(loss.detach())}
