"""Oracle tests (docs/design.md) of IGSO(3) (flowsci.spaces.igso3), sampled as in FoldFlow
(Bose et al., ICLR 2024).

The oracles: scipy.integrate.quad of the angle density (normalisation, CDF, second moment),
the KS test of sampled angles (measured by scipy's Rotation) against that quadrature CDF, the
Haar density for large sigma, the Gaussian N(0, sigma^2 I) on the rotation vector for small sigma,
a Monte Carlo integral of exp(log_prob) against uniform rotations, and the agreement of the two
independent forms of the heat kernel (character series and its Poisson resummation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.interpolate
import scipy.stats
import torch
from scipy.spatial.transform import Rotation

from flowsci.spaces.igso3 import IGSO3, haar_angle_density, series_l_max
from flowsci.spaces.rotations import matrix_to_quaternion, quat_to_matrix, rotvec_to_matrix
from flowsci.spaces.so3 import SO3Matrix

F64 = torch.float64


def density(ig: IGSO3):
    return lambda w: float(ig.angle_density(torch.tensor(w, dtype=F64)))


def support(sigma: float) -> float:
    return min(math.pi, 12 * sigma)


def quad_cdf(ig: IGSO3, nodes: np.ndarray) -> np.ndarray:
    """P(angle <= node) by adaptive quadrature between consecutive nodes (nodes[0] = 0)."""
    pieces = [scipy.integrate.quad(density(ig), a, b)[0] for a, b in zip(nodes[:-1], nodes[1:])]
    return np.concatenate([[0.0], np.cumsum(pieces)])


def angles_of(x: torch.Tensor) -> np.ndarray:
    matrices = x if x.shape[-2:] == (3, 3) else quat_to_matrix(x)
    return Rotation.from_matrix(matrices.to(F64).numpy()).magnitude()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "0.5", True])
def test_sigma_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="sigma"):
        IGSO3(bad)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="l_max"):
        IGSO3(0.5, l_max=-1)
    with pytest.raises(ValueError, match="l_max"):
        IGSO3(0.5, l_max=2.5)
    ig = IGSO3(0.5)
    with pytest.raises(ValueError, match="chart"):
        ig.sample(3, chart="euler")
    with pytest.raises(ValueError, match="mean"):
        ig.sample(3, mean=torch.eye(3), chart="quaternion")
    with pytest.raises(ValueError, match="x must be"):
        ig.log_prob(torch.zeros(5, 3))


@pytest.mark.parametrize("sigma,l_max", [(0.02, None), (0.1, None), (0.5, None), (1.5, None), (4.0, None),
                                         (0.7, 60)])
def test_angle_density_integrates_to_one(sigma, l_max):
    ig = IGSO3(sigma, l_max)
    mass, _ = scipy.integrate.quad(density(ig), 0, math.pi, points=[sigma] if sigma < 1 else None, limit=200)
    assert mass == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("sigma", [0.5, 0.8, 0.99])
def test_series_and_resummed_forms_agree(sigma):
    omega = torch.linspace(0, math.pi, 1001, dtype=F64)
    resummed, series = IGSO3(sigma), IGSO3(sigma, l_max=80)
    assert resummed.form == "resummed" and series.form == "series"
    torch.testing.assert_close(resummed.angle_density(omega), series.angle_density(omega), rtol=0, atol=1e-11)


def test_automatic_l_max_drops_less_than_1e_10():
    """At omega = 0 every character is maximal (chi_l(0) = 2l + 1): f(0) = exp(log_prob(I)) 8 pi^2
    shows the whole dropped tail, which must be below 1e-10 for l_max and not for l_max - 1."""
    identity = torch.eye(3, dtype=F64)

    def f0(ig: IGSO3) -> float:
        return float(ig.log_prob(identity).exp() * 8 * math.pi ** 2)

    for sigma in (1.0, 1.5, 3.0):
        auto = IGSO3(sigma)
        assert auto.l_max == series_l_max(sigma) and auto.l_max > 0
        exact = f0(IGSO3(sigma, l_max=auto.l_max + 40))
        assert abs(f0(auto) - exact) < 1e-10
        assert abs(f0(IGSO3(sigma, l_max=auto.l_max - 1)) - exact) > 1e-10


def test_small_sigma_tails_stay_positive():
    """The resummed form keeps f > 0 where the series is lost to cancellation (f(pi) ~ 1e-86 at
    sigma = 0.1): log_prob stays finite and decreasing in the angle."""
    ig = IGSO3(0.1)
    angles = torch.linspace(0.5, math.pi, 50, dtype=F64)
    log_p = ig.log_prob(rotvec_to_matrix(angles.unsqueeze(-1) * torch.tensor([0.0, 0.6, 0.8], dtype=F64)))
    assert torch.isfinite(log_p).all() and (log_p.diff() < 0).all()


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.5])
def test_angle_cdf_and_samples_match_the_quadrature_cdf(sigma):
    ig = IGSO3(sigma)
    nodes = np.linspace(0, support(sigma), 201)
    cdf = quad_cdf(ig, nodes)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(ig.angle_cdf(torch.tensor(nodes)).numpy(), cdf, rtol=0, atol=1e-7)
    reference = scipy.interpolate.PchipInterpolator(nodes, cdf)
    generator = torch.Generator().manual_seed(int(100 * sigma))
    for chart in ("matrix", "quaternion"):
        angles = angles_of(ig.sample(20000, generator=generator, dtype=F64, chart=chart))
        assert scipy.stats.kstest(angles, lambda w: reference(np.minimum(w, nodes[-1]))).pvalue > 1e-3
    assert ig.angle_cdf(torch.tensor(math.pi)) == pytest.approx(1.0)


def test_sampling_around_a_mean():
    ig = IGSO3(0.3)
    generator = torch.Generator().manual_seed(5)
    mean = torch.tensor(Rotation.random(random_state=5).as_matrix())
    R = ig.sample(20000, mean=mean, generator=generator, dtype=F64)
    angles = Rotation.from_matrix((mean.T @ R).numpy()).magnitude()
    nodes = np.linspace(0, support(0.3), 201)
    reference = scipy.interpolate.PchipInterpolator(nodes, quad_cdf(ig, nodes))
    assert scipy.stats.kstest(angles, lambda w: reference(np.minimum(w, nodes[-1]))).pvalue > 1e-3
    # the quaternion chart composes on the same side: the same draws give the same rotations
    q = ig.sample(4, mean=matrix_to_quaternion(mean), generator=torch.Generator().manual_seed(6),
                  chart="quaternion", dtype=F64)
    R4 = ig.sample(4, mean=mean, generator=torch.Generator().manual_seed(6), dtype=F64)
    torch.testing.assert_close(quat_to_matrix(q), R4)


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_small_sigma_is_gaussian_on_the_rotation_vector(sigma):
    """E|omega|^2 = 3 sigma^2 (1 + O(sigma^2)), component covariance sigma^2 I, and log_prob is the
    Gaussian log density N(0, sigma^2 I_3) of the rotation vector."""
    ig = IGSO3(sigma)
    second, _ = scipy.integrate.quad(lambda w: w * w * density(ig)(w), 0, support(sigma), points=[sigma])
    assert second / (3 * sigma ** 2) == pytest.approx(1.0, abs=sigma ** 2)
    rotvec = torch.tensor(Rotation.from_matrix(ig.sample(
        20000, generator=torch.Generator().manual_seed(7), dtype=F64).numpy()).as_rotvec())
    covariance = rotvec.T @ rotvec / len(rotvec) / sigma ** 2
    torch.testing.assert_close(covariance, torch.eye(3, dtype=F64), rtol=0, atol=0.05)
    w = sigma * torch.randn(100, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    gaussian = -(w * w).sum(-1) / (2 * sigma ** 2) - 1.5 * math.log(2 * math.pi * sigma ** 2)
    torch.testing.assert_close(ig.log_prob(rotvec_to_matrix(w)), gaussian, rtol=0, atol=10 * sigma ** 2)


def test_large_sigma_approaches_haar():
    omega = torch.linspace(0, math.pi, 1001, dtype=F64)
    torch.testing.assert_close(IGSO3(10.0).angle_density(omega), (1 - torch.cos(omega)) / math.pi,
                               rtol=0, atol=1e-12)
    gap = [(IGSO3(s).angle_density(omega) - haar_angle_density(omega)).abs().max() for s in (1.0, 2.0, 3.0)]
    assert gap[0] > gap[1] > gap[2] > 0
    R = SO3Matrix().random_base(10, generator=torch.Generator().manual_seed(9), dtype=F64)
    torch.testing.assert_close(IGSO3(10.0).log_prob(R),
                               torch.full((10,), -math.log(8 * math.pi ** 2), dtype=F64))


@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_log_prob_integrates_to_one_over_so3(sigma):
    """E_haar[p(R)] * 8 pi^2 = 1, within 5 standard errors of the Monte Carlo estimate."""
    R = SO3Matrix().random_base(100000, generator=torch.Generator().manual_seed(10), dtype=F64)
    weights = IGSO3(sigma).log_prob(R).exp() * 8 * math.pi ** 2
    standard_error = weights.std() / math.sqrt(len(weights))
    assert abs(weights.mean() - 1) < 5 * standard_error
    assert standard_error < 0.02


def test_log_prob_is_chart_and_mean_invariant_and_keeps_dtype():
    ig = IGSO3(0.4)
    generator = torch.Generator().manual_seed(11)
    R = ig.sample(50, generator=generator, dtype=F64)
    M = SO3Matrix().random_base(50, generator=generator, dtype=F64)
    torch.testing.assert_close(ig.log_prob(M @ R, M), ig.log_prob(R))
    torch.testing.assert_close(ig.log_prob(matrix_to_quaternion(M @ R), matrix_to_quaternion(M)),
                               ig.log_prob(R))
    torch.testing.assert_close(ig.log_prob(-matrix_to_quaternion(R)), ig.log_prob(R))
    assert ig.log_prob(R.float()).dtype == torch.float32
    assert ig.sample(3, generator=generator).dtype == torch.float32
    assert ig.sample_angles(5, generator).dtype == F64
