"""Oracle tests of the sample metrics (docs/design.md): assignment solvers, sorted
samples in 1-D and scipy, the Gaussian (Bures) closed form, kernel closed forms, Monte-Carlo
variances derived below, and the straightness of paths whose integral is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats
import torch
from scipy.spatial.distance import cdist

from flowsci.couplings import OTCoupling
from flowsci.metrics import mmd_rbf, psnr, sliced_wasserstein, straightness, transport_cost, wasserstein

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- Wasserstein ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3)])
def test_wasserstein_equals_brute_force_assignment(p: int, shape: tuple[int, ...]) -> None:
    """Equal sizes, uniform weights: the LP optimum is attained at a permutation."""
    g = _gen(p * 10 + len(shape))
    x = torch.randn(70, *shape, generator=g, dtype=F64)
    y = 1.3 * torch.randn(70, *shape, generator=g, dtype=F64) - 0.4
    cost = cdist(x.flatten(1).numpy(), y.flatten(1).numpy()) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    assert wasserstein(x, y, p) == pytest.approx(cost[rows, cols].mean() ** (1 / p), rel=1e-10)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_1d_equals_the_sorted_sample_formula(p: int) -> None:
    g = _gen(20 + p)
    x = torch.randn(400, 1, generator=g, dtype=F64)
    y = torch.rand(400, 1, generator=g, dtype=F64) * 3 - 0.5
    sorted_wp = float((x.flatten().sort().values - y.flatten().sort().values).abs().pow(p).mean()) ** (1 / p)
    assert wasserstein(x, y, p) == pytest.approx(sorted_wp, rel=1e-10)


def test_wasserstein_2_equals_bures_for_samples_related_by_the_gaussian_ot_map() -> None:
    """x: a sample whose mean and covariance are exactly m1, S1 (whitened); y = m2 + T(x - m1)
    with T = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2, the Gaussian OT map, so y has mean m2
    and covariance T S1 T = S2. T is symmetric positive definite, the gradient of a convex
    function, so the identity pairing is cyclically monotone, hence optimal, for the
    empirical measures; its cost is |m1 - m2|^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2)
    exactly (only first and second sample moments enter). Non-commuting S1, S2."""
    n = 300
    z = torch.randn(n, 2, generator=_gen(30), dtype=F64).numpy()
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
    m1, m2 = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    s1 = np.array([[2.0, 0.6], [0.6, 0.5]])
    s2 = np.array([[0.7, -0.3], [-0.3, 1.5]])
    r1 = scipy.linalg.sqrtm(s1).real
    r1_inv = np.linalg.inv(r1)
    t = r1_inv @ scipy.linalg.sqrtm(r1 @ s2 @ r1).real @ r1_inv
    x = m1 + z @ r1.T
    y = m2 + (x - m1) @ t.T
    r2 = scipy.linalg.sqrtm(s2).real
    bures2 = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r2 @ s1 @ r2).real)
    assert wasserstein(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(math.sqrt(bures2), rel=1e-9)


def test_wasserstein_1d_unequal_sizes_matches_scipy() -> None:
    g = _gen(31)
    x = torch.randn(150, 1, generator=g, dtype=F64)
    y = torch.randn(230, 1, generator=g, dtype=F64) * 0.5 + 1.0
    reference = scipy.stats.wasserstein_distance(x.flatten().numpy(), y.flatten().numpy())
    assert wasserstein(x, y, p=1) == pytest.approx(reference, rel=1e-9)


def test_wasserstein_unequal_sizes_is_symmetric_and_permutation_invariant() -> None:
    g = _gen(32)
    x = torch.randn(80, 3, generator=g, dtype=F64)
    y = torch.randn(50, 3, generator=g, dtype=F64) + 1
    for p in (1, 2):
        assert wasserstein(x, y, p) == pytest.approx(wasserstein(y, x, p), rel=1e-10)
        assert wasserstein(x, y, p) == pytest.approx(wasserstein(x[torch.randperm(80, generator=g)], y, p),
                                                     rel=1e-10)


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_of_identical_sets_is_zero(p: int) -> None:
    """An exact LP on the |x - y|^p cost gives exactly 0 on identical sets (the diagonal
    cost is 0), for both a shared tensor and a copy. Points of moderate size (|x| ~ 20): a
    cost from |x|^2 + |y|^2 - 2 x.y leaves rounding ~1e-13 on the diagonal, i.e. ~3e-7 after
    the square root."""
    x = 3 * torch.randn(100, 2, generator=_gen(33), dtype=F64) + 20
    assert wasserstein(x, x, p) < 1e-12
    assert wasserstein(x, x.clone(), p) < 1e-12


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_of_a_translate_is_the_shift(p: int) -> None:
    """W_p(mu, mu + v) = |v| for every p >= 1 (identity coupling; Jensen + the dual bound).
    The cloud sits at an offset of 1e4 with spread ~1 and |v| = 1e-3: a cost built from
    differences x - y is exact to ~1e-12 here; one built from |x|^2 + |y|^2 - 2 x.y loses
    about eps * |x|^2 = 2e-8 in each squared distance and cannot resolve |v|^2 = 1e-6."""
    x = torch.randn(100, 2, generator=_gen(34), dtype=F64) + 1e4
    v = torch.tensor([6e-4, -8e-4], dtype=F64)
    assert wasserstein(x, x + v, p) == pytest.approx(1e-3, rel=1e-6)
    assert wasserstein(x - 1e4, x - 1e4 + v, p) == pytest.approx(1e-3, rel=1e-6)   # at the origin


def test_wasserstein_rejects_p_below_one() -> None:
    with pytest.raises(ValueError, match="p must be"):
        wasserstein(torch.randn(3, 2), torch.randn(3, 2), p=0)


# --- sliced Wasserstein --------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_in_1d_is_wasserstein(p: int) -> None:
    """In R^1 every unit direction is +-1 and W_p is invariant under x -> -x, so SW_p = W_p."""
    g = _gen(40 + p)
    x = torch.randn(300, 1, generator=g, dtype=F64)
    y = 2 * torch.rand(300, 1, generator=g, dtype=F64)
    assert sliced_wasserstein(x, y, n_projections=7, p=p) == pytest.approx(wasserstein(x, y, p), rel=1e-9)


def test_sliced_wasserstein_of_a_translate() -> None:
    """y = x + v: on direction theta the projected measures differ by the shift theta.v, so
    W2^2 = (theta.v)^2 and SW2^2 = E (theta.v)^2 = |v|^2 / d for theta uniform on S^(d-1).
    Monte-Carlo error: Var (theta.v)^2 / |v|^4 = E theta_1^4 - 1/d^2 = 3/(d(d+2)) - 1/d^2
    (0.0889 for d = 3); with K = 4000 directions the standard error of SW2^2 / |v|^2 is
    0.0047 and the tolerance is 4 of them."""
    d, k = 3, 4000
    x = torch.randn(200, d, generator=_gen(43), dtype=F64)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    sw2 = sliced_wasserstein(x, x + v, n_projections=k, p=2)
    v2 = float(v.pow(2).sum())
    sigma = math.sqrt((3 / (d * (d + 2)) - 1 / d**2) / k)
    assert abs(sw2**2 / v2 - 1 / d) < 4 * sigma      # (returning SW2^2 would give 0.58)


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_is_below_wasserstein(p: int) -> None:
    """theta.x is 1-Lipschitz, so W_p(theta#mu, theta#nu) <= W_p(mu, nu) on every direction."""
    g = _gen(44 + p)
    x = torch.randn(120, 2, 3, generator=g, dtype=F64)
    y = torch.randn(120, 2, 3, generator=g, dtype=F64) * 0.5 + 1
    assert 0 < sliced_wasserstein(x, y, p=p) <= wasserstein(x, y, p)


def test_sliced_wasserstein_is_seeded_and_leaves_numpy_rng_alone() -> None:
    g = _gen(46)
    x, y = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g) + 1
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    first = sliced_wasserstein(x, y, seed=5)
    assert np.array_equal(np.random.get_state()[1], state)
    assert sliced_wasserstein(x, y, seed=5) == first
    assert sliced_wasserstein(x, y, seed=6) != first


