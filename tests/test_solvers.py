"""Oracle tests of the ODE solvers (docs/design.md): closed-form solutions,
quadrature exactness, observed orders, round trips, stability polynomials and finite
differences."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.registry import SOLVERS
from flowsci.solvers import (
    RK4,
    Dopri5,
    Euler,
    FixedStepSolver,
    Heun,
    Midpoint,
    RFSolver2,
    Solver,
    VelocityFn,
    uniform_grid,
)

F64 = torch.float64
FIXED: list[type[FixedStepSolver]] = [Euler, Midpoint, Heun, RK4]  # RFSolver2 is Midpoint
ALL: list[type[Solver]] = [*FIXED, Dopri5]
# Highest degree of a polynomial right-hand side v(t) each method integrates exactly: the
# quadrature rule behind it (left rectangle, midpoint, trapezoid, Simpson).
EXACT_DEGREE = {Euler: 0, Midpoint: 1, Heun: 1, RK4: 3}
# Stability polynomial R(z), x_{n+1} = R(h lambda) x_n for dx/dt = lambda x: the Taylor series of
# e^z truncated at z^p, true of explicit Runge-Kutta methods with p = s <= 4 stages.
AMPLIFICATION = {
    Euler: lambda z: 1 + z,
    Midpoint: lambda z: 1 + z + z**2 / 2,
    Heun: lambda z: 1 + z + z**2 / 2,
    RK4: lambda z: 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24,
}


def _random_grid(n: int, seed: int, decreasing: bool = False) -> torch.Tensor:
    """n steps from 0 to 1 at sorted uniform times (flipped to 1 -> 0 when ``decreasing``)."""
    g = torch.Generator().manual_seed(seed)
    inner = torch.sort(torch.rand(n - 1, generator=g, dtype=F64)).values
    grid = torch.cat([torch.zeros(1, dtype=F64), inner, torch.ones(1, dtype=F64)])
    return grid.flip(0) if decreasing else grid


def _rotation_contraction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear, time-dependent field on (B, 2): rotation at rate 2 + t and a contraction
    -(1 + t) tanh(x) that grows at most linearly backwards in time."""
    rot = torch.stack([-x[:, 1], x[:, 0]], dim=1)
    return (2.0 + t[:, None]) * rot - (1.0 + t[:, None]) * torch.tanh(x)


def _counting(velocity):  # noqa: ANN001, ANN202 - a test helper
    calls = []

    def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == x.shape[:1] and t.dtype == x.dtype
        calls.append(float(t[0]))
        return velocity(x, t)

    return wrapped, calls


# --- exactness and order ----------------------------------------------------------------------


@pytest.mark.parametrize("solver_cls", ALL)
@pytest.mark.parametrize("grid", [uniform_grid(1), _random_grid(7, 0), _random_grid(5, 1, decreasing=True),
                                  torch.tensor([0.2, 0.25, 0.9], dtype=F64)],
                         ids=["1", "rand", "rev", "part"])
