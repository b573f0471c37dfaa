"""Scores of estimated target mels: resynthesis with the mixture's phase (and Griffin-Lim), SI-SDR,
SI-SDR improvement, BSS Eval SDR and mel-L1, per row, then summarised overall and per role."""

from __future__ import annotations

import torch

from flowsci.audio.metrics import mel_l1, sdr, si_sdr, si_sdr_improvement
from flowsci.audio.resynthesis import griffin_lim_resynthesis, mel_mask_resynthesis
from flowsci.audio.spectral import SpectrogramSettings
from flowsci_domains.separation.chorales import VOICES
from flowsci_domains.separation.features import SplitFeatures, log_mel, mel_from_log

GRIFFIN_LIM_ROWS = 100  # the phase-free resynthesis inverts the mel by NNLS first: scored on fewer rows


def resynthesize(estimate: torch.Tensor, mixture: torch.Tensor, spectrogram: SpectrogramSettings
                 ) -> torch.Tensor:
    """Waves (R, T) from estimated log-mels (R, M, F) with the phase of the mixtures (R, T)."""
    return mel_mask_resynthesis(mel_from_log(estimate, spectrogram), mixture, spectrogram)


def score_rows(estimate: torch.Tensor, features: SplitFeatures, rows: torch.Tensor,
               spectrogram: SpectrogramSettings, *, with_sdr: bool = False, griffin_lim: int = 0
               ) -> dict[str, torch.Tensor]:
    """Per-row scores (R,) of estimated log-mels (R, M, F) of ``rows`` (R, 3), resynthesised with the
    mixtures' phase: ``si_sdr``, ``si_sdri`` (against the mixture), ``mel_l1`` (to the target's
    log-mel); with ``with_sdr`` BSS Eval's ``sdr``; with ``griffin_lim`` iterations the SI-SDR of
    Griffin-Lim's resynthesis (``si_sdr_griffin_lim``, the first GRIFFIN_LIM_ROWS rows), which
    keeps no phase of the mixture."""
    mixture, target = features.mixture_waves(rows), features.target_waves(rows)
    wave = resynthesize(estimate, mixture, spectrogram)
    scores = {"si_sdr": si_sdr(wave, target), "si_sdri": si_sdr_improvement(wave, target, mixture),
              "mel_l1": mel_l1(estimate, log_mel(features.target_mels(rows), spectrogram))}
    if with_sdr:
        scores["sdr"] = sdr(wave, target)
    if griffin_lim:
        generator = torch.Generator().manual_seed(0)
        few = slice(0, GRIFFIN_LIM_ROWS)
        gl = griffin_lim_resynthesis(mel_from_log(estimate[few], spectrogram), spectrogram, target.shape[-1],
                                     iterations=griffin_lim, generator=generator)
        scores["si_sdr_griffin_lim"] = si_sdr(gl, target[few])
    return {k: v.double() for k, v in scores.items()}


def summarize(scores: dict[str, torch.Tensor], roles: list[str], suffix: str = "",
              per_role: tuple[str, ...] = ()) -> dict[str, float]:
    """Means over rows (``<name><suffix>``) and, for the names in ``per_role``, over each role's
    rows (``<name>_<role><suffix>``)."""
    out = {f"{name}{suffix}": float(value.mean()) for name, value in scores.items()}
    for name in per_role:
        for role in VOICES:
            mask = torch.tensor([r == role for r in roles])
            if mask.any():
                out[f"{name}_{role}{suffix}"] = float(scores[name][mask].mean())
    return out