# --- MMD -----------------------------------------------------------------------------------


def test_mmd_is_zero_on_identical_samples_and_symmetric() -> None:
    g = _gen(50)
    x = torch.randn(200, 3, generator=g, dtype=F64) + 10
    y = torch.randn(150, 3, generator=g, dtype=F64) + 10.3
    assert mmd_rbf(x, x) == 0.0
    assert mmd_rbf(x, x.clone()) == 0.0
    assert mmd_rbf(x, x[torch.randperm(200, generator=g)]) < 1e-7   # order does not matter
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(y, x), rel=1e-12)


def test_mmd_between_two_points_closed_form() -> None:
    """One point each: MMD^2 = k(a, a) + k(b, b) - 2 k(a, b) = 2 (1 - k(a, b)), with the
    kernel averaged over the bandwidths."""
    a = torch.tensor([[0.0, 1.0]], dtype=F64)
    b = torch.tensor([[0.6, 1.8]], dtype=F64)                        # |a - b| = 1
    kernel = np.mean([math.exp(-1 / (2 * h * h)) for h in (0.5, 2.0)])
    assert mmd_rbf(a, b, bandwidths=(0.5, 2.0)) == pytest.approx(math.sqrt(2 * (1 - kernel)), rel=1e-12)


def test_mmd_of_gaussian_samples_matches_the_population_value_plus_bias() -> None:
    """X ~ N(0, s^2 I_d), Y ~ N(delta, s^2 I_d), kernel exp(-|.|^2 / (2 h^2)):
    E k(X, X') = c = (h^2 / (h^2 + 2 s^2))^(d/2), E k(X, Y) = c exp(-|delta|^2 / (2 (h^2 + 2 s^2))).
    The V-statistic includes the diagonal k = 1, so E[MMD^2] = 2c - 2 E k(X, Y)
    + (1/n + 1/m)(1 - c), averaged over the bandwidths. Its standard deviation for n = m = 1000
    is 0.0045 (0.0064 measured over 200 seeds at n = 500, scaled by 1/sqrt(2)); tolerance 4 sd."""
    n, d, s = 1000, 2, 1.0
    delta = torch.tensor([1.0, 0.0], dtype=F64)
    g = _gen(51)
    x = s * torch.randn(n, d, generator=g, dtype=F64)
    y = s * torch.randn(n, d, generator=g, dtype=F64) + delta
    h = np.array([0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    cross = c * np.exp(-float(delta @ delta) / (2 * (h**2 + 2 * s**2)))
    expected = float(np.mean(2 * c - 2 * cross + (2 / n) * (1 - c)))
    assert abs(mmd_rbf(x, y) ** 2 - expected) < 4 * 0.0045


def test_mmd_grows_with_the_shift() -> None:
    x = torch.randn(300, 2, generator=_gen(52), dtype=F64)
    values = [mmd_rbf(x, x + torch.tensor([a, 0.0], dtype=F64)) for a in (0.1, 0.3, 1.0, 3.0)]
    assert 0 < values[0] and all(b > a for a, b in zip(values, values[1:]))


def test_mmd_rejects_bad_bandwidths() -> None:
    for bad in ((), (1.0, 0.0)):
        with pytest.raises(ValueError, match="bandwidths"):
            mmd_rbf(torch.randn(3, 2), torch.randn(3, 2), bandwidths=bad)


# --- transport cost ------------------------------------------------------------------------


def test_transport_cost_of_a_known_pairing() -> None:
    x0 = torch.zeros(2, 2, 2, dtype=F64)
    x1 = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [1.0, 0.0]]], dtype=F64)
    assert transport_cost(x0, x1) == pytest.approx((25.0 + 1.0) / 2, rel=1e-15)
    v = torch.tensor([0.3, -0.4], dtype=F64)
    x = torch.randn(50, 2, generator=_gen(60), dtype=F64)
    assert transport_cost(x, x + v) == pytest.approx(0.25, rel=1e-12)