def test_constant_velocity_is_exact(solver_cls: type[Solver], grid: torch.Tensor) -> None:
    a = torch.tensor([[1.5, -2.0, 0.25], [0.0, 3.0, -0.5]], dtype=F64)
    x0 = torch.randn(4, 2, 3, dtype=F64)
    result = solver_cls().integrate(lambda x, t: a.expand_as(x), x0, grid)
    torch.testing.assert_close(result.x, x0 + float(grid[-1] - grid[0]) * a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver_cls", FIXED)
def test_three_t_squared_lands_on_x0_plus_one(solver_cls: type[FixedStepSolver]) -> None:
    """dx/dt = 3 t^2 from x0 reaches x0 + 1: exactly for RK4, otherwise with error ~ h^order."""
    x0 = torch.randn(3, 2, dtype=F64)
    field = lambda x, t: (3 * t**2)[:, None].expand_as(x)  # noqa: E731
    errors = [float((solver_cls().integrate(field, x0, uniform_grid(n)).x - (x0 + 1)).abs().max())
              for n in (8, 16)]
    if solver_cls is RK4:
        assert errors[0] < 1e-14
    else:
        assert math.log2(errors[0] / errors[1]) == pytest.approx(solver_cls.order, abs=0.2)


def test_dopri5_three_t_squared_and_exponential() -> None:
    """Adaptive solver: x0 + 1 for 3 t^2, and x0 e^{-1} for dx/dt = -x to 1e-6 (tolerances below
    the target); a tighter tolerance costs more evaluations."""
    x0 = torch.tensor([[1.0], [-2.0]], dtype=F64)
    cubic = Dopri5().integrate(lambda x, t: (3 * t**2)[:, None].expand_as(x), x0, uniform_grid(1))
    torch.testing.assert_close(cubic.x, x0 + 1, rtol=0, atol=1e-10)
    loose = Dopri5(rtol=1e-5, atol=1e-5).integrate(lambda x, t: -x, x0, uniform_grid(1))
    tight = Dopri5(rtol=1e-8, atol=1e-8).integrate(lambda x, t: -x, x0, uniform_grid(1))
    assert float((loose.x - x0 * math.exp(-1)).abs().max()) < 2e-5
    assert float((tight.x - x0 * math.exp(-1)).abs().max()) < 1e-6
    assert 6 <= loose.nfe < tight.nfe < 500, (loose.nfe, tight.nfe)


@pytest.mark.parametrize("solver_cls", FIXED)
@pytest.mark.parametrize("decreasing", [False, True])
def test_polynomial_in_time_exactness(solver_cls: type[FixedStepSolver], decreasing: bool) -> None:
    """v = c t^k integrates exactly up to the method's quadrature degree and not one degree more."""
    grid = _random_grid(5, 2, decreasing)
    c = torch.tensor([0.7, -1.3], dtype=F64)
    x0 = torch.randn(2, 2, dtype=F64)
    top = EXACT_DEGREE[solver_cls]
    for k in range(top + 2):
        result = solver_cls().integrate(lambda x, t, k=k: (t[:, None] ** k) * c, x0, grid)
        exact = x0 + c * (float(grid[-1]) ** (k + 1) - float(grid[0]) ** (k + 1)) / (k + 1)
        error = float((result.x - exact).abs().max())
        if k <= top:
            assert error < 1e-13, (k, error)
        else:
            assert error > 1e-4, (k, error)


@pytest.mark.parametrize("solver_cls", FIXED)
def test_observed_order_on_exponential_decay(solver_cls: type[FixedStepSolver]) -> None:
    """dx/dt = -x: halving h divides the error at t = 1 by 2^order (observed order within 0.2)."""
    x0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    exact = x0 * math.exp(-1.0)
    steps = (8, 16, 32) if solver_cls is RK4 else (16, 32, 64)
    errors = [float((solver_cls().integrate(lambda x, t: -x, x0, uniform_grid(n)).x - exact).abs().max())
              for n in steps]
    for coarse, fine in zip(errors, errors[1:]):
        assert math.log2(coarse / fine) == pytest.approx(solver_cls.order, abs=0.2), errors


def _rf_solver2_oracle(velocity: VelocityFn, x0: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
    """RF-Solver-2 as Wang et al. (ICML 2025) write it: the second-order Taylor step
    z + h v0 + (h^2/2) dv/dt with the finite difference dv/dt ~ (v_mid - v0)/(h/2),
    v0 = v(z, t), v_mid = v(z + (h/2) v0, t + h/2). Returns the states at the grid times."""
    states = [x0]
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        z, h = states[-1], t_next - t
        v0 = velocity(z, torch.full((len(z),), t, dtype=z.dtype))
        v_mid = velocity(z + 0.5 * h * v0, torch.full((len(z),), t + 0.5 * h, dtype=z.dtype))
        dv_dt = (v_mid - v0) / (0.5 * h)
        states.append(z + h * v0 + 0.5 * h * h * dv_dt)
    return states


def test_rf_solver2_is_registered_as_the_midpoint_method() -> None:
    assert RFSolver2 is Midpoint
    if "rf_solver2" in SOLVERS:
        assert type(SOLVERS.create("rf_solver2", "sample.solver")) is Midpoint


@pytest.mark.parametrize("decreasing", [False, True])
def test_rf_solver2_reproduces_the_taylor_update(decreasing: bool) -> None:
    """The registered rf_solver2 follows RF-Solver-2's Taylor form step by step: substituting
    dv/dt gives z + h v_mid, the midpoint step, so the two agree to rounding."""
    solver = SOLVERS.create("rf_solver2", "sample.solver") if "rf_solver2" in SOLVERS else RFSolver2()
    x0 = torch.randn(6, 2, dtype=F64)
    grid = _random_grid(9, 3, decreasing)
    rf = solver.integrate(_rotation_contraction, x0, grid, trajectory=True)
    oracle = torch.stack(_rf_solver2_oracle(_rotation_contraction, x0, grid))
    assert rf.trajectory is not None and rf.nfe == 2 * (len(grid) - 1)
    assert bool(torch.isfinite(rf.trajectory).all())
    torch.testing.assert_close(rf.trajectory, oracle, rtol=0, atol=1e-13)
    assert float((rf.x - x0).abs().max()) > 0.1


# --- reverse integration ---------------------------------------------------------------------


@pytest.mark.parametrize("solver_cls", FIXED)
def test_reverse_inverts_forward_nonlinear_field(solver_cls: type[FixedStepSolver]) -> None:
    """Forward 0 -> 1, then back 1 -> 0 on the reversed grid returns to x0. The round-trip error
    shrinks as h^p with p = order for odd orders and order + 1 for even ones: the leading local
    error term C h^{order+1} changes sign with h when order is even and cancels between the
    forward and the backward step."""
    x0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.2]], dtype=F64)
    errors = []
    for n in (32, 64):
        grid = uniform_grid(n)
        fwd = solver_cls().integrate(_rotation_contraction, x0, grid)
        assert float((fwd.x - x0).abs().max()) > 1.0  # the map moves the points
        back = solver_cls().integrate(_rotation_contraction, fwd.x, grid.flip(0))
        errors.append(float((back.x - x0).abs().max()))
    p = solver_cls.order + (solver_cls.order % 2 == 0)
    assert math.log2(errors[0] / errors[1]) == pytest.approx(p, abs=0.3), errors
    assert errors[1] < 50 * (1 / 64) ** p, errors


