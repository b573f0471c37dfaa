"""Training-time samplers, the SD3 shift and sampling time grids.

Oracles: the densities and sampling recipes of the papers, typed here in the papers' own
convention (tau = 1 - t, tau = 1 noise) from SD3 (Esser et al. 2024, §3.1 and the resolution
shift) and 2-RF++ (Lee, Lin & Fanti 2024, the U-shaped density) and mapped to ours
(t = 1 - tau); KS tests against the analytic CDFs; numerical integration of the densities;
the EDM noise-level formula of Karras et al. (2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

from flowsci.grids import EDMGrid, ShiftedGrid, UniformGrid, edm_grid, reverse, shifted_grid, uniform_grid
from flowsci.registry import Registry
from flowsci.solvers import Euler
from flowsci.timesteps import (
    MODE_SCALE_MAX,
    CosMapTime,
    DiscreteTime,
    LogitNormalTime,
    ModeTime,
    TimeSampler,
    UniformTime,
    UShapedTime,
    shift_time,
)

F64 = torch.float64
N_KS = 20_000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the papers' formulas, in their convention (tau = 1 noise) -------------------------------


def sd3_shift(tau: np.ndarray | float, alpha: float) -> np.ndarray | float:
    """SD3 (Esser et al. 2024): tau_m = alpha tau_n / (1 + (alpha - 1) tau_n)."""
    return alpha * tau / (1 + (alpha - 1) * tau)


def sd3_unshift(tau_m: float, alpha: float) -> float:
    """Inverse of sd3_shift, solved by hand: tau_n = tau_m / (alpha - (alpha - 1) tau_m)."""
    return tau_m / (alpha - (alpha - 1) * tau_m)


def logit_normal_density(m: float, s: float) -> Callable[[float], float]:
    def p(tau: float) -> float:
        logit = math.log(tau / (1 - tau))
        return math.exp(-(logit - m) ** 2 / (2 * s * s)) / (s * math.sqrt(2 * math.pi) * tau * (1 - tau))
    return p


def mode_map(s: float) -> Callable[[float], float]:
    """SD3's f_mode(u; s) = 1 - u - s (cos^2(pi u / 2) - 1 + u), decreasing from 1 to 0."""
    return lambda u: 1 - u - s * (math.cos(math.pi * u / 2) ** 2 - 1 + u)


def mode_density(s: float) -> Callable[[float], float]:
    """|d f^{-1} / d tau|: f^{-1} by Brent's method, f' differentiated by hand."""
    f = mode_map(s)

    def p(tau: float) -> float:
        u = scipy.optimize.brentq(lambda v: f(v) - tau, 0.0, 1.0, xtol=1e-15)
        return 1.0 / abs(-1 - s * (-math.pi / 2 * math.sin(math.pi * u) + 1))
    return p


def cosmap_density(tau: float) -> float:
    return 2 / (math.pi - 2 * math.pi * tau + 2 * math.pi * tau * tau)


def u_shaped_density(a: float) -> Callable[[float], float]:
    return lambda tau: a * math.cosh(a * (tau - 0.5)) / (2 * math.sinh(a / 2))


def ours(density_tau: Callable[[float], float], shift: float = 1.0) -> Callable[[float], float]:
    """Density of t = 1 - tau when tau is drawn from density_tau and then SD3-shifted."""
    def p(t: float) -> float:
        tau_m = 1 - t
        tau_n = sd3_unshift(tau_m, shift)
        jacobian = shift / (shift - (shift - 1) * tau_m) ** 2     # d tau_n / d tau_m
        return density_tau(tau_n) * jacobian
    return p


# (sampler, density of t in our convention, sampling recipe of the paper -> numpy t)
def _ln_recipe(m: float, s: float, shift: float = 1.0) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: 1 - sd3_shift(1 / (1 + np.exp(-rng.normal(m, s, n))), shift)