def test_transport_cost_of_an_optimal_pairing_is_w2_squared() -> None:
    """E|X1 - X0|^2 >= W2^2 for any pairing, with equality for an optimal one."""
    g = _gen(61)
    x0, x1 = torch.randn(80, 3, generator=g, dtype=F64), torch.randn(80, 3, generator=g, dtype=F64) + 1
    y0, y1, _ = OTCoupling()(x0, x1, {})
    w2 = wasserstein(x0, x1)
    assert transport_cost(y0, y1) == pytest.approx(w2**2, rel=1e-10)
    assert transport_cost(x0, x1) > w2**2


def test_transport_cost_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        transport_cost(torch.randn(4, 2), torch.randn(5, 2))


# --- straightness --------------------------------------------------------------------------


def test_straightness_is_zero_for_straight_constant_speed_paths() -> None:
    t = torch.linspace(0, 1, 51, dtype=F64)[:, None, None]
    g = _gen(70)
    x0, x1 = torch.randn(1, 6, 3, generator=g, dtype=F64), torch.randn(1, 6, 3, generator=g, dtype=F64)
    assert straightness((1 - t) * x0 + t * x1) < 1e-20


def test_straightness_of_a_straight_but_accelerating_path() -> None:
    """x(t) = t^2 v: S = int_0^1 |2 t v - v|^2 dt = |v|^2 / 3 (a straight line is not enough)."""
    n = 2000
    t = torch.linspace(0, 1, n + 1, dtype=F64)[:, None, None]
    v = torch.tensor([[[1.0, 2.0]]], dtype=F64)
    # increments/dt equal x'(t) at the midpoints exactly for a quadratic; the midpoint rule on
    # (2t - 1)^2 then errs by -h^2/3, a relative error h^2 = 2.5e-7 here
    assert straightness(t ** 2 * v) == pytest.approx(5.0 / 3.0, rel=1e-6)