@pytest.mark.parametrize("steps", [4, 10, 50])
def test_euler_reverse_of_linear_in_t_field(steps: int) -> None:
    """v = a t + b with N uniform steps. Forward Euler sums a t_n h over the left ends, backward
    over the right ends, so the round trip misses x0 by exactly -a h (h = 1/N), which vanishes
    as the grid is refined. A sign error in the reverse step would miss by about 2b; evaluating
    at the other end of each step would flip the sign of both a h terms."""
    a = torch.tensor([2.0, -1.0], dtype=F64)
    b = torch.tensor([0.5, 3.0], dtype=F64)
    x0 = torch.randn(3, 2, dtype=F64)
    field = lambda x, t: t[:, None] * a + b  # noqa: E731
    grid, h = uniform_grid(steps), 1.0 / steps
    fwd = Euler().integrate(field, x0, grid)
    # forward: x0 + b + a h^2 N(N-1)/2 = x0 + b + a (1 - h)/2
    torch.testing.assert_close(fwd.x, x0 + b + a * (1 - h) / 2, rtol=1e-12, atol=1e-12)
    back = Euler().integrate(field, fwd.x, grid.flip(0))
    torch.testing.assert_close(back.x, x0 - a * h, rtol=1e-12, atol=1e-12)


def test_dopri5_reverse_is_not_a_no_op() -> None:
    """TEBM#154: an adaptive solver on a decreasing grid must integrate backwards, not return its
    input: dx/dt = -x from x(1) to x(0) = e x(1), and a forward/backward round trip."""
    x1 = torch.tensor([[1.0, -3.0]], dtype=F64)
    back = Dopri5(rtol=1e-8, atol=1e-8).integrate(lambda x, t: -x, x1, uniform_grid(1, 1.0, 0.0))
    torch.testing.assert_close(back.x, x1 * math.e, rtol=1e-6, atol=0)
    x0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=F64)
    fwd = Dopri5().integrate(_rotation_contraction, x0, uniform_grid(1))
    rev = Dopri5().integrate(_rotation_contraction, fwd.x, uniform_grid(1).flip(0))
    assert float((fwd.x - x0).abs().max()) > 1.0 and float((rev.x - fwd.x).abs().max()) > 1.0
    assert float((rev.x - x0).abs().max()) < 1e-3
    assert rev.nfe > 6