def _mode_recipe(s: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    f = np.vectorize(mode_map(s))
    return lambda rng, n: 1 - f(rng.uniform(size=n))


def _cosmap_recipe(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.uniform(size=n)
    return 1 - (1 - 1 / (np.tan(np.pi * u / 2) + 1))


def _u_shaped_recipe(a: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    """2-RF++'s t_dist.py: density a e^{a x} / (e^a - 1) on [0, 1], mixed 50/50 with 1 - x."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        x = np.log1p(rng.uniform(size=n) * np.expm1(a)) / a      # inverse CDF of that density
        return np.where(rng.uniform(size=n) < 0.5, x, 1 - x)
    return draw


CASES = {
    "uniform": (UniformTime(), ours(lambda tau: 1.0), lambda rng, n: rng.uniform(size=n)),
    "uniform_shift3": (UniformTime(shift=3.0), ours(lambda tau: 1.0, 3.0),
                       lambda rng, n: 1 - sd3_shift(rng.uniform(size=n), 3.0)),
    "logit_normal": (LogitNormalTime(), ours(logit_normal_density(0, 1)), _ln_recipe(0, 1)),
    "logit_normal_m.5_s.6": (LogitNormalTime(0.5, 0.6), ours(logit_normal_density(0.5, 0.6)),
                             _ln_recipe(0.5, 0.6)),
    "logit_normal_shift3": (LogitNormalTime(-0.3, 1.2, shift=3.0),
                            ours(logit_normal_density(-0.3, 1.2), 3.0), _ln_recipe(-0.3, 1.2, 3.0)),
    "mode_1.29": (ModeTime(1.29), ours(mode_density(1.29)), _mode_recipe(1.29)),
    "mode_-0.8": (ModeTime(-0.8), ours(mode_density(-0.8)), _mode_recipe(-0.8)),
    "cosmap": (CosMapTime(), ours(cosmap_density), _cosmap_recipe),
    "u_shaped_4": (UShapedTime(4.0), ours(u_shaped_density(4.0)), _u_shaped_recipe(4.0)),
    "u_shaped_2_shift0.5": (UShapedTime(2.0, shift=0.5), ours(u_shaped_density(2.0), 0.5),
                            lambda rng, n: 1 - sd3_shift(1 - _u_shaped_recipe(2.0)(rng, n), 0.5)),
}


@pytest.mark.parametrize("name", CASES)
def test_sampler_matches_its_cdf_ks(name: str) -> None:
    sampler = CASES[name][0]
    t = sampler(N_KS, generator=_gen(7)).double().numpy()
    assert scipy.stats.kstest(t, sampler.cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_sampler_matches_the_papers_sampling_recipe(name: str) -> None:
    """Two-sample KS against the paper's recipe run in its own convention and mapped."""
    sampler, _, recipe = CASES[name]
    ours_t = sampler(N_KS, generator=_gen(8)).double().numpy()
    theirs = recipe(np.random.default_rng(8), N_KS)
    assert scipy.stats.ks_2samp(ours_t, theirs).pvalue > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_cdf_is_the_integral_of_the_papers_density(name: str) -> None:
    sampler, density, _ = CASES[name]
    points = np.array([0.03, 0.2, 0.5, 0.71, 0.96])
    integrals = [scipy.integrate.quad(density, 0.0, x, epsabs=1e-11, epsrel=1e-10, limit=200)[0]
                 for x in points]
    np.testing.assert_allclose(sampler.cdf(points), integrals, rtol=0, atol=1e-8)
    assert sampler.cdf(np.array([0.0]))[0] == pytest.approx(0.0, abs=1e-12)
    assert sampler.cdf(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_quantile_is_increasing_and_inverts_the_cdf(name: str) -> None:
    sampler = CASES[name][0]
    u = torch.linspace(0.001, 0.999, 999, dtype=F64)
    t = sampler.quantile(u)
    assert bool((t.diff() > 0).all())
    torch.testing.assert_close(sampler.cdf(t), u, rtol=0, atol=1e-9)


def test_ks_has_power_against_a_mirrored_sampler() -> None:
    """Times of logit-normal(m=0.5) tested against m=-0.5 (the wrong convention) fail."""
    t = LogitNormalTime(0.5, 0.6)(N_KS, generator=_gen(1)).double().numpy()
    assert scipy.stats.kstest(t, LogitNormalTime(-0.5, 0.6).cdf).pvalue < 1e-10
    t = ModeTime(1.29)(N_KS, generator=_gen(1)).double().numpy()
    assert scipy.stats.kstest(t, ModeTime(1.0).cdf).pvalue < 1e-6


def test_logit_normal_positive_m_biases_toward_the_source() -> None:
    """SD3: m > 0 is noisier; in our convention noise is t = 0."""
    t = LogitNormalTime(1.0, 1.0)(N_KS, generator=_gen(2))
    assert float(t.mean()) < 0.4
    assert float(LogitNormalTime(1.0, 1.0).cdf(torch.tensor(0.5, dtype=F64))) > 0.8


def test_mode_cdf_inverts_the_papers_map() -> None:
    """cdf(1 - f_mode(u)) = u, including at both ends of the monotone range, where f' vanishes
    (s = 2/(pi-2): f is cubic around u = 1/2, a rounding error eps in t becomes eps^(1/3) ~ 1e-6
    in u; s = -1: quadratic at u = 0 and 1, eps^(1/2) ~ 1e-8)."""
    for s, atol in ((-1.0, 1e-7), (-0.4, 1e-12), (0.0, 1e-12), (1.29, 1e-12), (MODE_SCALE_MAX, 2e-5)):
        u = np.linspace(0, 1, 41)
        t = 1 - np.array([mode_map(s)(v) for v in u])
        np.testing.assert_allclose(ModeTime(s).cdf(t), u, rtol=0, atol=atol)


def test_mode_scale_bound_is_the_monotone_range() -> None:
    u = np.linspace(0, 1, 20_001)
    for s, monotone in ((MODE_SCALE_MAX, True), (MODE_SCALE_MAX + 0.01, False), (-1.0, True),
                        (-1.01, False)):
        f = np.array([mode_map(s)(v) for v in u])
        assert bool((np.diff(f) <= 1e-15).all()) == monotone
        if monotone:
            ModeTime(s)
        else:
            with pytest.raises(ValueError, match="s must lie in"):
                ModeTime(s)
    with pytest.raises(ValueError, match="s must lie in"):
        ModeTime(1.9)      # the reference's non-monotone example
    assert MODE_SCALE_MAX == pytest.approx(1.752, abs=1e-3)


def test_u_shaped_reference_values() -> None:
    """2-RF++ (Lee, Lin & Fanti 2024), a = 4: density about 2.07 at the ends, 0.55 in the middle."""
    cdf = UShapedTime(4.0).cdf
    h = 1e-6
    for t, p in ((h, 2.07), (0.5, 0.55), (1 - h, 2.07)):
        slope = (cdf(torch.tensor(t + h, dtype=F64)) - cdf(torch.tensor(t - h, dtype=F64))) / (2 * h)
        assert float(slope) == pytest.approx(p, abs=0.005)


def test_cosmap_is_uniform_in_its_angle() -> None:
    """SD3's map t = 1 - 1 / (tan(pi u / 2) + 1) sends u = k/8 to known times; cdf returns u."""
    u = np.arange(1, 8) / 8
    t = 1 - 1 / (np.tan(np.pi * u / 2) + 1)
    np.testing.assert_allclose(CosMapTime().cdf(t), u, atol=1e-14)


ALL = [UniformTime(), LogitNormalTime(0.5, 0.6, shift=2.0), ModeTime(), CosMapTime(), UShapedTime(),
       UShapedTime(60.0), DiscreteTime([0.0, 0.5, 1.0]), LogitNormalTime(0.0, 8.0)]


@pytest.mark.parametrize("sampler", ALL, ids=repr)
def test_sampler_range_shape_dtype_device(sampler: TimeSampler) -> None:
    t = sampler(5_000, generator=_gen(3))
    assert t.shape == (5_000,) and t.dtype == torch.get_default_dtype() and t.device.type == "cpu"
    assert bool(((t >= 0) & (t <= 1)).all())
    assert sampler(0).shape == (0,)
    assert sampler(4, device=torch.device("cpu")).device.type == "cpu"
    u = torch.tensor([0.0, 1.0], dtype=F64)
    ends = sampler.quantile(u)
    assert bool(((ends >= 0) & (ends <= 1)).all())


@pytest.mark.parametrize("sampler", ALL, ids=repr)
def test_sampler_reproducible_with_a_generator(sampler: TimeSampler) -> None:
    a, b = sampler(200, generator=_gen(11)), sampler(200, generator=_gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler(200, generator=_gen(12)))


def test_sampler_follows_the_default_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        assert LogitNormalTime()(3).dtype == F64
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("n", [-1, 2.5, True, "3"])
def test_sampler_rejects_bad_n(n: object) -> None:
    with pytest.raises(ValueError, match="n must be"):
        UniformTime()(n)  # type: ignore[arg-type]


@pytest.mark.parametrize("build, match", [
    (lambda: LogitNormalTime(s=0.0), "s must be"),
    (lambda: LogitNormalTime(s=-1.0), "s must be"),
    (lambda: LogitNormalTime(m=math.inf), "m must be"),
    (lambda: ModeTime(math.nan), "s must lie"),
    (lambda: UShapedTime(0.0), "a must lie"),
    (lambda: UShapedTime(-2.0), "a must lie"),
    (lambda: UShapedTime(2000.0), "a must lie"),
    (lambda: DiscreteTime([]), "values must be"),
    (lambda: DiscreteTime([0.2, 1.5]), "values must"),
    (lambda: DiscreteTime("0.5"), "values must be"),   # type: ignore[arg-type]
    (lambda: DiscreteTime(0.5), "values must be"),     # type: ignore[arg-type]
    (lambda: UniformTime(shift=0.0), "shift must be"),
    (lambda: CosMapTime(shift=-3.0), "shift must be"),
    (lambda: ModeTime(shift=math.inf), "shift must be"),
    (lambda: UShapedTime(shift=math.nan), "shift must be"),
])
def test_sampler_parameter_validation(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


# --- discrete times --------------------------------------------------------------------------


def test_discrete_time_is_a_uniform_choice() -> None:
    values = [0.0, 0.25, 0.5, 0.75]          # 4-step distillation times
    t = DiscreteTime(values)(N_KS, generator=_gen(4)).double()
    counts = [(t == v).sum().item() for v in values]
    assert sum(counts) == N_KS
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    # repeated values are drawn proportionally more often
    t = DiscreteTime([0.5, 1.0, 0.5])(N_KS, generator=_gen(5)).double()
    assert scipy.stats.chisquare([(t == 0.5).sum().item(), (t == 1.0).sum().item()],
                                 [2 * N_KS / 3, N_KS / 3]).pvalue > 1e-3


def test_discrete_time_cdf_and_shift() -> None:
    sampler = DiscreteTime([0.75, 0.25])
    cdf = sampler.cdf(np.array([0.0, 0.2, 0.25, 0.5, 0.8, 1.0]))
    np.testing.assert_allclose(cdf, [0, 0, 0.5, 0.5, 1, 1])
    quantile = sampler.quantile(torch.tensor([0.0, 0.49, 0.5, 1.0], dtype=F64))
    torch.testing.assert_close(quantile, torch.tensor([0.25, 0.25, 0.75, 0.75], dtype=F64))
    shifted = DiscreteTime([0.25, 0.75], shift=3.0)(1000, generator=_gen(6)).double()
    expected = {1 - sd3_shift(0.75, 3.0), 1 - sd3_shift(0.25, 3.0)}
    assert {round(v, 6) for v in shifted.tolist()} == {round(v, 6) for v in expected}


# --- the shift ---------------------------------------------------------------------------------


T_GRID = torch.linspace(0, 1, 101, dtype=F64)


def test_shift_one_is_the_identity() -> None:
    assert torch.equal(shift_time(T_GRID, 1.0), T_GRID)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 2.0, 3.0, 10.0])
def test_shift_is_sd3s_map_in_our_convention(alpha: float) -> None:
    theirs = 1 - sd3_shift(1 - T_GRID.numpy(), alpha)
    np.testing.assert_allclose(shift_time(T_GRID, alpha).numpy(), theirs, rtol=0, atol=1e-15)


def test_shift_matches_flux_time_shift() -> None:
    """Flux: time_shift(mu, 1, tau) = e^mu / (e^mu + (1/tau - 1)) is the shift alpha = e^mu."""
    mu = 1.15
    tau = np.linspace(0.01, 1, 100)
    flux = np.exp(mu) / (np.exp(mu) + (1 / tau - 1))
    ours_t = shift_time(torch.tensor(1 - tau), math.exp(mu)).numpy()
    np.testing.assert_allclose(ours_t, 1 - flux, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.3, 3.0])
def test_shift_scales_the_noise_to_signal_ratio(alpha: float) -> None:
    """The SD3 shift (Esser et al. 2024): noise/signal (1 - t)/t is multiplied by exactly alpha."""
    t = T_GRID[1:-1]
    s = shift_time(t, alpha)
    torch.testing.assert_close((1 - s) / s, alpha * (1 - t) / t, rtol=1e-13, atol=0)


@pytest.mark.parametrize("alpha", [0.3, 1.5, 3.0])
def test_shift_is_monotone_fixes_the_ends_and_inverts(alpha: float) -> None:
    s = shift_time(T_GRID, alpha)
    assert bool((s.diff() > 0).all())
    assert float(s[0]) == 0.0 and float(s[-1]) == 1.0
    torch.testing.assert_close(shift_time(s, 1 / alpha), T_GRID, rtol=0, atol=1e-15)


def test_shift_above_one_moves_mass_to_the_source() -> None:
    inner = T_GRID[1:-1]
    assert bool((shift_time(inner, 3.0) < inner).all())
    assert bool((shift_time(inner, 0.5) > inner).all())
    base, shifted = LogitNormalTime(), LogitNormalTime(shift=3.0)
    assert bool((shifted.cdf(inner) > base.cdf(inner)).all())          # stochastically earlier
    assert float(shifted(N_KS, generator=_gen(9)).mean()) < float(base(N_KS, generator=_gen(9)).mean()) - 0.1


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan, math.inf, True, "3"])
def test_shift_rejects_invalid_values(alpha: object) -> None:
    with pytest.raises(ValueError, match="shift must be"):
        shift_time(T_GRID, alpha)  # type: ignore[arg-type]