def test_straightness_of_a_quarter_circle() -> None:
    """x(t) = r (cos(pi t/2), sin(pi t/2)): |x'|^2 = r^2 pi^2/4, x1 - x0 = r(-1, 1) and
    int x'.(x1 - x0) dt = |x1 - x0|^2, so S = r^2 (pi^2/4 - 2); averaged over two radii."""
    n = 1000
    t = torch.linspace(0, 1, n + 1, dtype=F64)
    unit = torch.stack([torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)], dim=-1)  # (n+1, 2)
    radii = torch.tensor([1.0, 2.0], dtype=F64)
    trajectory = unit[:, None, :] * radii[None, :, None]                                 # (n+1, 2, 2)
    expected = float((radii ** 2).mean()) * (math.pi ** 2 / 4 - 2)
    assert straightness(trajectory) == pytest.approx(expected, rel=1e-5)
    # a coarse grid converges to the same value (second order in h)
    assert abs(straightness(trajectory[::100]) - expected) / expected < 0.05


def test_straightness_needs_two_states() -> None:
    with pytest.raises(ValueError, match="at least two states"):
        straightness(torch.zeros(1, 3, 2))


def test_psnr_matches_scikit_image_per_sample() -> None:
    from skimage.metrics import peak_signal_noise_ratio  # the images extra (make install)

    g = torch.Generator().manual_seed(0)
    reference = torch.rand(5, 1, 7, 6, generator=g) * 2 - 1
    x = reference + 0.1 * torch.randn(reference.shape, generator=g)
    expected = [peak_signal_noise_ratio(r.numpy(), y.numpy(), data_range=2.0)
                for r, y in zip(reference, x)]
    assert torch.allclose(psnr(x, reference, data_range=2.0), torch.tensor(expected, dtype=torch.float64))
    assert torch.isinf(psnr(reference, reference)).all()
    with pytest.raises(ValueError, match="one shape"):
        psnr(x[:2], reference)