def test_dopri5_returns_states_at_grid_times() -> None:
    """dx/dt = -x on a decreasing grid: x(t) = x(1) e^{1-t} at every grid time."""
    x1 = torch.randn(3, 2, 2, dtype=F64)
    grid = torch.tensor([1.0, 0.8, 0.35, 0.0], dtype=F64)
    result = Dopri5(rtol=1e-9, atol=1e-9).integrate(lambda x, t: -x, x1, grid, trajectory=True)
    assert result.trajectory is not None and result.trajectory.shape == (4, 3, 2, 2)
    expected = torch.stack([x1 * math.exp(1 - float(t)) for t in grid])
    torch.testing.assert_close(result.trajectory, expected, rtol=1e-7, atol=1e-9)
    assert torch.equal(result.trajectory[-1], result.x)


# --- gradients through the solver ------------------------------------------------------------


@pytest.mark.parametrize("solver_cls", ALL)
@pytest.mark.parametrize("grid", [_random_grid(6, 4), _random_grid(6, 4, decreasing=True)],
                         ids=["fwd", "rev"])
def test_gradient_of_constant_velocity(solver_cls: type[Solver], grid: torch.Tensor) -> None:
    """v = a (a parameter): x1 = x0 + L a with L = t_end - t_start, so d <w, x1> / d a = L w."""
    a = torch.tensor([[0.5, -0.2], [1.0, 0.3]], dtype=F64, requires_grad=True)
    x0 = torch.randn(3, 2, 2, dtype=F64)
    w = torch.randn(3, 2, 2, dtype=F64)
    result = solver_cls().integrate(lambda x, t: a.expand_as(x), x0, grid, grad=True)
    (g,) = torch.autograd.grad((w * result.x).sum(), a)
    torch.testing.assert_close(g, float(grid[-1] - grid[0]) * w.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver_cls", FIXED)
@pytest.mark.parametrize("decreasing", [False, True])
def test_gradient_wrt_x0_is_the_amplification_factor(solver_cls: type[FixedStepSolver],
                                                     decreasing: bool) -> None:
    """dx/dt = -x: each step multiplies by R(-h), so d x_end / d x0 = prod_n R(-h_n)."""
    grid = _random_grid(7, 5, decreasing)
    x0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    result = solver_cls().integrate(lambda x, t: -x, x0, grid, grad=True)
    (g,) = torch.autograd.grad(result.x.sum(), x0)
    factor = math.prod(AMPLIFICATION[solver_cls](-h) for h in grid.diff().tolist())
    torch.testing.assert_close(g, torch.full_like(g, factor), rtol=1e-13, atol=0)


@pytest.mark.parametrize("solver_cls", FIXED)
def test_gradient_wrt_model_parameters_matches_finite_differences(solver_cls: type[FixedStepSolver]) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    field = lambda x, t: model(torch.cat([x, t[:, None]], dim=1))  # noqa: E731
    x0 = torch.randn(5, 2, dtype=F64)
    grid = _random_grid(4, 6)

    def loss() -> torch.Tensor:
        return (solver_cls().integrate(field, x0, grid, grad=True).x ** 2).sum()

    weight = model[0].weight
    (g,) = torch.autograd.grad(loss(), weight)
    eps = 1e-6
    for idx in [(0, 0), (3, 1), (7, 2)]:
        with torch.no_grad():
            weight[idx] += eps
            up = float(loss())
            weight[idx] -= 2 * eps
            down = float(loss())
            weight[idx] += eps
        assert float(g[idx]) == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("solver_cls", ALL)
def test_grad_false_yields_no_graph(solver_cls: type[Solver]) -> None:
    a = torch.tensor([0.5, -0.2], requires_grad=True)
    x0 = torch.randn(3, 2, requires_grad=True)
    result = solver_cls().integrate(lambda x, t: a * x, x0, uniform_grid(4), trajectory=True)
    assert result.trajectory is not None
    assert result.x.grad_fn is None and not result.x.requires_grad
    assert not result.trajectory[1:].requires_grad
    with pytest.raises(RuntimeError):
        torch.autograd.grad(result.x.sum(), a)
    with torch.no_grad():  # the caller's no_grad wins over grad=True
        assert not solver_cls().integrate(lambda x, t: a * x, x0, uniform_grid(4), grad=True).x.requires_grad


# --- NFE, trajectories, grids, construction --------------------------------------------------


@pytest.mark.parametrize("solver_cls", FIXED)
@pytest.mark.parametrize("steps", [1, 5, 16])
def test_nfe_and_trajectory_shape(solver_cls: type[FixedStepSolver], steps: int) -> None:
    x0 = torch.randn(4, 2, 3)
    for grid in (uniform_grid(steps), uniform_grid(steps, 1.0, 0.0)):
        field, calls = _counting(lambda x, t: torch.sin(x) * t.view(-1, 1, 1))
        result = solver_cls().integrate(field, x0, grid, trajectory=True)
        assert result.nfe == len(calls) == steps * solver_cls.nfe_per_step
        assert all(min(grid) <= t <= max(grid) for t in calls)
        assert result.trajectory is not None and result.trajectory.shape == (steps + 1, 4, 2, 3)
        assert torch.equal(result.trajectory[0], x0) and torch.equal(result.trajectory[-1], result.x)
        torch.testing.assert_close(result.times, grid)
        assert solver_cls().integrate(field, x0, grid).trajectory is None


def test_euler_passes_the_left_grid_times_to_the_velocity() -> None:
    seen: list[torch.Tensor] = []

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return torch.zeros_like(x)

    grid = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F64)
    Euler().integrate(field, torch.zeros(3, 2, dtype=F64), grid)
    assert len(seen) == 3
    for t, expected in zip(seen, [0.0, 0.1, 0.5]):
        torch.testing.assert_close(t, torch.full((3,), expected, dtype=F64), rtol=0, atol=0)