def test_samplers_build_from_a_yaml_mapping() -> None:
    """Registry.create passes YAML parameters as keywords, shift included."""
    registry: Registry[type] = Registry("time sampler", "flowsci.tests_no_such_group")
    for name, cls in (("logit_normal", LogitNormalTime), ("mode", ModeTime), ("discrete", DiscreteTime)):
        registry.register(name, cls)
    sampler = registry.create({"name": "logit_normal", "m": 0, "s": 1, "shift": 3.0}, "objective.timesteps")
    assert isinstance(sampler, LogitNormalTime) and sampler.shift == 3.0
    assert registry.create({"name": "discrete", "values": [0, 0.5]}, "x").values == [0.0, 0.5]
    assert registry.create("mode", "x").s == 1.29


# --- sampling time grids -------------------------------------------------------------------


def karras_sigmas(n: int, rho: float, sigma_min: float, sigma_max: float) -> np.ndarray:
    """Karras et al. (2022), eq. 5: sigma_i for i = 0 .. n-1 (n >= 2)."""
    i = np.arange(n)
    return (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


GRIDS = {
    "uniform": UniformGrid(),
    "shifted": ShiftedGrid(3.0),
    "shifted_fine_end": ShiftedGrid(0.25),
    "edm": EDMGrid(),
    "edm_rho3": EDMGrid(rho=3.0, sigma_min=0.01, sigma_max=20.0),
}


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 57])
def test_grid_endpoints_length_monotone(name: str, steps: int) -> None:
    grid = GRIDS[name](steps)
    assert grid.dtype == F64 and grid.shape == (steps + 1,)
    assert float(grid[0]) == 0.0 and float(grid[-1]) == 1.0
    assert bool((grid.diff() > 0).all())


