"""Separation and spectrogram metrics. Inputs are torch tensors with the signal in the last axis
(..., T) or the spectrogram in the last two (..., F, frames); results are float64 tensors (...)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

# Relative regulariser of SI-SDR: a perfect estimate scores about 10 log10(1 / 1e-20) = 200 dB.
_SI_SDR_EPS = 1e-20


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, min_dims: int) -> None:
    if a.shape != b.shape or a.dim() < min_dims:
        raise ValueError(f"{name_a} and {name_b} must have the same shape with at least {min_dims} dims, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = True) -> torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019) of estimate against reference, (..., T) -> (...).

    The estimate is projected on the reference, target = (<e, r> / ||r||^2) r, and
    SI-SDR = 10 log10 ||target||^2 / ||e - target||^2 (after removing the means when ``zero_mean``).
    Both energies get eps = 1e-20 ||e||^2 (plus the smallest float64) added, so a scaled copy of the
    reference scores about 200 dB (>= 100 dB from float32 inputs) instead of +inf, a silent
    reference with a non-silent estimate about -200 dB, and a silent estimate 0 dB (0 / 0 otherwise).
    """
    _check_same_shape("estimate", estimate, "reference", reference, 1)
    e, r = estimate.to(torch.float64), reference.to(torch.float64)
    if zero_mean:
        e, r = e - e.mean(dim=-1, keepdim=True), r - r.mean(dim=-1, keepdim=True)
    tiny = torch.finfo(torch.float64).tiny
    scale = (e * r).sum(dim=-1, keepdim=True) / (r * r).sum(dim=-1, keepdim=True).clamp_min(tiny)
    target = scale * r
    eps = _SI_SDR_EPS * (e * e).sum(dim=-1) + tiny
    target_energy = (target * target).sum(dim=-1) + eps
    residual_energy = ((e - target) ** 2).sum(dim=-1) + eps
    return 10.0 * torch.log10(target_energy / residual_energy)


def si_sdr_improvement(estimate: torch.Tensor, reference: torch.Tensor,
                       mixture: torch.Tensor) -> torch.Tensor:
    """SI-SDRi in dB, si_sdr(estimate, reference) - si_sdr(mixture, reference); all (..., T) -> (...)."""
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


def sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """BSS Eval v3 SDR in dB (mir_eval.separation.bss_eval_sources, 512-tap distortion filter) of each
    item as a single source, (..., T) -> (...). With one source there is no interference term:
    SDR = 10 log10 ||P e||^2 / ||e - P e||^2, P the projection on the 512 delays of the reference.
    ValueError for a silent reference or estimate (mir_eval rejects them).

    mir_eval 0.8 marks bss_eval_sources deprecated (to be removed in 0.9); its FutureWarning is
    silenced here.
    """
    import mir_eval  # here, not at the top: importing it loads all of scipy.stats (about 1.5 s)

    _check_same_shape("estimate", estimate, "reference", reference, 1)
    e = estimate.detach().to("cpu", torch.float64).reshape(-1, estimate.shape[-1]).numpy()
    r = reference.detach().to("cpu", torch.float64).reshape(-1, reference.shape[-1]).numpy()
    values = []
    for index, (est_item, ref_item) in enumerate(zip(e, r)):
        if not np.any(ref_item):
            raise ValueError(f"sdr: reference item {index} is silent (all zeros); SDR is undefined")
        if not np.any(est_item):
            raise ValueError(f"sdr: estimate item {index} is silent (all zeros); SDR is undefined")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            value, _, _, _ = mir_eval.separation.bss_eval_sources(ref_item[None], est_item[None],
                                                                 compute_permutation=False)
        values.append(float(value[0]))
    return torch.tensor(values, dtype=torch.float64).reshape(estimate.shape[:-1])


def mel_l1(estimate_log_mel: torch.Tensor, reference_log_mel: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two log-mel spectrograms over the last two dims, (..., M, N) -> (...)."""
    _check_same_shape("estimate_log_mel", estimate_log_mel, "reference_log_mel", reference_log_mel, 2)
    difference = estimate_log_mel.to(torch.float64) - reference_log_mel.to(torch.float64)
    return difference.abs().mean(dim=(-2, -1))


def log_spectral_distance(estimate_mag: torch.Tensor, reference_mag: torch.Tensor,
                          floor: float = 1e-5) -> torch.Tensor:
    """Log-spectral distance in dB of two magnitude spectrograms (..., F, frames) -> (...): the RMS
    over frequency of 20 log10(max(estimate, floor) / max(reference, floor)), averaged over frames."""
    _check_same_shape("estimate_mag", estimate_mag, "reference_mag", reference_mag, 2)
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    estimate_db = 20.0 * torch.log10(estimate_mag.to(torch.float64).clamp_min(floor))
    reference_db = 20.0 * torch.log10(reference_mag.to(torch.float64).clamp_min(floor))
    return (estimate_db - reference_db).pow(2).mean(dim=-2).sqrt().mean(dim=-1)
