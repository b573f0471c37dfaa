"""Oracles for the Kolmogorov-flow trajectory metrics: the correlation time of a field rotating
away from the reference at a known rate, the x-averaged profiles of closed-form flows."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci_domains.turbulence.flow_metrics import correlation_time, velocity_profiles, vorticity_correlation

F64 = torch.float64


def orthonormal_pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean fields f, g (n, n) with equal variance and zero covariance."""
    f, g = torch.randn(2, n, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    f, g = f - f.mean(), g - g.mean()
    g = g - (f * g).sum() / (f * f).sum() * f
    return f / f.norm(), g / g.norm()


def test_correlation_time_of_a_rotating_field_is_arccos_of_the_threshold_over_the_rate() -> None:
    # pred(t) = cos(a t) f + sin(a t) g against ref = f has correlation cos(a t): it crosses 0.95 at
    # t* = arccos(0.95) / a; linear interpolation errs by at most dt^2 a / (8 sin(a t*)).
    times = torch.linspace(0, 1, 101, dtype=F64)
    rates = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    f, g = orthonormal_pair(16, seed=0)
    angle = rates[:, None, None, None] * times[None, :, None, None]              # (B, T, 1, 1)
    pred = torch.cos(angle) * f + torch.sin(angle) * g
    ref = f.expand_as(pred)
    assert torch.allclose(vorticity_correlation(pred, ref), torch.cos(angle[..., 0, 0]), rtol=0, atol=1e-12)
    expected = math.acos(0.95) / rates
    bound = 0.01 ** 2 * rates / (8 * math.sqrt(1 - 0.95 ** 2))
    error = (correlation_time(pred, ref, times) - expected).abs()
    assert (error <= bound).all() and error.max() > 0
    # a scaled and shifted prediction has the same correlation
    assert torch.allclose(correlation_time(3 * pred + 1, ref, times), correlation_time(pred, ref, times))


def test_correlation_time_edge_cases() -> None:
    times = torch.arange(6, dtype=F64) * 0.5
    f, g = orthonormal_pair(8, seed=1)
    ref = f.expand(4, 6, 8, 8)
    pred = ref.clone()
    pred[1, 0] = g                          # uncorrelated from the start
    pred[2, 3:] = math.nan                  # diverged after t = 1.0
    pred[3, 2:] = 0.0                       # collapsed to a constant field after t = 0.5
    got = correlation_time(pred, ref, times)
    assert torch.equal(got, torch.tensor([2.5, 0.0, 1.5, 1.0], dtype=F64))
    assert got.dtype == F64


def test_correlation_time_rejects_bad_input() -> None:
    field = torch.zeros(2, 3, 8, 8)
    times = torch.arange(3.0)
    with pytest.raises(ValueError, match=r"shape \(B, T, n, n\)"):
        correlation_time(field[0], field[0], times)
    with pytest.raises(ValueError, match="same shape"):
        correlation_time(field, field[:, :2], times)
    with pytest.raises(ValueError, match="times must have shape"):
        correlation_time(field, field, times[:2])
    with pytest.raises(ValueError, match="strictly increasing"):
        correlation_time(field, field, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="threshold"):
        correlation_time(field, field, times, threshold=1.5)


def test_velocity_profiles_of_a_mean_shear_with_two_waves() -> None:
    # trajectory b: psi = -(U_b / 4) cos(4y) + e1 cos(p x + q1 y + phi) + e2 cos(p x + q2 y + phi),
    # U_b = U0 (1 +- d), phi random per snapshot. The x-averages give U(y) = U0 sin(4y) and
    # <u'^2> = (d U0 sin 4y)^2 + [e1^2 q1^2 + e2^2 q2^2 + 2 e1 e2 q1 q2 cos((q1 - q2) y)] / 2,
    # <v^2> = p^2 [e1^2 + e2^2 + 2 e1 e2 cos((q1 - q2) y)] / 2,
    # <u'v'> = -p [e1^2 q1 + e2^2 q2 + e1 e2 (q1 + q2) cos((q1 - q2) y)] / 2.
    n, u0, d, p, q1, q2, e1, e2 = 32, 2.0, 0.1, 2, 1, 3, 0.3, 0.2
    points = 2 * math.pi * torch.arange(n, dtype=F64) / n
    x, y = points.reshape(n, 1), points.reshape(1, n)
    phases = 2 * math.pi * torch.rand(2, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    w = torch.empty(2, 3, n, n, dtype=F64)
    for b, amplitude in enumerate((u0 * (1 + d), u0 * (1 - d))):
        for t in range(3):
            phi = phases[b, t]
            waves = [e * (p * p + q * q) * torch.cos(p * x + q * y + phi) for e, q in ((e1, q1), (e2, q2))]
            w[b, t] = -4 * amplitude * torch.cos(4 * y) + waves[0] + waves[1]
    profiles = velocity_profiles(w)
    y = points                                                                   # (n,) from here on
    beat = torch.cos((q1 - q2) * y)
    assert torch.allclose(profiles.y, y)
    assert torch.allclose(profiles.mean_u, u0 * torch.sin(4 * y), rtol=0, atol=1e-12)
    rms_u = ((d * u0 * torch.sin(4 * y)) ** 2 + (e1 ** 2 * q1 ** 2 + e2 ** 2 * q2 ** 2
                                                  + 2 * e1 * e2 * q1 * q2 * beat) / 2).sqrt()
    assert torch.allclose(profiles.rms_u, rms_u, rtol=0, atol=1e-12)
    rms_v = (p ** 2 * (e1 ** 2 + e2 ** 2 + 2 * e1 * e2 * beat) / 2).sqrt()
    assert torch.allclose(profiles.rms_v, rms_v, rtol=0, atol=1e-12)
    stress = -p * (e1 ** 2 * q1 + e2 ** 2 * q2 + e1 * e2 * (q1 + q2) * beat) / 2
    assert torch.allclose(profiles.reynolds_stress, stress, rtol=0, atol=1e-12)