@pytest.mark.parametrize("steps", [3, 4, 18, 40])
@pytest.mark.parametrize("rho, sigma_min, sigma_max", [(7.0, 0.002, 80.0), (3.0, 0.01, 20.0)])
def test_edm_grid_reproduces_karras_sigmas(steps: int, rho: float, sigma_min: float,
                                           sigma_max: float) -> None:
    grid = edm_grid(steps, rho, sigma_min, sigma_max).numpy()
    inner = grid[1:-1]
    sigmas = (1 - inner) / inner                 # rectified flow: sigma_EDM = (1 - t) / t
    np.testing.assert_allclose(sigmas, karras_sigmas(steps - 1, rho, sigma_min, sigma_max), rtol=1e-10)
    assert grid[0] == 0.0 and grid[-1] == 1.0


def test_edm_grid_small_step_counts() -> None:
    torch.testing.assert_close(edm_grid(1), torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(edm_grid(2), torch.tensor([0.0, 1 / 81, 1.0], dtype=F64))


def test_shifted_grid_is_sd3s_shifted_schedule() -> None:
    """SD3 samples at sigmas = shift(linspace(1, 0)) in its convention; ours is 1 - that."""
    steps, alpha = 8, 3.0
    theirs = 1 - sd3_shift(np.linspace(1, 0, steps + 1), alpha)
    np.testing.assert_allclose(shifted_grid(steps, alpha).numpy(), theirs, atol=1e-15)
    torch.testing.assert_close(shifted_grid(steps, 1.0), uniform_grid(steps))
    steps_sizes = shifted_grid(steps, alpha).diff()
    assert float(steps_sizes[0]) < 1 / steps < float(steps_sizes[-1])     # fine at the source


def test_uniform_grid_values_and_span() -> None:
    torch.testing.assert_close(uniform_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    torch.testing.assert_close(uniform_grid(2, 1.0, 0.0), torch.tensor([1.0, 0.5, 0.0], dtype=F64))


def test_reverse_grid() -> None:
    grid = edm_grid(6)
    back = reverse(grid)
    assert float(back[0]) == 1.0 and float(back[-1]) == 0.0 and bool((back.diff() < 0).all())
    torch.testing.assert_close(reverse(back), grid, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one-dimensional"):
        reverse(grid.reshape(1, -1))


@pytest.mark.parametrize("name", GRIDS)
def test_grids_drive_a_solver_both_ways(name: str) -> None:
    """A constant velocity is integrated exactly over the grid and back over its reverse."""
    grid = GRIDS[name](9)
    x0, a = torch.randn(4, 3, dtype=F64), torch.randn(3, dtype=F64)
    fwd = Euler().integrate(lambda x, t: a.expand_as(x), x0, grid)
    torch.testing.assert_close(fwd.x, x0 + a)
    back = Euler().integrate(lambda x, t: a.expand_as(x), fwd.x, reverse(grid))
    torch.testing.assert_close(back.x, x0)


@pytest.mark.parametrize("build, match", [
    (lambda: uniform_grid(0), "steps must be"),
    (lambda: uniform_grid(2.0), "steps must be"),     # type: ignore[arg-type]
    (lambda: edm_grid(True), "steps must be"),        # type: ignore[arg-type]
    (lambda: shifted_grid(4, 0.0), "shift must be"),
    (lambda: ShiftedGrid(-1.0), "shift must be"),
    (lambda: EDMGrid(rho=0.0), "rho must be"),
    (lambda: EDMGrid(sigma_min=0.0), "sigma_min"),
    (lambda: EDMGrid(sigma_min=5.0, sigma_max=1.0), "sigma_min < sigma_max"),
    (lambda: EDMGrid(sigma_max=math.inf), "sigma_max"),
    (lambda: EDMGrid()(0), "steps must be"),
])
def test_grid_parameter_validation(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