def test_dopri5_nfe_counts_every_evaluation() -> None:
    field, calls = _counting(_rotation_contraction)
    result = Dopri5().integrate(field, torch.randn(3, 2, dtype=F64), uniform_grid(2), trajectory=True)
    assert result.nfe == len(calls) > 0
    assert result.trajectory is not None and result.trajectory.shape == (3, 3, 2)


@pytest.mark.parametrize("solver_cls", ALL)
@pytest.mark.parametrize("grid", [[0.0, 0.5, 0.3, 1.0], [0.0, 0.5, 0.5, 1.0], [0.0], [], [1.0, 0.2, 0.4],
                                  [0.0, float("nan"), 1.0], [[0.0, 1.0]]])
def test_invalid_grids_raise(solver_cls: type[Solver], grid: list) -> None:
    with pytest.raises(ValueError, match="times"):
        solver_cls().integrate(lambda x, t: x, torch.zeros(2, 2), torch.tensor(grid, dtype=F64))


@pytest.mark.parametrize("kwargs", [{"rtol": 0.0}, {"atol": -1e-5}])
def test_dopri5_rejects_bad_tolerances(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Dopri5(**kwargs)


@pytest.mark.parametrize("name, cls", [("euler", Euler), ("midpoint", Midpoint), ("heun", Heun),
                                       ("rk4", RK4), ("rf_solver2", RFSolver2), ("dopri5", Dopri5)])
def test_registered_names(name: str, cls: type[Solver]) -> None:
    if name not in SOLVERS:
        pytest.skip(f"entry point '{name}' not installed (pyproject.toml flowsci.solvers)")
    spec = {"name": name, "rtol": 1e-6, "atol": 1e-7} if cls is Dopri5 else name
    solver = SOLVERS.create(spec, "sample.solver")
    assert type(solver) is cls
